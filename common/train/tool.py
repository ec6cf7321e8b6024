"""How every command-line tool of the suite runs: `absl.app.run` plus the error contract.

A problem the user can act on (a bad file, a held or changed run directory, a failed save, a non-finite loss, a
bad config value, a missing input) is printed as one message, `error: <file or key>: <what is wrong>`, and the
command exits 1; its traceback goes to a log file that the message names (in the tool's run directory when it has
one, else in the system's temporary folder). A preempted run (saved) exits 0. Anything else is a bug and keeps
Python's traceback.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from typing import Callable

from absl import app, logging

from common.train import errors


def user_errors() -> tuple[type[BaseException], ...]:
  from common.data.readers.media import DataError
  return (DataError, errors.RunError, FloatingPointError, FileNotFoundError, FileExistsError, ValueError)


def _log_path(log_dir: str | None) -> str:
  """A new log file in `log_dir` if its parent (the run directory) exists, else in the temporary folder."""
  folder = log_dir if log_dir and os.path.isdir(os.path.dirname(log_dir)) else tempfile.gettempdir()
  os.makedirs(folder, exist_ok=True)
  tool = os.path.basename(sys.argv[0]).removesuffix(".py") if sys.argv and sys.argv[0] not in ("", "-c") else "tool"
  return os.path.join(folder, f"{tool}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")


def run_tool(main: Callable[[list[str]], None], log_dir: Callable[[], str | None] = lambda: None) -> None:
  """`absl.app.run(main)` under the error contract; `log_dir()` (called after flag parsing) is where the
  traceback of a user-facing error goes."""

  def guarded(argv):
    try:
      main(argv)
    except errors.Preempted as e:  # saved: a scheduler's restart of the same command resumes
      logging.warning("%s", e)
      sys.exit(0)
    except user_errors() as e:
      path = _log_path(log_dir())
      with open(path, "a", encoding="utf-8") as f:
        f.write("".join(traceback.format_exception(e)))
      print(f"error: {e}\n(traceback: {path})", file=sys.stderr)
      sys.exit(1)

  app.run(guarded)
