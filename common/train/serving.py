"""A trained model as a plain function for inference: from an export directory or from a run's checkpoint.

Both give a `Served(fn, inputs, outputs, source, normalisation)`: `fn({name: batch array}) -> {name: array}`, and
the input / output specs and input normalisation text of the task's `export_spec()` (the export's manifest), which
a method's `predict.py` checks.
"""
from __future__ import annotations

from collections.abc import Callable
import dataclasses
import json
import os

import jax


@dataclasses.dataclass(frozen=True)
class Served:
  fn: Callable[[dict], dict]
  inputs: dict   # {name: {"shape": [...] without batch, "dtype": ...}}
  outputs: dict  # {name: description}
  source: str    # the directory it came from (for error messages)
  normalisation: str = ""  # how inputs are scaled, in words (export_spec's `normalisation`)


def load_export(export_dir: str) -> Served:
  """The function of an export written by `common.train.export` (needs only jax and numpy)."""
  from common.train import export

  manifest_path = os.path.join(export_dir, "manifest.json")
  if not os.path.isfile(manifest_path):
    raise FileNotFoundError(f"{export_dir}: no manifest.json (not an export directory)")
  with open(manifest_path, encoding="utf-8") as f:
    manifest = json.load(f)
  return Served(export.load(export_dir), manifest["inputs"], manifest["outputs"], export_dir,
                manifest.get("normalisation", ""))


def load_workdir(workdir: str, step: int | None = None) -> Served:
  """The task's `predict` on a run's checkpoint (default: the newest readable), on one local device."""
  from common.train import checkpoint as ckpt_lib

  with ckpt_lib.Run(workdir) as run_dir:
    task, state, _ = run_dir.load(step)
  apply = jax.jit(lambda state, inputs: task.predict(task.models(state), inputs))
  spec = task.export_spec()
  return Served(lambda inputs: apply(state, inputs), spec["inputs"], spec["outputs"], workdir,
                spec.get("normalisation", ""))


def load(export_dir: str = "", workdir: str = "", step: int | None = None) -> Served:
  """`load_export(export_dir)` or `load_workdir(workdir, step)`: exactly one of the two must be given (the
  `--export` / `--workdir` flags of every `predict.py`)."""
  if bool(export_dir) == bool(workdir):
    raise ValueError(f"give exactly one of --export and --workdir (got export={export_dir!r}, workdir={workdir!r})")
  return load_export(export_dir) if export_dir else load_workdir(workdir, step)


def load_path(path: str) -> Served:
  """An export directory (it holds manifest.json) or else a run directory (its latest checkpoint)."""
  return load_export(path) if os.path.isfile(os.path.join(path, "manifest.json")) else load_workdir(path)


def define_flags() -> None:
  """Defines `--export` and `--workdir`, the two model sources `load` takes (for a predict tool's `__main__`)."""
  from absl import flags
  flags.DEFINE_string("export", "", "Export directory (common.train.export).")
  flags.DEFINE_string("workdir", "", "Run directory (the final stage's): use its latest checkpoint instead of an export.")
