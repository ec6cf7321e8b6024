"""Preemption is a run-level event: SIGTERM in any stage of a two-stage run saves and ends the whole run (exit 0);
a stage starts only from a complete stage, and the reruns end bit-identical to an uninterrupted run."""
import os
import signal
import subprocess

import numpy as np
import pytest

from common.train import config as config_lib
from common.train import errors, loop
from tests.test_engine import REPO, _logged_steps, _tail, _wait_for, cli, config, saved_params, spawn

STEPS = ["--config.total_steps=12", "--config.step_delay=0.02"]


def two_stage(**overrides):
  return config("two_stage", total_steps=12, **overrides)


def _complete(stage_dir):
  return os.path.isfile(os.path.join(stage_dir, "complete.json"))


@pytest.mark.slow
def test_sigterm_in_either_stage_ends_the_run_and_reruns_finish_it_exactly(tmp_path):
  reference = str(tmp_path / "reference")
  loop.run(two_stage(), reference)
  workdir = str(tmp_path / "preempted")
  stage1, stage2 = os.path.join(workdir, "stage1"), os.path.join(workdir, "stage2")
  command = cli(workdir, *STEPS, config_file="tests/toy_task.py:two_stage")

  proc = spawn(command, tmp_path / "first.log")  # SIGTERM in stage 1
  _wait_for(lambda: _logged_steps(stage1) >= 6, proc)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0, _tail(proc)
  assert "preempted at step" in _tail(proc)
  assert not os.path.exists(stage2) and not _complete(stage1)
  _, stage2_config, _ = config_lib.stage_configs(two_stage(), workdir)[1]
  with pytest.raises(errors.RunError, match="init_from .*stage1: that run is not complete \\(its latest "
                                                  "checkpoint is step \\d+, and no complete.json"):
    loop.train_and_evaluate(stage2_config, str(tmp_path / "stage2_alone"))

  proc = spawn(command, tmp_path / "second.log")  # the rerun finishes stage 1; SIGTERM in stage 2
  _wait_for(lambda: _logged_steps(stage2) >= 6, proc)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0, _tail(proc)
  assert _complete(stage1) and not _complete(stage2)

  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert _complete(stage2)
  for stage in ("stage1", "stage2"):
    ours, theirs = saved_params(os.path.join(workdir, stage)), saved_params(os.path.join(reference, stage))
    assert ours.keys() == theirs.keys()
    for k in theirs:
      np.testing.assert_array_equal(ours[k], theirs[k], err_msg=f"{stage} {k}")
