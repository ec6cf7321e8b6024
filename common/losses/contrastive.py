"""Contrastive building blocks shared by the methods: L2 normalisation, per-anchor InfoNCE, random
subsets, patch classes (NCL-IML in `ncl_jax/losses.py`, ViLocal in `vilocal_jax/losses.py`).

Every function is a pure `jax.numpy` function with static shapes, wrapped in `jax.jit` (sizes static,
temperatures traced): an eager call compiles once per shape, a call inside a jitted step inlines. Sets of
variable size are fixed-size buffers with boolean validity masks. Vectors are L2-normalised like
`torch.nn.functional.normalize`: v / max(||v||, 1e-12), in float32 whatever the input dtype.
"""
import functools

import jax
import jax.numpy as jnp

NORMALIZE_EPS = 1e-12   # torch.nn.functional.normalize

# Patch classes (NCL-IML, spec §2.4): a contour patch holds both tampered and authentic pixels.
AUTHENTIC, TAMPERED, CONTOUR = 0, 1, 2


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """x / max(||x||, 1e-12) along `axis` in float32 (torch F.normalize); finite gradient at x = 0."""
  x = jnp.asarray(x, jnp.promote_types(jnp.asarray(x).dtype, jnp.float32))
  squared_norm = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(squared_norm, NORMALIZE_EPS ** 2))


@jax.jit
def info_nce_per_anchor(positive_logits: jax.Array, negative_logits: jax.Array,
                        temperature: float, negative_valid: jax.Array | None = None) -> jax.Array:
  """Cross-entropy with target 0 over [positive, negatives] / temperature, per anchor.

  Args:
    positive_logits: [N] similarity of each anchor to its positive (before the temperature).
    negative_logits: [N, K] similarities to the negatives.
    temperature: tau.
    negative_valid: bool, broadcastable to [N, K]; invalid negatives are left out of the softmax.
  Returns:
    [N] losses -log softmax([s+, s-_1..K] / tau)[0]; exactly 0 (= -log 1) for an anchor without valid
    negatives, where XLA's approximate exp would leave about 1e-7.
  """
  negatives = negative_logits / temperature
  positives = positive_logits / temperature
  if negative_valid is None:
    has_negative = jnp.asarray(negatives.shape[1] > 0)
  else:
    negative_valid = jnp.broadcast_to(negative_valid, negatives.shape)
    negatives = jnp.where(negative_valid, negatives, -jnp.inf)
    has_negative = jnp.any(negative_valid, axis=1)
  logits = jnp.concatenate([positives[:, None], negatives], axis=1)
  return jnp.where(has_negative, jax.nn.logsumexp(logits, axis=1) - positives, 0.0)


@functools.partial(jax.jit, static_argnames="size")
def random_subset(member: jax.Array, rng: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
  """A uniformly random subset of min(#member, size) of the True positions of `member`.

  Same set distribution as `torch.nonzero(member)[torch.randperm(n)[:size]]`: every position gets a
  distinct random rank (a random permutation, so no ties) and the `size` members of lowest rank are
  taken; when fewer than `size` positions are members all of them are taken. Static shapes: the
  result is padded with non-members, flagged invalid.

  Args:
    member: [N] bool.
    rng: PRNG key.
    size: number of slots, at most N.
  Returns:
    (indices [size] int32, valid [size] bool): valid indices are distinct members, and exactly
    min(#member, size) slots are valid.
  """
  num = member.shape[0]
  if not 0 < size <= num:
    raise ValueError(f"size must be in [1, {num}], got {size}")
  rank = jax.random.permutation(rng, num)
  _, index = jax.lax.top_k(-jnp.where(member, rank, num + rank), size)
  return index, member[index]


@functools.partial(jax.jit, static_argnames="patch_size")
def patch_classes(mask: jax.Array, patch_size: int) -> tuple[jax.Array, jax.Array]:
  """Labels the patches of a binary mask as authentic, tampered or contour (NCL-IML's three kinds).

  Args:
    mask: [B, H, W], forged where > 0.5; H and W divisible by `patch_size`.
    patch_size: side of the square, non-overlapping patches.
  Returns:
    (classes [B, H/p, W/p] int32 in {AUTHENTIC=0, TAMPERED=1, CONTOUR=2},
     forged_fraction [B, H/p, W/p] float32): a patch is tampered if all its pixels are forged,
    authentic if none is, contour otherwise.
  """
  batch, height, width = mask.shape
  if height % patch_size or width % patch_size:
    raise ValueError(f"mask size {(height, width)} is not divisible by patch_size {patch_size}")
  forged = (mask > 0.5).astype(jnp.float32)
  patches = forged.reshape(batch, height // patch_size, patch_size, width // patch_size, patch_size)
  fraction = jnp.mean(patches, axis=(2, 4))
  classes = jnp.where(fraction == 0, AUTHENTIC, jnp.where(fraction == 1, TAMPERED, CONTOUR))
  return classes.astype(jnp.int32), fraction
