"""Multi-host start-up: `jax.distributed.initialize()` driven by environment variables.

  JAX_COORDINATOR_ADDRESS=host:port JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i   explicit (any platform, CPU included)
  JAX_DISTRIBUTED=auto                                                    let JAX detect the cluster (TPU pods,
                                                                          SLURM, Open MPI, GKE)
Nothing set: a single process. On CPU, cross-process collectives use gloo.
"""
from __future__ import annotations

import logging
import os

import jax


def maybe_initialize() -> None:
  """Calls `jax.distributed.initialize` when the environment asks for it (before any other JAX call)."""
  address = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if address:
    if os.environ.get("JAX_PLATFORMS", "").startswith("cpu"):
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    missing = [v for v in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if v not in os.environ]
    if missing:
      raise ValueError(f"JAX_COORDINATOR_ADDRESS is set but {', '.join(missing)} is not")
    jax.distributed.initialize(coordinator_address=address, num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                               process_id=int(os.environ["JAX_PROCESS_ID"]))
  elif os.environ.get("JAX_DISTRIBUTED") == "auto":
    jax.distributed.initialize()
  else:
    return
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
