"""Delocate's premise on the demo corpus: after the demo's stage 1 (the MAE trained on real faces only), the
recovery error on the manipulated pixels of FaceSwap fakes is larger than on the same pixels of their real crops.

This is the demo config's whole stage 1 (4000 steps, about 7 minutes on 2 cores); measured on 2026-11-23 the ratio
was 1.03 / 1.03 / 1.07 / 1.08 at steps 1000-4000 (0.93 after a 1000-step schedule, which is why the demo trains
4000). The unseen NeuralTextures stand-in (mouth or eyes of the same person) stays below 1 (0.93 on corpus v3): its
swapped parts are real parts of that face, which the MAE recovers as well as the originals.
"""
import os

import numpy as np
import pytest

from common.train import loop
from configs import delocate as delocate_configs
from tests.test_engine import losses

pytestmark = pytest.mark.slow


def test_recovery_error_is_larger_on_manipulated_pixels_after_the_demo_stage_one(tmp_path):
  c = delocate_configs.get_config("demo")
  c.run_stages = "stage1"
  steps = c.stages.stage1.total_steps
  c.stages.stage1.update(dict(eval_every=steps, checkpoint_every=steps, log_every=steps // 4))
  loop.run(c, str(tmp_path))
  workdir = os.path.join(str(tmp_path), "stage1")
  fake = losses(workdir, "eval/recovery_error_fake_region")[steps]
  real = losses(workdir, "eval/recovery_error_real_region")[steps]
  ratio = losses(workdir, "eval/recovery_ratio")[steps]
  assert np.isfinite(fake) and np.isfinite(real) and real > 0
  assert ratio == pytest.approx(fake / real, rel=1e-4)
  assert ratio > 1.0, (fake, real)
