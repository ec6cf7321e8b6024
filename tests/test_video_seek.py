"""Random access into videos (`media.read_video_frames`): a read seeks to its frames where the container lands a
seek exactly, so it decodes its own frames rather than a prefix of the video, and falls back to decoding (with one
log line) where the container does not."""
import cv2
import numpy as np
import pytest

from common.data.readers import media

FRAMES = 600


@pytest.fixture(scope="module")
def video(tmp_path_factory):
  """An MPEG-4 video whose frames differ everywhere (a keyframe every 12 frames, FFmpeg's default), long enough
  for gaps beyond `media.SEEK_MIN_GAP`, and the frames a full sequential decode returns."""
  path = str(tmp_path_factory.mktemp("seek") / "clip.mp4")
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 25, (32, 24))
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
  for i in range(FRAMES):
    frame = np.roll(base, 3 * i, axis=1)
    cv2.putText(frame, str(i), (1, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    writer.write(frame)
  writer.release()
  capture, decoded = cv2.VideoCapture(path), []
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    decoded.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
  assert len(decoded) == FRAMES
  return path, np.stack(decoded)


class CountingCapture:
  """A cv2.VideoCapture that counts its grabs (each decodes a frame) and can refuse to seek."""

  def __init__(self, path, seeks: bool):
    self.capture, self.seeks, self.grabs = cv2.VideoCapture(path, cv2.CAP_FFMPEG), seeks, 0

  def grab(self):
    self.grabs += 1
    return self.capture.grab()

  def set(self, prop, value):
    return self.capture.set(prop, value) if self.seeks else False

  def __getattr__(self, name):
    return getattr(self.capture, name)


@pytest.fixture
def captures(monkeypatch):
  opened = []

  def open_capture(path, seeks=True):
    opened.append(CountingCapture(path, seeks))
    return opened[-1]

  monkeypatch.setattr(media, "_local", type(media._local)())  # no capture left open by another test
  monkeypatch.setattr(media, "_inexact_seek", set())
  return opened, open_capture


def test_random_reads_return_the_exact_frames_and_decode_only_their_own(video, captures, monkeypatch):
  path, decoded = video
  opened, open_capture = captures
  monkeypatch.setattr(media, "_open_capture", open_capture)
  for indices in ([520], [5], [300, 301], [599, 0], [30], [30, 31, 44], [100]):
    np.testing.assert_array_equal(media.read_video_frames(path, indices), decoded[indices], err_msg=str(indices))
  (capture,) = opened  # one capture, kept open, moved by seeks
  # one grab per returned frame, plus the frames decoded over forward gaps up to SEEK_MIN_GAP (250) rather than
  # sought: 12 from frame 32 to 44 and 55 from 45 to 100
  assert capture.grabs == 1 + 1 + 2 + 2 + 1 + (1 + 1 + 13) + (55 + 1)
  assert not media._inexact_seek


def test_a_container_that_does_not_seek_exactly_is_decoded_and_named_once(video, captures, monkeypatch):
  path, decoded = video
  opened, open_capture = captures
  monkeypatch.setattr(media, "_open_capture", lambda p: open_capture(p, seeks=False))
  warnings = []
  monkeypatch.setattr(media.logging, "warning", lambda *args: warnings.append(args))
  np.testing.assert_array_equal(media.read_video_frames(path, [300]), decoded[[300]])
  np.testing.assert_array_equal(media.read_video_frames(path, [20, 80]), decoded[[20, 80]])
  assert media._inexact_seek == {path}
  assert len(warnings) == 1 and warnings[0][1] == path and "ArrayRecord" in warnings[0][0]
  # the failed seek reopens the video, which decodes 301 frames for frame 300; frame 20 lies behind: a fresh
  # capture decodes 21, and 60 more reach frame 80
  assert [c.grabs for c in opened] == [0, 301, 81]


def test_reading_past_the_end_names_the_video(video, captures):
  path, _ = video
  with pytest.raises(media.DataError, match=r"clip\.mp4: truncated or corrupt video: frame \d+ cannot be decoded"):
    media.read_video_frames(path, [FRAMES + 5])
