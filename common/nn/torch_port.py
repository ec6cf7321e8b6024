"""Load PyTorch `state_dict`s (as numpy arrays) into NNX modules.

Every `nnx.Param` and `nnx.BatchStat` of a module gets a *torch-style key*: its NNX path joined with
dots, with the leaf renamed as PyTorch names it (`kernel` -> `weight`, `scale` -> `weight`,
`mean` -> `running_mean`, `var` -> `running_var`). Modules whose attribute names follow the official
PyTorch modules therefore match the official keys directly; where they do not, a method's converter
passes a short `rename` table of regex substitutions applied to the PyTorch keys.

Layouts are converted from the owning module's type: `nnx.Conv` kernels OI[spatial] -> [spatial]IO,
`nnx.Linear` kernels [out, in] -> [in, out], norms unchanged. A custom module that owns Params
directly declares `TORCH_PARAMS = {attr: (torch_leaf_name, layout)}` with a layout from `LAYOUTS`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
import dataclasses
import re

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
