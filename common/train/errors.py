"""The engine's exceptions that end a run with a message for people (see `tool.run_tool`)."""
from __future__ import annotations


class RunError(RuntimeError):
  """A run directory cannot be used as asked (held by another process, config changed, incomplete source stage,
  no restorable checkpoint). The message says what to do."""


class CheckpointError(RunError):
  """A checkpoint could not be written; the message names the step and the path."""


class Preempted(Exception):
  """SIGTERM or a preemption notice arrived; the state at `step` is saved and the run (every stage) ends."""

  def __init__(self, workdir: str, step: int):
    super().__init__(f"{workdir}: preempted at step {step}, which is saved; rerun the same command to resume")
    self.workdir, self.step = workdir, step
