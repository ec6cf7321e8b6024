"""Train-step benchmark: times one method's jitted train step on this machine's devices.

  python -m benchmarks.train_step --method vilocal --config paper [--stage stage1] [--batch 8] [--dtype bfloat16]
                                  [--steps 10] [--warmup 2] [--set model.remat=True --set data.clip_length=5 ...]
                                  [--profile 15]

Builds the task from `configs/<method>.py:<config>` (one stage of a multi-stage config, default the first), puts
the state on the configured mesh, takes one real batch from the task's training pipeline (the embedded demo
corpus unless `data.root` is set), compiles the train step (compile time, FLOPs from XLA's cost analysis, the
compiled buffer sizes), then times `--steps` steps after `--warmup`, each synchronised with
`block_until_ready`. Prints one JSON line. MFU is FLOPs/s over the device's peak for the compute dtype
(`PEAK_TFLOPS`; dense, no sparsity); it is omitted on CPU and on devices not in the table. Peak memory is the
device's `peak_bytes_in_use` where the backend reports it, else the process's peak resident memory.
`--profile N` then traces 3 more steps and adds the N costliest operations, named by their JAX op names.
"""
from __future__ import annotations

import collections
import glob
import json
import os
import re
import resource
import tempfile
import time

from absl import app, flags
import jax
import numpy as np

from benchmarks import method_config
from common.train import loop, mesh as mesh_lib

_METHOD = flags.DEFINE_string("method", None, "vilocal, msccnet, ncl, safepaint or delocate", required=True)
_CONFIG = flags.DEFINE_string("config", "paper", "config variant of configs/<method>.py")
_STAGE = flags.DEFINE_string("stage", None, "stage of a multi-stage config (default: its first)")
_BATCH = flags.DEFINE_integer("batch", None, "global batch size (default: the config's)")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "compute dtype (default: the config's)")
_STEPS = flags.DEFINE_integer("steps", 10, "timed steps (0: compile only, print the compile figures)")
_WARMUP = flags.DEFINE_integer("warmup", 2, "untimed steps after compilation")
_SET = flags.DEFINE_multi_string("set", [], "config override key=value (value parsed as a Python literal)")
_PROFILE = flags.DEFINE_integer("profile", 0, "after timing, trace 3 steps and add the N costliest operations "
                                "(by JAX op name and by primitive) to the JSON line; 0: off")

# Dense peak TFLOP/s by device kind (substring of `device_kind`, lower case) and compute dtype; float32 matmuls
# count at the TF32 tensor-core rate on NVIDIA GPUs (XLA's default precision there).
PEAK_TFLOPS = {
    "h200": {"bfloat16": 989.0, "float32": 494.0},
    "h100": {"bfloat16": 989.0, "float32": 494.0},
    "a100": {"bfloat16": 312.0, "float32": 156.0},
    "tpu v4": {"bfloat16": 275.0, "float32": 275.0},
    "tpu v5 lite": {"bfloat16": 197.0, "float32": 197.0},
    "tpu v5e": {"bfloat16": 197.0, "float32": 197.0},
    "tpu v5p": {"bfloat16": 459.0, "float32": 459.0},
}


def load_config(method: str, variant: str, stage: str | None, overrides: list[str]):
  """`method_config.load`, with random weights: a benchmark does not need the previous stage's checkpoint."""
  return method_config.load(method, variant, stage, overrides, random_weights=True)


_INSTRUCTION_OP = re.compile(r"%([\w.-]+) = [^\n]*?metadata=\{op_name=\"([^\"]*)\"")


def op_names(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> the JAX op name in its metadata (e.g. 'jit(train_step)/jvp()/conv_general_dilated')."""
  return dict(_INSTRUCTION_OP.findall(hlo_text))


def profile_ops(compiled, state, batch, top: int, steps: int = 3):
  """Traces `steps` steps; returns the `top` costliest ops by JAX op name and by primitive.

  Durations are the XLA CPU/GPU runtime's per-instruction events summed over threads (CPU time on CPU), per step;
  `share` is the fraction of all instruction time in the trace.
  """
  names = op_names(compiled.as_text())
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      for _ in range(steps):
        state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    data = jax.profiler.ProfileData.from_file(path)
    by_op, by_primitive = collections.Counter(), collections.Counter()
    for plane in data.planes:
      for line in plane.lines:
        for event in line.events:
          op = names.get(event.name)
          if op is None:
            continue
          by_op[op] += event.duration_ns
          by_primitive[op.rsplit("/", 1)[-1]] += event.duration_ns
  total = sum(by_op.values())
  table = lambda counter: [{"op": name, "ms_per_step": ns / steps / 1e6, "share": ns / total}
                           for name, ns in counter.most_common(top)]
  return state, {"by_op": table(by_op), "by_primitive": table(by_primitive)}


def peak_tflops(device, dtype: str) -> float | None:
  kind = device.device_kind.lower()
  return next((peaks[dtype] for name, peaks in PEAK_TFLOPS.items() if name in kind), None)


def main(argv):
  del argv
  config = load_config(_METHOD.value, _CONFIG.value, _STAGE.value, _SET.value)
  if _BATCH.value:
    config.global_batch_size = _BATCH.value
  if _DTYPE.value:
    config.dtype = _DTYPE.value
  dtype = str(config.get("dtype", "float32"))
  task, mesh, batch_sh, abstract, state_sh = loop.sharded_setup(config)
  config = task.config  # the global batch resolved for the mesh (per_device_batch_size)
  with jax.set_mesh(mesh):
    t0 = time.perf_counter()
    state = jax.block_until_ready(jax.jit(task.init, out_shardings=state_sh)(task.key(config.seed)))
    init_s = time.perf_counter() - t0
    host_batch = next(iter(task.input_pipeline("train")))
    batch = mesh_lib.global_batch(host_batch, batch_sh)
    step_fn = jax.jit(task.train_step, in_shardings=(state_sh, batch_sh), donate_argnums=0)
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    mem = compiled.memory_analysis()
    device = jax.devices()[0]
    record = {
        "method": _METHOD.value, "config": _CONFIG.value, "stage": _STAGE.value,
        "backend": jax.default_backend(), "device_kind": device.device_kind, "device_count": jax.device_count(),
        "dtype": dtype, "global_batch": int(config.global_batch_size),
        "input_shapes": {k: list(v.shape) for k, v in host_batch.items()},
        "flops_per_step": flops, "compile_s": compile_s, "init_s": init_s,
        "compiled_temp_bytes": getattr(mem, "temp_size_in_bytes", None),
        "compiled_argument_bytes": getattr(mem, "argument_size_in_bytes", None),
    }
    if not _STEPS.value:  # --steps=0: compile figures only (does it fit, how many FLOPs)
      print(json.dumps(record), flush=True)
      return
    try:
      for _ in range(_WARMUP.value):
        state, metrics = compiled(state, batch)
      jax.block_until_ready(state)
      times = []
      for _ in range(_STEPS.value):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t0)
    except jax.errors.JaxRuntimeError as e:  # e.g. out of memory: the compile figures still say why
      record["error"] = str(e).splitlines()[0]
      print(json.dumps(record), flush=True)
      raise
    if _PROFILE.value:
      state, record["profile"] = profile_ops(compiled, state, batch, _PROFILE.value)
  median = float(np.median(times))
  stats = device.memory_stats() or {}
  peak = peak_tflops(device, dtype) if device.platform != "cpu" else None
  record.update({
      "step_s_median": median, "step_s_p90": float(np.percentile(times, 90)),
      "samples_per_s": config.global_batch_size / median, "tflops_per_s": flops / median / 1e12,
      "mfu": (flops / median / 1e12 / (peak * jax.device_count())) if peak else None,
      "peak_device_bytes": stats.get("peak_bytes_in_use"),
      "peak_host_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "loss": float(np.asarray(metrics.get("loss", np.nan))),
  })
  print(json.dumps(record), flush=True)


if __name__ == "__main__":
  app.run(main)
