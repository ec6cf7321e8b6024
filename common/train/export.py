"""Export a trained run for downstream use, and load such an export with nothing but jax.

  python -m common.train.export --workdir=DIR --out=EXPORT [--step=N] [--platforms=cpu,cuda,tpu]

EXPORT/
  params/              Orbax params-only checkpoint: {"params": {model: pure dict}, "rest": {...}} (no optimizer
                       state, no RNG keys), for fine-tuning or re-loading into the suite's NNX models;
  variables.npz        the same arrays, flat '/'-joined keys, read by `load` with numpy only;
  inference.jaxexport  `jax.export` serialisation of `task.predict` over (variables, inputs): raw uint8 inputs,
                       normalised inside; the batch dimension is symbolic ('b'), and so are the spatial ones
                       (multiples of `input.multiple`) where the model is fully convolutional;
  manifest.json        task, step, config, `inputs` / `input` / `outputs` (the contract of `common.inference`),
                       and `model_card` (`common.train.model_card`: training data, steps, final evaluation).

`load(EXPORT)` returns `fn(inputs: dict) -> dict` needing only jax and numpy; it reproduces the live model.
"""
from __future__ import annotations

import json
import os
from typing import Callable

import jax
import numpy as np

from common import inference

_KEY = "RNG key: rebuilt inside the exported function (unused in eval mode)"


def _is_key(leaf) -> bool:
  return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def export(workdir: str, out: str, step: int | None = None,
           platforms: tuple[str, ...] = ("cpu", "cuda", "tpu")) -> dict:
  """Writes the export of `workdir`'s checkpoint at `step` (default: the newest readable) to `out`; returns the
  manifest."""
  import orbax.checkpoint as ocp
  from flax import nnx

  from common.train import checkpoint as ckpt_lib
  from common.train import model_card
  from common.train.task import TrainState

  with ckpt_lib.Run(workdir) as run_dir:
    task, restored, step = run_dir.load(step)
  config = task.config
  abstract = jax.eval_shape(task.init, task.key(0))
  model_state = {"params": restored.params, "rest": restored.rest}
  flat = {k: v for k, v in ckpt_lib.flat_keys(model_state).items() if not _is_key(v)}
  template = ckpt_lib.flat_keys({"params": abstract.params, "rest": abstract.rest})

  def infer(variables, inputs):
    leaves = {k: (task.key(0) if _is_key(a) else variables[k]) for k, a in template.items()}
    treedef = jax.tree.structure({"params": abstract.params, "rest": abstract.rest})
    tree = jax.tree.unflatten(treedef, [leaves[k] for k in template])
    state = TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=tree["params"], rest=tree["rest"],
                       opt_state={})
    return task.predict(task.models(state), inputs)

  spec = task.export_spec()
  input_specs = _abstract_inputs(spec)
  var_specs = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flat.items()}
  exported = jax.export.export(jax.jit(infer), platforms=platforms)(var_specs, input_specs)

  os.makedirs(out, exist_ok=True)
  host = {k: np.asarray(jax.device_get(v)) for k, v in flat.items()}
  np.savez(os.path.join(out, "variables.npz"), **host)
  with open(os.path.join(out, "inference.jaxexport"), "wb") as f:
    f.write(exported.serialize())
  pure = jax.tree.map(np.asarray, {"params": {n: nnx.to_pure_dict(p) for n, p in restored.params.items()},
                                   "rest": {n: nnx.to_pure_dict(nnx.split_state(r, _not_key, ...)[0])
                                            for n, r in restored.rest.items()}})
  with ocp.StandardCheckpointer() as params_ckpt:
    params_ckpt.save(os.path.abspath(os.path.join(out, "params")), pure, force=True)
    params_ckpt.wait_until_finished()
  manifest = {"task": config.task, "step": int(step), "platforms": list(platforms), "config": config.to_dict(),
              "inputs": spec["inputs"], "input": spec["input"], "outputs": spec["outputs"],
              "model_card": model_card.model_card(config, workdir, step), "rng": _KEY}
  with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=2, default=str)
  return manifest


def _abstract_inputs(spec: dict) -> dict[str, jax.ShapeDtypeStruct]:
  """The exported function's input avals: batch 'b', spatial dims `multiple*h` / `multiple*w` where symbolic."""
  multiple = spec["input"].get("multiple", 1)
  names = ["b", *(f"{multiple}*{d}" for d in inference.SYMBOLIC_DIMS)]
  b, *spatial = jax.export.symbolic_shape(", ".join(names))
  dims = dict(zip(inference.SYMBOLIC_DIMS, spatial))
  return {name: jax.ShapeDtypeStruct((b, *(dims.get(d, d) for d in s["shape"])), np.dtype(s["dtype"]))
          for name, s in spec["inputs"].items()}


def _not_key(path, variable) -> bool:
  del path
  return not _is_key(variable)


def load(export_dir: str) -> Callable[[dict], dict]:
  """The exported inference function: `fn({input_name: array [B, ...]}) -> {output_name: array}`."""
  with open(os.path.join(export_dir, "inference.jaxexport"), "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  with np.load(os.path.join(export_dir, "variables.npz")) as z:
    variables = {k: jax.numpy.asarray(z[k]) for k in z.files}

  def fn(inputs: dict) -> dict:
    return exported.call(variables, inputs)

  return fn


def main(argv) -> None:
  del argv
  from absl import flags
  f = flags.FLAGS
  manifest = export(f.workdir, f.out, f.step if f.step >= 0 else None, tuple(f.platforms.split(",")))
  print(json.dumps({k: manifest[k] for k in ("task", "step", "inputs", "input", "outputs")}, indent=2))
  print(manifest["model_card"]["summary"])


if __name__ == "__main__":
  from absl import flags
  flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.", required=True)
  flags.DEFINE_string("out", None, "Export directory to write.", required=True)
  flags.DEFINE_integer("step", -1, "Checkpoint step (default: latest).")
  flags.DEFINE_string("platforms", "cpu,cuda,tpu", "Comma-separated lowering platforms.")
  from common.train import tool
  tool.run_tool(main, lambda: os.path.join(flags.FLAGS.workdir, "logs") if flags.FLAGS.workdir else None)
