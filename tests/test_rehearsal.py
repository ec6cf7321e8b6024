"""A pod rehearsal on CPU: two `jax.distributed` processes x 2 devices train ViLocal's smoke config from prepared
ArrayRecord shards, are killed after a checkpoint, resume, and end where one process on 4 devices reading the
folder layout ends. One process reading the shards ends there to the bit, final metrics included."""
import os
import signal
import socket
import sys

import numpy as np
import pytest

from common.data import demo, prepare
from common.train import loop
from configs import vilocal as vilocal_configs
from tests.test_engine import _checkpoints, _logged_steps, _tail, _wait_for, losses, saved_params, spawn

# Stage 2 (focal loss; the encoder frozen, from its initialisation) with dropout off: no random draw after the
# (replicated) initialisation, whose 'rbg' bits therefore match across process layouts. (Stage 1's pixel sampling
# and dropout draw sharded bits, which 'rbg' ties to the layout; threefry keys would compile several times longer.)
OVERRIDES = {"run_stages": "stage2", "stages.stage2.init_from_stage": "", "checkpoint_every": 2,
             "stages.stage2.total_steps": 6, "model.drop_rate": 0.0, "model.attn_drop_rate": 0.0,
             "model.drop_path_rate": 0.0}


def smoke(root: str):
  c = vilocal_configs.get_config("smoke")
  c.data.root = root
  c.update_from_flattened_dict(OVERRIDES)
  return c


@pytest.mark.slow  # 1-2 min on 2 quiet cores: one in-process run and two two-process runs, each compiling the model
def test_two_processes_from_shards_killed_and_resumed_match_one_process_from_folders(tmp_path):
  corpus = str(tmp_path / "corpus")
  demo.build(corpus, seed=0, scale="tiny")
  shards = str(tmp_path / "prepared")
  prepare.prepare("video_inpainting", os.path.join(corpus, "video_inpainting"), shards)
  single = str(tmp_path / "single")
  folder_metrics = loop.run(smoke(os.path.join(corpus, "video_inpainting")), single)
  from_shards = smoke("")
  from_shards.data.update(dict(format="arrayrecord", prepared_dir=shards))
  shard_metrics = loop.run(from_shards, str(tmp_path / "single_from_shards"))  # the same programs: cached compiles
  assert folder_metrics
  np.testing.assert_equal(shard_metrics, folder_metrics)  # NaN (an empty mask-ratio bin) equals NaN here
  assert losses(str(tmp_path / "single_from_shards" / "stage2")) == losses(os.path.join(single, "stage2"))

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  multi = str(tmp_path / "multi")
  args = [sys.executable, "-m", "vilocal_jax.main", "--config=configs/vilocal.py:smoke", f"--workdir={multi}",
          "--config.data.format=arrayrecord", f"--config.data.prepared_dir={shards}", "--config.block_every_step=True",
          *(f"--config.{k}={v}" for k, v in OVERRIDES.items())]

  def start(attempt: str):
    procs = []
    for i in range(2):
      env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                 JAX_PROCESS_ID=str(i), JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
                 # The resumed processes load what the killed ones compiled (as a restarted pod job would).
                 JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
      procs.append(spawn(args, tmp_path / f"{attempt}{i}.log", env=env))
    return procs

  stage = os.path.join(multi, "stage2")
  procs = start("killed")
  _wait_for(lambda: _checkpoints(stage) and _checkpoints(stage)[-1] >= 2 and _logged_steps(stage) >= 3, procs[0],
            timeout=600)
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.wait()
  assert _logged_steps(stage) < 6
  procs = start("resumed")
  for p in procs:
    assert p.wait(timeout=600) == 0, _tail(p)
  assert "resumed from" in _tail(procs[0], 100_000)
  assert sorted(losses(stage)) == list(range(1, 7))
  # Every loss, before and after the kill, within float32 reduction-order noise of the one-process run's.
  assert losses(stage) == pytest.approx(losses(os.path.join(single, "stage2")), rel=1e-5)
  # Parameters over the whole model: Adam moves a parameter whose gradient is ~0 by ~lr whatever the sign of that
  # noise, so a per-tensor comparison of near-zero biases would measure the optimizer, not the run.
  multi_params, single_params = saved_params(stage), saved_params(os.path.join(single, "stage2"))
  diff = sum(np.sum((np.asarray(multi_params[k], np.float64) - single_params[k]) ** 2) for k in single_params)
  assert np.sqrt(diff / sum(np.sum(np.asarray(v, np.float64) ** 2) for v in single_params.values())) < 1e-3
