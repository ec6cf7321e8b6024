"""Benchmarks: the train-step harness's profile (HLO instructions map to their JAX op names, and a traced step's
time is attributed to the operations that spend it); the FF++-shaped set; the input-pipeline benchmark over folders
and prepared shards."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import ffpp_shaped, input_pipeline, train_step
from common.data import demo
from common.data.readers.media import probe_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _step(state, batch):
  """A toy train step: one convolution whose weight takes a gradient step; (state, metrics) like a task's."""
  def loss(w):
    y = jax.lax.conv_general_dilated(batch, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.mean(jnp.tanh(y) ** 2)
  value, grad = jax.value_and_grad(loss)(state)
  return state - 0.1 * grad, {"loss": value}


def test_profile_attributes_step_time_to_jax_ops():
  state = jnp.full((3, 3, 16, 16), 0.01, jnp.float32)
  batch = jnp.asarray(np.random.default_rng(0).standard_normal((4, 32, 32, 16)), jnp.float32)
  compiled = jax.jit(_step).lower(state, batch).compile()
  names = train_step.op_names(compiled.as_text())
  assert any(op.endswith("conv_general_dilated") for op in names.values())
  state, profile = train_step.profile_ops(compiled, state, batch, top=3)
  primitives = profile["by_primitive"]
  assert len(primitives) == 3 and primitives[0]["ms_per_step"] >= primitives[-1]["ms_per_step"] > 0
  assert "conv_general_dilated" in [row["op"] for row in primitives]  # the forward and both backward convs
  assert 0 < sum(row["share"] for row in profile["by_op"]) <= 1 + 1e-9
  assert state.shape == (3, 3, 16, 16)


# ------------------------------------------------------------------------------------------ input pipeline
@pytest.fixture(scope="module")
def ffpp_set(tmp_path_factory):
  """A tiny FF++-shaped set (2 real videos, 2 methods) from the tiny demo corpus, and that corpus."""
  corpus = str(tmp_path_factory.mktemp("corpus") / "demo")
  demo.build(corpus, seed=0, scale="tiny")
  out = str(tmp_path_factory.mktemp("ffpp") / "ffpp_shaped")
  manifest = ffpp_shaped.build(out, demo_dir=corpus, videos=2, frames=8, width=192, height=108)
  return out, corpus, manifest


def test_ffpp_shaped_set_is_h264_at_the_asked_size_with_mapped_boxes_and_masks(ffpp_set):
  out, corpus, manifest = ffpp_set
  assert manifest["videos"] == {"real": 2, "fake": 4, "mask": 4} and manifest["mask_pixel_error_max"] <= 0.01
  real = os.path.join(out, "original_sequences", "youtube", "c23", "videos", "000.mp4")
  assert tuple(probe_video(real, "header")) == (8, 108, 192)
  with open(real, "rb") as f:
    assert b"avc1" in f.read(4096)  # H.264 in an mp4 container
  with open(os.path.join(corpus, "faces", "face_boxes.json")) as f:
    src = json.load(f)
  with open(os.path.join(out, "face_boxes.json")) as f:
    boxes = json.load(f)
  with open(os.path.join(corpus, "faces", "splits", "train.json")) as f:
    first_src = json.load(f)[0][0]  # demo video of output id 000
  p = manifest["placement"]
  n = len(src[first_src])  # frame 7 of the ping-pong (0 1 2 1 0 1 2 1) is demo frame 1
  assert n == 3 and ffpp_shaped.pingpong(7, n) == 1
  expected = [src[first_src]["1"][k] * p["scale"] + (p["left"] if k % 2 == 0 else p["top"]) for k in range(4)]
  assert boxes["000"]["7"] == pytest.approx(expected, abs=0.01)
  summary = ffpp_shaped.check(out, manifest["methods"])  # the folder reader indexes it; first fake has a mask
  assert summary["records"] == 2 * 4 * 8  # 4 fakes x 8 frames, each with its real twin


def test_input_pipeline_benchmark_times_the_paper_pipeline_from_folders_and_prepared_shards(ffpp_set, tmp_path,
                                                                                            monkeypatch):
  out, _, _ = ffpp_set
  monkeypatch.setenv("JAX_FORENSICS_CACHE", str(tmp_path / "cache"))  # the folder reader's index cache
  kw = dict(data_root=out, batch_size=2, batches=2, repeats=1, warmup=1, breakdown_records=2,
            work_dir=str(tmp_path), sets=("data.size=64", "data.frames_per_video=2"))
  lines = {f: input_pipeline.run("msccnet", "paper", data_format=f, **kw) for f in ("folder", "arrayrecord")}
  for line in lines.values():
    assert line["input"]["image"] == [2, 64, 64, 3] and line["input"]["mask"] == [2, 64, 64]
    assert line["examples_per_s"] > 0 and line["examples_per_core_s"] > 0
    assert line["breakdown"]["read_ms"] > 0 and "1:RandomCrop" in line["breakdown"]["transforms_ms"]
  assert lines["folder"]["records"] == lines["arrayrecord"]["records"] == 2 * 4 * 2
  assert lines["arrayrecord"]["prepare"]["records"] > 0
  again = input_pipeline.run("msccnet", "paper", data_format="arrayrecord", **{**kw, "breakdown_records": 0})
  assert again["prepared_dir"] == lines["arrayrecord"]["prepared_dir"] and "prepare" not in again  # reused


def test_input_pipeline_benchmark_bad_flag_is_one_error_line():
  result = subprocess.run([sys.executable, "-m", "benchmarks.input_pipeline", "--method", "msccnet", "--batches",
                           "0"], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == "error: --batches and --repeats must be >= 1, got 0 and 3"
