"""The config a benchmark runs: `configs/<method>.py:<variant>`, one stage of it, with key=value overrides."""
from __future__ import annotations

import os
import tempfile
from typing import Sequence

from common.train import config as config_lib
from common.train import sweep


def load(method: str, variant: str, stage: str | None, overrides: Sequence[str], random_weights: bool = False):
  """`configs/<method>.py:<variant>`'s stage `stage` (default its first) with `overrides` ('key=value', the value
  parsed as a Python literal, else taken as a string) applied in order. `random_weights` first clears `init_from`
  (no previous stage's checkpoint), so an override can still set it (SafePaint's VGG check reads it)."""
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", f"{method}.py")
  stages = config_lib.stage_configs(sweep.load_module(path).get_config(variant), tempfile.mkdtemp(prefix="bench_"))
  names = [name for name, _, _ in stages]
  if stage is not None and stage not in names:
    raise ValueError(f"--stage: {method}:{variant} has stages {names}, not {stage!r}")
  config = next(c for name, c, _ in stages if stage in (None, name))
  if random_weights:
    config.init_from = {}
  config = config_lib.apply_overrides(config, overrides)
  if method == "vilocal" and not config.data.root:  # the demo corpus: its two inpainters stand in for VI and OP
    config.data.methods = ()
  return config
