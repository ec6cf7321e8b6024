"""A trained model as a plain function for inference: from an export directory or from a run's checkpoint.

Both give a `Served(fn, inputs, input, outputs, card, source)`: `fn({name: uint8 batch}) -> {name: array}` and the
contract of `common.inference` (the export's manifest, or the task's `export_spec()` for a run), with the model
card (`common.train.model_card`).
"""
from __future__ import annotations

from collections.abc import Callable
import dataclasses
import json
import os

import jax

from common import inference


@dataclasses.dataclass(frozen=True)
class Served:
  fn: Callable[[dict], dict]
  inputs: dict                  # {name: {"shape": [...] without batch, "dtype": "uint8", ...}}
  input: inference.InputSpec    # how raw media become those inputs
  outputs: dict                 # {name: description}
  card: dict                    # the model card: training data, steps, evaluation, `summary`
  source: str                   # the directory it came from (for error messages)


def load_export(export_dir: str) -> Served:
  """The function of an export written by `common.train.export` (needs only jax and numpy)."""
  from common.train import export

  manifest_path = os.path.join(export_dir, "manifest.json")
  if not os.path.isfile(manifest_path):
    raise FileNotFoundError(f"{export_dir}: no manifest.json (not an export directory)")
  with open(manifest_path, encoding="utf-8") as f:
    manifest = json.load(f)
  if "input" not in manifest:
    raise ValueError(f"{export_dir}: an export from before the uint8 input contract (no 'input' block in its "
                     "manifest); export the run again with `python -m common.train.export`")
  return Served(export.load(export_dir), manifest["inputs"],
                inference.InputSpec.from_manifest(manifest["input"], export_dir), manifest["outputs"],
                manifest.get("model_card", {}), export_dir)


def load_workdir(workdir: str, step: int | None = None) -> Served:
  """The task's `predict` on a run's checkpoint (default: the newest readable), on one local device."""
  from common.train import checkpoint as ckpt_lib
  from common.train import model_card

  with ckpt_lib.Run(workdir) as run_dir:
    task, state, step = run_dir.load(step)
  return from_task(task, state, model_card.model_card(task.config, workdir, step), workdir)


def from_task(task, state, card: dict, source: str) -> Served:
  """A task's jitted `predict` on `state`, with the contract of its `export_spec()`."""
  apply = jax.jit(lambda state, inputs: task.predict(task.models(state), inputs))
  spec = task.export_spec()
  return Served(lambda inputs: apply(state, inputs), spec["inputs"],
                inference.InputSpec.from_manifest(spec["input"], source), spec["outputs"], card, source)


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
