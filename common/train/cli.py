"""The command line every method's `main` uses:

  python -m <method>_jax.main --config=configs/<method>.py:<variant> --workdir=DIR [--config.key=value ...]

Rerunning the same command resumes from WORKDIR's newest readable checkpoint. SIGTERM (preemption) saves the
current step and exits 0, whatever stage is running. Errors follow `tool.run_tool`'s contract: one message and
exit 1, the traceback in WORKDIR/logs/.
"""
from __future__ import annotations

import logging
import os

from absl import app, flags
from ml_collections import config_flags

from common.train import distributed, tool

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<method>.py:<variant>", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.jsonl, TensorBoard logs.")
flags.mark_flags_as_required(["config", "workdir"])


def _main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed.maybe_initialize()
  from common.train import loop
  metrics = loop.run(_CONFIG.value, _WORKDIR.value)
  logging.info("final eval: %s", metrics)


def run() -> None:
  """Entry point for `python -m <method>_jax.main`."""
  tool.run_tool(_main, lambda: os.path.join(_WORKDIR.value, "logs") if _WORKDIR.value else None)


if __name__ == "__main__":  # `python -m common.train.cli --config=... --workdir=...` runs any config's task
  run()
