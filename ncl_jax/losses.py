"""NCL's losses: patch roles of the pivot branches, the patch InfoNCE, the pivot-consistent loss.

The paper's abstract fixes the idea; the code is unpublished (spec §2.4), so every choice below is a config
field (`config.ncl`, documented in configs/ncl.py).

Patches. The label mask [B, H, W] is cut into square patches whose side is `patch_size` cells of the embedding
grid, i.e. `patch_size * H / h` image pixels, and each patch is classified with
`common.losses.contrastive.patch_classes`: tampered (every pixel forged), authentic (none) or contour (mixed).
The embeddings [B, h, w, D] are average-pooled over the same patches.

Pivot roles. Contour patches are neither tampered nor authentic, so each branch b gives them a role:
  'pivot'     : branch b treats them as tampered when (b + phase) is even, else as authentic, so the two branches
                always assign opposite roles; `phase = (step // switch_every) % 2` swaps the roles during training
                (switch_every = 0: never);
  'discard'   : left out of the contrast (ablation);
  'tampered'  : always tampered (ablation);
  'authentic' : always authentic.
A patch's contrast label is then tampered (1) or authentic (0); -1 leaves it out.

Patch InfoNCE (per branch, over all patches of the batch). Up to `max_per_class` patches of each label are drawn
uniformly at random (the contrastive-sample caps). For each drawn anchor z_i (L2-normalised) the positive is the
prototype of the other drawn patches of its label, p_i = normalize(sum_{j != i, same label} z_j), and the
negatives are the drawn patches of the other label:
  L_i = -log( exp(z_i . p_i / tau) / (exp(z_i . p_i / tau) + sum_k exp(z_i . n_k / tau)) ),
averaged over anchors that have a positive and at least one negative (0 when there is none).

Pivot-consistent loss. The branches' localization outputs (tampered probabilities q_b = softmax(logits_b)[..., 1]
at the embedding grid) are pulled together: mean over branch pairs (a < b) of mean((q_a - q_b)^2); 0 when the
branches agree, and 0 for a single branch.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from common.losses import contrastive

AUTHENTIC, TAMPERED, CONTOUR = contrastive.AUTHENTIC, contrastive.TAMPERED, contrastive.CONTOUR
IGNORE = -1
CONTOUR_MODES = ("pivot", "discard", "tampered", "authentic")


def switch_phase(step: jax.Array, switch_every: int) -> jax.Array:
  """0 or 1: which of the two role assignments the pivot branches use at `step`."""
  if switch_every <= 0:
    return jnp.zeros((), jnp.int32)
  return (jnp.asarray(step, jnp.int32) // switch_every) % 2


def contour_roles(num_branches: int, contour_mode: str, phase: jax.Array) -> jax.Array:
  """[num_branches] int32: the label each branch gives contour patches (TAMPERED, AUTHENTIC or IGNORE)."""
  if contour_mode not in CONTOUR_MODES:
    raise ValueError(f"contour_mode must be one of {CONTOUR_MODES}, got {contour_mode!r}")
  branches = jnp.arange(num_branches)
  if contour_mode == "pivot":
    return jnp.where((branches + phase) % 2 == 0, TAMPERED, AUTHENTIC).astype(jnp.int32)
  fixed = {"discard": IGNORE, "tampered": TAMPERED, "authentic": AUTHENTIC}[contour_mode]
  return jnp.full((num_branches,), fixed, jnp.int32)


def contrast_labels(classes: jax.Array, contour_role: jax.Array) -> jax.Array:
  """Patch classes (AUTHENTIC / TAMPERED / CONTOUR) -> contrast labels (0, 1, or -1 = left out)."""
  return jnp.where(classes == CONTOUR, contour_role, classes).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("grid_hw", "patch_size"))
def mask_patches(mask: jax.Array, grid_hw: tuple[int, int], patch_size: int) -> jax.Array:
  """Classes [B, h/p, w/p] of the patches of `mask` [B, H, W] on an embedding grid `grid_hw` = (h, w).

  A patch covers `patch_size` grid cells, i.e. `patch_size * H / h` pixels, per side; H / h must be an integer.
  """
  _, height, width = mask.shape
  h, w = grid_hw
  if height % h or width % w or height // h != width // w:
    raise ValueError(f"mask {(height, width)} is not an integer multiple of the embedding grid {(h, w)}")
  if h % patch_size or w % patch_size:
    raise ValueError(f"embedding grid {(h, w)} is not divisible by patch_size {patch_size}")
  classes, _ = contrastive.patch_classes(mask, patch_size * (height // h))
  return classes


def pool_patches(embeddings: jax.Array, patch_size: int) -> jax.Array:
  """Mean over non-overlapping patch_size x patch_size cells: [B, h, w, D] -> [B, h/p, w/p, D]."""
  b, h, w, d = embeddings.shape
  x = embeddings.reshape(b, h // patch_size, patch_size, w // patch_size, patch_size, d)
  return jnp.mean(x.astype(jnp.float32), axis=(2, 4))


@functools.partial(jax.jit, static_argnames="max_per_class")
def patch_infonce(embeddings: jax.Array, labels: jax.Array, rng: jax.Array, *, max_per_class: int,
                  temperature: float) -> jax.Array:
  """The patch InfoNCE of one branch (module docstring).

  Args:
    embeddings: [N, D] patch embeddings (any float dtype).
    labels: [N] int, 1 tampered, 0 authentic, -1 left out.
    rng: key for drawing up to `max_per_class` patches of each label.
    max_per_class: the contrastive-sample cap per label.
    temperature: tau.
  Returns:
    Scalar float32 loss.
  """
  num = labels.shape[0]
  size = min(max_per_class, num)
  keys = jax.random.split(rng)
  t_index, t_valid = contrastive.random_subset(labels == TAMPERED, keys[0], size)
  a_index, a_valid = contrastive.random_subset(labels == AUTHENTIC, keys[1], size)
  z = contrastive.l2_normalize(embeddings[jnp.concatenate([t_index, a_index])])
  valid = jnp.concatenate([t_valid, a_valid])
  label = jnp.concatenate([jnp.ones(size, jnp.int32), jnp.zeros(size, jnp.int32)])
  same = label[:, None] == label[None, :]
  others = valid[None, :] & same & ~jnp.eye(2 * size, dtype=bool)
  prototype = contrastive.l2_normalize(jnp.einsum("ij,jd->id", others.astype(z.dtype), z,
                                                  precision=jax.lax.Precision.HIGHEST))
  positive = jnp.sum(z * prototype, axis=-1)
  negative = jnp.einsum("id,jd->ij", z, z, precision=jax.lax.Precision.HIGHEST)
  negative_valid = valid[None, :] & ~same
  losses = contrastive.info_nce_per_anchor(positive, negative, temperature, negative_valid)
  usable = valid & jnp.any(others, axis=1) & jnp.any(negative_valid, axis=1)
  count = jnp.sum(usable)
  return jnp.where(count > 0, jnp.sum(jnp.where(usable, losses, 0.0)) / jnp.maximum(count, 1), 0.0)


def pivot_consistency(branch_logits: jax.Array) -> jax.Array:
  """Mean squared difference of the tampered probabilities of every pair of branches.

  branch_logits: [num_branches, B, h, w, 2]. Returns a float32 scalar, 0 for one branch.
  """
  probs = jax.nn.softmax(branch_logits.astype(jnp.float32), axis=-1)[..., 1]
  n = probs.shape[0]
  pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
  if not pairs:
    return jnp.zeros((), jnp.float32)
  return sum(jnp.mean(jnp.square(probs[a] - probs[b])) for a, b in pairs) / len(pairs)
