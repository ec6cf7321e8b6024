"""Load PyTorch `state_dict`s (as numpy arrays) into NNX modules.

Every `nnx.Param` and `nnx.BatchStat` of a module gets a *torch-style key*: its NNX path joined with
dots, with the leaf renamed as PyTorch names it (`kernel` -> `weight`, `scale` -> `weight`,
`mean` -> `running_mean`, `var` -> `running_var`). Modules whose attribute names follow the official
PyTorch modules therefore match the official keys directly; where they do not, a method's converter
passes a short `rename` table of regex substitutions applied to the PyTorch keys.

Layouts are converted from the owning module's type: `nnx.Conv` kernels OI[spatial] -> [spatial]IO,
`nnx.Linear` kernels [out, in] -> [in, out], norms unchanged. A custom module that owns Params
directly declares `TORCH_PARAMS = {attr: (torch_leaf_name, layout)}` with a layout from `LAYOUTS`.

The way back, `to_torch_state_dict`, derives from the same `rename` table (`invert_rename`), and `write_state_dict`
writes the result as a `.pth` (with torch) or an `.npz` of the same keys; `write_run_models` does both for the
models of a run directory (the converters' `--to_torch` command line).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
import dataclasses
import re
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

LAYOUTS = ("identity", "linear", "conv")

_NORM_LEAVES = {"scale": ("weight", "identity"), "bias": ("bias", "identity"),
                "mean": ("running_mean", "identity"), "var": ("running_var", "identity")}
_STANDARD_LEAVES = {
    nnx.Conv: {"kernel": ("weight", "conv"), "bias": ("bias", "identity")},
    nnx.Linear: {"kernel": ("weight", "linear"), "bias": ("bias", "identity")},
    nnx.LayerNorm: _NORM_LEAVES,
    nnx.BatchNorm: _NORM_LEAVES,
    nnx.GroupNorm: _NORM_LEAVES,
}

# Keys that carry no information for JAX (BatchNorm's step counter).
DEFAULT_IGNORE = (r"(^|\.)num_batches_tracked$",)


def torch_to_flax_axes(layout: str, ndim: int) -> tuple[int, ...]:
  """The transpose taking a PyTorch-layout array of `ndim` dims to the Flax layout."""
  if layout == "identity":
    return tuple(range(ndim))
  if layout == "linear":
    if ndim != 2:
      raise ValueError(f"a Linear weight is 2-D, got {ndim}-D")
    return (1, 0)
  if layout == "conv":
    if ndim < 3:
      raise ValueError(f"a conv weight is at least 3-D, got {ndim}-D")
    return tuple(range(2, ndim)) + (1, 0)
  raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


@dataclasses.dataclass(frozen=True)
class Slot:
  """One NNX variable that a PyTorch key fills."""
  path: tuple
  variable: nnx.Variable
  layout: str

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.variable.shape)


def _leaf_table(owner) -> Mapping[str, tuple[str, str]]:
  table = getattr(type(owner), "TORCH_PARAMS", None)
  if table is not None:
    return table
  for cls, leaves in _STANDARD_LEAVES.items():
    if isinstance(owner, cls):
      return leaves
  return {}


def torch_slots(module: nnx.Module) -> dict[str, Slot]:
  """Maps the torch-style key of every Param/BatchStat of `module` to its slot.

  Works on abstract modules (`nnx.eval_shape`) too. Raises if a variable has no known PyTorch name.
  """
  modules = dict(nnx.iter_modules(module))
  slots: dict[str, Slot] = {}
  for path, node in nnx.iter_graph(module):
    if not isinstance(node, (nnx.Param, nnx.BatchStat)):
      continue
    owner = modules.get(tuple(path[:-1]))
    leaf = path[-1]
    table = _leaf_table(owner) if owner is not None else {}
    if leaf not in table:
      raise ValueError(
          f"no PyTorch name for {'.'.join(map(str, path))} (owner {type(owner).__name__}); "
          "declare TORCH_PARAMS on the owning module")
    torch_leaf, layout = table[leaf]
    key = ".".join([str(p) for p in path[:-1]] + [torch_leaf])
    if key in slots:
      raise ValueError(f"two variables map to the torch key {key!r}")
    slots[key] = Slot(tuple(path), node, layout)
  return slots


def rename_keys(keys: Iterable[str], rename: Sequence[tuple[str, str]]) -> dict[str, str]:
  """Applies the regex substitutions of `rename` in order; returns {torch_key: nnx_style_key}."""
  out = {}
  for key in keys:
    new = key
    for pattern, repl in rename:
      new = re.sub(pattern, repl, new)
    out[key] = new
  return out


def strip_prefix(state_dict: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """The entries of `state_dict` under `prefix`, with the prefix removed."""
  return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


@dataclasses.dataclass
class LoadReport:
  """What `load_torch_state_dict` did, by PyTorch key."""
  loaded: list[str]
  missing: list[str]   # torch-style keys of the module that no PyTorch entry filled
  unused: list[str]    # PyTorch keys that matched no variable
  ignored: list[str]   # PyTorch keys dropped on purpose (e.g. num_batches_tracked)

  def __str__(self):
    return (f"loaded {len(self.loaded)}, missing {len(self.missing)}, unused {len(self.unused)}, "
            f"ignored {len(self.ignored)}" +
            (f"\n  missing: {self.missing}" if self.missing else "") +
            (f"\n  unused: {self.unused}" if self.unused else ""))


def load_torch_state_dict(module: nnx.Module,
                          state_dict: Mapping[str, np.ndarray],
                          *,
                          rename: Sequence[tuple[str, str]] = (),
                          ignore: Sequence[str] = DEFAULT_IGNORE,
                          strict: bool = True) -> LoadReport:
  """Fills `module` in place from a flat `{torch_key: array}` dict (prefix already stripped).

  Args:
    module: the NNX module; its Params and BatchStats are overwritten.
    state_dict: PyTorch-layout numpy arrays under their `state_dict` keys.
    rename: regex substitutions mapping PyTorch keys to the module's torch-style keys.
    ignore: regexes of PyTorch keys to drop (reported as `ignored`).
    strict: raise if any key is missing or unused.

  Returns:
    A `LoadReport`. A shape mismatch always raises, listing every mismatching key.
  """
  slots = torch_slots(module)
  ignored = sorted(k for k in state_dict if any(re.search(p, k) for p in ignore))
  names = rename_keys((k for k in state_dict if k not in set(ignored)), rename)
  loaded, unused, errors, updates = [], [], [], []
  filled = set()
  for torch_key, nnx_key in names.items():
    slot = slots.get(nnx_key)
    if slot is None:
      unused.append(torch_key)
      continue
    if nnx_key in filled:
      errors.append(f"{torch_key}: a second PyTorch key maps to {nnx_key}")
      continue
    value = np.asarray(state_dict[torch_key])
    try:
      value = np.transpose(value, torch_to_flax_axes(slot.layout, value.ndim))
    except ValueError as e:
      errors.append(f"{torch_key}: {e}")
      continue
    if value.shape != slot.shape:
      errors.append(f"{torch_key} -> {nnx_key}: shape {value.shape} (after {slot.layout} "
                    f"transpose) != {slot.shape}")
      continue
    filled.add(nnx_key)
    loaded.append(torch_key)
    updates.append((slot.variable, value))
  if errors:
    raise ValueError("cannot load the state dict:\n  " + "\n  ".join(errors))
  missing = sorted(set(slots) - filled)
  report = LoadReport(sorted(loaded), missing, sorted(unused), ignored)
  if strict and (missing or unused):
    raise ValueError(f"state dict does not match the module: {report}")
  for variable, value in updates:
    value = jnp.asarray(value, dtype=variable.dtype)
    if isinstance(variable.get_value(), jax.ShapeDtypeStruct):
      variable.set_value(value)  # an abstract module (`nnx.eval_shape`)
    else:
      variable[...] = value
  return report


_WEIGHTS = nnx.Any(nnx.Param, nnx.BatchStat)


def init_from_torch(build: Callable[[], nnx.Module],
                    state_dict: Mapping[str, np.ndarray],
                    *,
                    rename: Sequence[tuple[str, str]] = (),
                    ignore: Sequence[str] = DEFAULT_IGNORE) -> tuple[nnx.Module, LoadReport]:
  """Builds the module returned by `build()` with its Params and BatchStats taken from `state_dict`.

  The parameter initialisers never run: the module is built abstractly (`nnx.eval_shape`), its
  weights are filled from `state_dict` (strictly: every variable must be covered and every key
  used), and its other variables (RNG stream keys and counters) come from `build()` under `jax.jit`,
  where XLA drops the unused initialisers. This is much faster than building then overwriting,
  and gives the same RNG streams as a plain `build()`.
  """
  graphdef, weights, rest = nnx.split(nnx.eval_shape(build), _WEIGHTS, ...)
  rest = jax.jit(lambda: nnx.state(build(), nnx.Not(_WEIGHTS)))()
  module = nnx.merge(graphdef, weights, rest)
  report = load_torch_state_dict(module, state_dict, rename=rename, ignore=ignore, strict=True)
  return module, report


# Dict keys under which training scripts commonly nest the weights (e.g. `latest.pth`).
_WRAPPER_KEYS = ("state_dict", "model")


def unwrap_checkpoint(checkpoint: Mapping) -> Mapping:
  """The `state_dict` inside a loaded `.pth`: the mapping itself, or its `state_dict` / `model` entry."""
  for key in _WRAPPER_KEYS:
    inner = checkpoint.get(key)
    if isinstance(inner, Mapping):
      return inner
  return checkpoint


def load_pth(path: str) -> dict[str, np.ndarray]:
  """The `state_dict` of a `.pth` file (unwrapped) as numpy arrays (needs the `torch` extra)."""
  try:
    import torch  # optional dependency: only converter command lines need it
  except ImportError as e:
    raise ImportError("reading a .pth needs PyTorch: pip install -e '.[torch]'") from e

  checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(checkpoint, Mapping):
    raise ValueError(f"{path}: expected a state_dict (a mapping), got {type(checkpoint).__name__} "
                     "(a pickled whole module: load it with its code and save its .state_dict())")
  state_dict = unwrap_checkpoint(checkpoint)
  bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
  if bad:
    raise ValueError(f"{path}: entries that are not tensors (not a state_dict?): {bad[:10]}")
  return {k: v.detach().cpu().numpy() for k, v in state_dict.items()}


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A state_dict from a `.pth` file (needs torch) or an `.npz` of the same keys (read without torch)."""
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as f:
      return dict(f)
  return load_pth(path)


def pth_to_npz(pth: str, out: str, check: Callable[[dict], object], keep: Callable[[str], bool]) -> None:
  """Writes the entries of `pth`'s state_dict that `keep(key)` selects to `out` (an `.npz`, read without torch),
  once `check` (the model's loader, which raises on a missing or odd key) has accepted the whole state_dict."""
  state_dict = load_pth(pth)
  check(state_dict)
  np.savez(out, **{k: v for k, v in state_dict.items() if keep(k)})
  print(f"wrote {out}")


# ---------------------------------------------------------------- NNX -> PyTorch
_LITERAL = re.compile(r"\\(?P<escaped>[^\w])|(?P<plain>[^\\()\[\]{}.*+?|^$])")
_REPL_PART = re.compile(r"\\(?:g<(?P<named>\d+)>|(?P<ref>\d+))|(?P<literal>[^\\])")


def _closing_paren(pattern: str, start: int) -> int:
  depth, i = 0, start
  while i < len(pattern):
    if pattern[i] == "\\":
      i += 2
      continue
    depth += {"(": 1, ")": -1}.get(pattern[i], 0)
    if depth == 0:
      return i
    i += 1
  raise ValueError(f"{pattern!r}: unbalanced parenthesis")


def _pattern_parts(pattern: str) -> tuple[bool, list[tuple[str, str]]]:
  """(anchored, parts) of a rename pattern; parts: ("literal", char) and ("group", one capturing group's regex)."""
  anchored = pattern.startswith("^")
  parts, i = [], int(anchored)
  while i < len(pattern):
    if pattern.startswith("(", i) and not pattern.startswith("(?", i):
      end = _closing_paren(pattern, i) + 1
      if re.compile(pattern[i:end]).groups != 1:
        raise ValueError(f"{pattern!r}: a nested capturing group cannot be inverted")
      parts.append(("group", pattern[i:end]))
      i = end
      continue
    m = _LITERAL.match(pattern, i)
    if m is None:
      raise ValueError(f"{pattern!r}: only literals and capturing groups can be inverted, not {pattern[i:]!r}")
    parts.append(("literal", m["escaped"] or m["plain"]))
    i = m.end()
  return anchored, parts


def _invert_rule(pattern: str, repl: str) -> tuple[str, str]:
  """The rule undoing `re.sub(pattern, repl, .)`: it matches what `repl` writes (each group by its own regex)
  and writes `pattern`'s literals and groups back."""
  anchored, parts = _pattern_parts(pattern)
  groups = [regex for kind, regex in parts if kind == "group"]
  inverse_pattern, position = "^" if anchored else "", {}  # group index in `pattern` -> its number in the inverse
  for m in _REPL_PART.finditer(repl):
    if m["literal"] is not None:
      inverse_pattern += re.escape(m["literal"])
      continue
    index = int(m["named"] or m["ref"]) - 1
    if index in position or index >= len(groups):
      raise ValueError(f"({pattern!r}, {repl!r}): a group used twice or missing cannot be inverted")
    position[index] = len(position) + 1
    inverse_pattern += groups[index]
  if len(position) != len(groups):
    raise ValueError(f"({pattern!r}, {repl!r}): a group dropped by the replacement cannot be inverted")
  inverse_repl, index = "", 0
  for kind, text in parts:
    if kind == "literal":
      inverse_repl += text.replace("\\", "\\\\")
    else:
      inverse_repl += f"\\g<{position[index]}>"
      index += 1
  return inverse_pattern, inverse_repl


def invert_rename(rename: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
  """The substitutions that undo `rename` (regex rules PyTorch key -> torch-style key), in reverse order.

  A rule inverts when its pattern is literals (optionally anchored by `^`) and capturing groups, each used once in
  its replacement: the inverse matches the replacement (groups by their own regex) and writes the pattern back.
  Rules that delete (replacement "", e.g. DataParallel's `^module\\.`) only normalise accepted input and have
  no inverse. The inverse is right only if each rule is specific enough that its inverse matches nothing else:
  `official_keys` checks that every key maps back, and the round-trip tests check the official key sets.
  """
  return tuple(_invert_rule(p, r) for p, r in reversed(rename) if r)


def official_keys(keys: Iterable[str], rename: Sequence[tuple[str, str]]) -> dict[str, str]:
  """{torch-style key: official PyTorch key}, through `invert_rename(rename)`; raises unless each official key
  maps back to its torch-style key through `rename`, and no two keys share an official key."""
  inverse = invert_rename(rename)
  out = {}
  for key, official in rename_keys(keys, inverse).items():
    back = rename_keys([official], rename)[official]
    if back != key:
      raise ValueError(f"{key}: the inverted rename gives {official!r}, which `rename` maps to {back!r}")
    if official in out.values():
      raise ValueError(f"two variables map to the official key {official!r}")
    out[key] = official
  return out


def _to_torch_value(slot: Slot) -> Any:
  """The slot's value in PyTorch layout ([spatial]IO -> OI[spatial], [in, out] -> [out, in]); a
  `jax.ShapeDtypeStruct` of that shape for an abstract module."""
  value = slot.variable.get_value()
  axes = np.argsort(torch_to_flax_axes(slot.layout, len(value.shape)))
  if isinstance(value, jax.ShapeDtypeStruct):
    return jax.ShapeDtypeStruct(tuple(value.shape[a] for a in axes), value.dtype)
  return np.transpose(np.asarray(value), axes)


def submodules(module: nnx.Module, cls: type) -> dict[str, nnx.Module]:
  """`{torch-style prefix ("" or "a.b."): submodule}` of every submodule of `module` (itself included) of type
  `cls`: where a caller puts the buffers that are not variables here."""
  return {"".join(f"{p}." for p in path): m for path, m in nnx.iter_modules(module) if isinstance(m, cls)}


def to_torch_state_dict(module: nnx.Module, *, rename: Sequence[tuple[str, str]] = (), exclude: str | None = None,
                        buffers: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """`{official key: numpy array in PyTorch layout}` of `module`'s Params and BatchStats: the inverse of
  `load_torch_state_dict(module, ., rename=rename)`.

  Every module with running statistics also gets PyTorch BatchNorm's `num_batches_tracked` (int64 0, shape ()),
  so the key set is the official state_dict's and `load_state_dict(strict=True)` accepts it; the true count is
  not recoverable (nothing here keeps it; PyTorch uses it only when `momentum=None`).

  Args:
    module: the NNX module; abstract (`nnx.eval_shape`) gives `jax.ShapeDtypeStruct`s in place of its arrays.
    rename: the loader's table, PyTorch key -> torch-style key; inverted by `invert_rename`.
    exclude: a regex of torch-style keys with no official counterpart, left out.
    buffers: `{torch-style key: array in PyTorch layout}` of official buffers that are not variables here (fixed
      filters the loader checks and drops, regenerated by the caller); renamed like the variables.
  """
  slots = {k: s for k, s in torch_slots(module).items() if not (exclude and re.search(exclude, k))}
  counters = [k.removesuffix("running_mean") + "num_batches_tracked" for k in slots if k.endswith(".running_mean")]
  buffers = dict(buffers or {})
  names = official_keys([*slots, *counters, *buffers], rename)
  return {**{names[k]: _to_torch_value(slot) for k, slot in slots.items()},
          **{names[k]: np.zeros((), np.int64) for k in counters},
          **{names[k]: value for k, value in buffers.items()}}


def _torch_for(path: str):
  """torch when `path` is written by `torch.save`, None for an `.npz`; a ValueError for a .pth without torch."""
  if path.endswith(".npz"):
    return None
  try:
    import torch  # optional dependency: the `torch` extra
  except ImportError:
    raise ValueError(f"{path}: writing a .pth needs PyTorch (pip install -e '.[torch]'); or write an .npz "
                     "(the same keys, read without torch)") from None
  return torch


def write_state_dict(state_dict: Mapping[str, np.ndarray], path: str) -> None:
  """Writes `{key: array}` as `path`: an `.npz` (read back by `read_state_dict`, no torch needed) when `path`
  ends in `.npz`, else a `.pth` through `torch.save` (a ValueError if torch is not installed)."""
  torch = _torch_for(path)
  if torch is None:
    np.savez(path, **state_dict)
  else:
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, path)


# ---------------------------------------------------------------- the converters' --to_torch command line
def define_converter_flags(flag_values, config: str, out: str = "the file to write") -> None:
  """Defines the flags every converter shares in `flag_values`: --out (a run directory to write; with --to_torch,
  `out`), --config (default `config`, the config of the run the weights start) and --to_torch, --workdir, --step.
  Each converter adds the flags naming its official weight files."""
  from absl import flags
  from ml_collections import config_flags
  flags.DEFINE_string("out", None, f"Run directory to write (checkpoints/0); with --to_torch, {out}.",
                      required=True, flag_values=flag_values)
  config_flags.DEFINE_config_file("config", config, "Config of the run the weights start.",
                                  flag_values=flag_values, lock_config=True)
  flags.DEFINE_bool("to_torch", False, "Write a run's model as an official PyTorch state_dict to --out "
                    "(.pth, needs torch; or .npz).", flag_values=flag_values)
  flags.DEFINE_string("workdir", "", "With --to_torch: the run directory to read.", flag_values=flag_values)
  flags.DEFINE_integer("step", None, "With --to_torch: the checkpoint step (default: the newest readable).",
                       flag_values=flag_values)


def to_torch_requested(f, forward: Sequence[str]) -> bool:
  """Whether the parsed flags `f` ask for --to_torch. Raises ValueError on --workdir / --step without it, on
  --to_torch without --workdir or with a flag of the other direction, and when no direction is given
  (`forward`: the flags that name official files to convert)."""
  if not f.to_torch:
    if f.workdir or f.step is not None:
      raise ValueError("--workdir and --step go with --to_torch")
    if not any(getattr(f, name) for name in forward):
      raise ValueError(f"give {' or '.join('--' + n for n in forward)} (official weights -> a run directory), "
                       "or --to_torch --workdir=RUN (a run's model -> an official state_dict in --out)")
    return False
  mixed = [f"--{name}" for name in forward if getattr(f, name)]
  if mixed:
    raise ValueError(f"--to_torch reads --workdir; {', '.join(mixed)} belong to the other direction")
  if not f.workdir:
    raise ValueError("--to_torch needs --workdir=RUN (the run directory to read)")
  return True


def write_run_models(workdir: str, step: int | None,
                     outputs: Mapping[str, tuple[str, Callable[[nnx.Module], dict]]]) -> int:
  """Writes, for each model name of the run in `workdir` (at `step`, default: the newest readable checkpoint),
  `to_torch(module)` to its path: `outputs = {model_name: (path, to_torch)}`. Returns the step read."""
  from common.train import checkpoint as ckpt_lib
  for path, _ in outputs.values():
    _torch_for(path)  # fail before the restore
  with ckpt_lib.Run(workdir) as run:
    task, state, step = run.load(step)
  models = task.models(state)
  for name, (path, to_torch) in outputs.items():
    if name not in models:
      raise ValueError(f"{workdir}: the run has no model {name!r} (it has {sorted(models)})")
    write_state_dict(to_torch(models[name]), path)
    print(f"wrote {path}: {name} at step {step}")
  return step
