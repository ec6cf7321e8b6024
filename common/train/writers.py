"""Metric writers: clu's TensorBoard + console writers, plus `WORKDIR/metrics.jsonl`.

Every scalar logged goes to `metrics.jsonl`, one JSON object per line: `{"step": 12, "train/loss": 0.3, ...}`.
Importing this module imports TensorFlow (clu's writers need it); only the training loop imports it, and TF is
kept off any GPU.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402  (clu's summary writer; hidden from GPUs below)

tf.config.set_visible_devices([], "GPU")

from clu import metric_writers  # noqa: E402
from clu.metric_writers import interface  # noqa: E402


class JsonlWriter(interface.MetricWriter):
  """Appends scalars to a JSON-lines file; other summary kinds are not written there."""

  def __init__(self, path: str):
    self.path = path
    self._file = open(path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    record = {"step": int(step)}
    record.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()

  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_images(self, step, images):
    del step, images

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_texts(self, step, texts):
    del step, texts

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def write_hparams(self, hparams):
    del hparams

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def truncate_jsonl(path: str, last_step: int) -> int:
  """Drops lines logged after `last_step` (a killed run's steps past its last checkpoint). Returns #dropped."""
  if not os.path.exists(path):
    return 0
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= last_step:
        keep.append(line)
    except (json.JSONDecodeError, KeyError):
      pass  # a line cut short by the kill: dropped with the rest of the unsaved steps
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.writelines(keep)
  os.replace(path + ".tmp", path)
  return len(lines) - len(keep)


def create_writer(workdir: str) -> metric_writers.MetricWriter:
  """Process 0: console + TensorBoard (`WORKDIR/tensorboard`) + metrics.jsonl; other processes: console only."""
  if jax.process_index() > 0:
    return metric_writers.create_default_writer(None, just_logging=True, asynchronous=False)
  tb = metric_writers.create_default_writer(os.path.join(workdir, "tensorboard"), asynchronous=False)
  return metric_writers.MultiWriter([tb, JsonlWriter(os.path.join(workdir, "metrics.jsonl"))])


def report_progress(total_steps: int, writer: metric_writers.MetricWriter, every_steps: int):
  """clu's ReportProgress hook (steps/s, ETA, time shares of `timed(...)` sections)."""
  from clu import periodic_actions
  return periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer, every_steps=every_steps,
                                         every_secs=None)
