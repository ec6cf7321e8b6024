"""The command line every method's `main` uses, and the error contract of every command-line tool:

  python -m <method>_jax.main --config=configs/<method>.py:<variant> --workdir=DIR [--config.key=value ...]

Rerunning the same command resumes from WORKDIR's newest readable checkpoint. SIGTERM (preemption) saves the
current step and exits 0, whatever stage is running. A problem the user can act on (a bad file, a held or
changed run directory, a failed save, a non-finite loss, a bad config value) is printed as one clear message
and the command exits 1; its traceback goes to the log file the message names (WORKDIR/logs/ when the tool has
a run directory, else the system's temporary folder).
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import traceback
from typing import Callable

from absl import app, flags
from ml_collections import config_flags

from common.train import distributed


def _user_errors() -> tuple[type[BaseException], ...]:
  from common.data.readers.media import DataError
  from common.train.workdir_lock import RunError
  return (DataError, RunError, FloatingPointError, FileNotFoundError, FileExistsError, ValueError)


def _log_file(log_dir: str | None, tool: str) -> str:
  folder = log_dir or tempfile.gettempdir()
  os.makedirs(folder, exist_ok=True)
  return os.path.join(folder, f"{tool}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")


def run_tool(main: Callable[[list[str]], None], log_dir: Callable[[], str | None] = lambda: None) -> None:
  """`absl.app.run(main)` with the suite's error contract: a user-facing error is one message on stderr and
  exit status 1, its traceback written to a log file in `log_dir()` (named in the message)."""
  tool = os.path.basename(sys.argv[0]).removesuffix(".py") if sys.argv and sys.argv[0] else "tool"

  def guarded(argv):
    try:
      main(argv)
    except _user_errors() as e:
      path = _log_file(log_dir(), tool if tool not in ("__main__", "-c") else "error")
      with open(path, "a", encoding="utf-8") as f:
        f.write("".join(traceback.format_exception(e)))
      print(f"error: {e}\n(traceback: {path})", file=sys.stderr)
      sys.exit(1)

  app.run(guarded)


_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<method>.py:<variant>", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics.jsonl, TensorBoard logs.")
flags.mark_flags_as_required(["config", "workdir"])


def _main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed.maybe_initialize()
  from common.train import loop
  try:
    metrics = loop.run(_CONFIG.value, _WORKDIR.value)
  except loop.Preempted as e:
    logging.warning("%s", e)
    return
  logging.info("final eval: %s", metrics)


def run() -> None:
  """Entry point for `python -m <method>_jax.main`."""
  run_tool(_main, lambda: os.path.join(_WORKDIR.value, "logs") if _WORKDIR.value else None)


if __name__ == "__main__":  # `python -m common.train.cli --config=... --workdir=...` runs any config's task
  run()
