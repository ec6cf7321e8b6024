"""Contrastive losses: ViLocal's pixel InfoNCE, general InfoNCE, supervised contrastive, patch labels.

Every function is a pure `jax.numpy` function with static shapes, wrapped in `jax.jit` (sizes static,
temperatures traced): an eager call compiles once per shape, a call inside a jitted step inlines. Sets of
variable size (sampled pixels, valid anchors, valid negatives) are fixed-size buffers with boolean
validity masks. Similarities are cosine similarities of L2-normalised vectors, normalised like
`torch.nn.functional.normalize`: v / max(||v||, 1e-12). They are computed in float32 with
`Precision.HIGHEST` matmuls (PyTorch's float32 matmul, not a bfloat16 pass on TPU), whatever the input
dtype. Reductions are means over valid anchors and are 0, not NaN, when nothing is valid.

ViLocal (`train_stage1/loss.py`, class `info_nce_loss`, spec §1.6). Per frame b, with the encoder
output E_b [H, W, C] and the mask M_b [H, W] at the same resolution:
  P = pixels with M == 0 (pristine), F = pixels with M == 1 (forged); pixels with any other mask value
  (e.g. 255) belong to neither set and are ignored, as in the reference's `== 0` / `== 1` tests;
  Q = a uniformly random subset of min(|P|, S) pristine pixels, G = one of min(|F|, S) forged pixels
  (S = `num_samples` = 3000, `torch.randperm(n)[:S]` in the reference), q, g L2-normalised;
  for each anchor q_i in Q (forged pixels are never anchors):
    s+_i = mean over j != i of cos(q_i, q_j)         (one positive logit: the mean cosine)
    s-_ik = cos(q_i, g_k) for every g_k in G
    L_i = -log( exp(s+_i / tau) / (exp(s+_i / tau) + sum_k exp(s-_ik / tau)) ),   tau = 0.1
  L_b = mean_i L_i; the loss is the mean of L_b over the B frames of the batch.
  A frame without forged pixels has L_i = -log 1 = 0, so L_b = 0 (it still counts in the mean over B,
  as in the reference).
  Deviation: a frame with fewer than 2 pristine pixels makes the reference return NaN (an empty mean);
  here L_b = 0 and the frame still counts in the mean over B, exactly like a frame without forged
  pixels. So wherever the reference is finite the two agree, and one degenerate frame no longer turns
  the whole batch loss into NaN.
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

NORMALIZE_EPS = 1e-12   # torch.nn.functional.normalize
VILOCAL_NUM_SAMPLES = 3000
VILOCAL_TEMPERATURE = 0.1

# Patch classes (NCL-IML, spec §2.4): a contour patch holds both tampered and authentic pixels.
AUTHENTIC, TAMPERED, CONTOUR = 0, 1, 2

_matmul = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """x / max(||x||, 1e-12) along `axis` in float32 (torch F.normalize); finite gradient at x = 0."""
  x = jnp.asarray(x, jnp.promote_types(jnp.asarray(x).dtype, jnp.float32))
  squared_norm = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(squared_norm, NORMALIZE_EPS ** 2))


def _safe_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  """sum(weights * values) / sum(weights), and 0 when the weights sum to 0 (no NaN, no NaN gradient)."""
  weights = weights.astype(values.dtype)
  total = jnp.sum(weights)
  masked = jnp.where(weights > 0, values, 0.0)
  return jnp.where(total > 0, jnp.sum(weights * masked) / jnp.where(total > 0, total, 1.0), 0.0)


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


@jax.jit
def info_nce(anchor: jax.Array, positive: jax.Array, negatives: jax.Array,
             temperature: float = 0.1, *, valid: jax.Array | None = None,
             negative_valid: jax.Array | None = None) -> jax.Array:
  """InfoNCE with cosine similarities, mean over valid anchors.

  Args:
    anchor: [N, C] anchors (L2-normalised here).
    positive: [N, C] one positive key per anchor (L2-normalised here, logit = cosine), or [N]
      precomputed positive similarities on the cosine scale (e.g. ViLocal's mean cosine).
    negatives: [N, K, C] negatives per anchor ("paired"), or [K, C] negatives shared by all
      anchors ("unpaired", the cheap form for pixel contrast).
    temperature: tau; logits are similarities / tau.
    valid: [N] bool, anchors to average over (all if None).
    negative_valid: [N, K] (paired) or [K] (unpaired) bool, negatives to use (all if None).
  Returns:
    Scalar mean over valid anchors of -log(exp(s+/tau) / (exp(s+/tau) + sum_k exp(s-_k/tau))); 0 if no
    anchor is valid.
  """
  anchor = l2_normalize(anchor)
  num_anchors = anchor.shape[0]
  if positive.ndim == 1:
    positive_logits = jnp.asarray(positive, jnp.float32)
  elif positive.shape == anchor.shape:
    positive_logits = jnp.sum(anchor * l2_normalize(positive), axis=-1)
  else:
    raise ValueError(f"positive must be [N, C] = {anchor.shape} or [N], got {positive.shape}")
  if positive_logits.shape != (num_anchors,):
    raise ValueError(f"positive logits must have shape ({num_anchors},), got {positive_logits.shape}")
  negatives = l2_normalize(negatives)
  if negatives.ndim == 2:
    negative_logits = _matmul(anchor, negatives.T)
    if negative_valid is not None:
      negative_valid = jnp.asarray(negative_valid, bool)[None, :]
  elif negatives.ndim == 3 and negatives.shape[0] == num_anchors:
    negative_logits = jnp.einsum("nc,nkc->nk", anchor, negatives, precision=jax.lax.Precision.HIGHEST)
  else:
    raise ValueError(f"negatives must be [K, C] or [N={num_anchors}, K, C], got {negatives.shape}")
  losses = info_nce_per_anchor(positive_logits, negative_logits, temperature, negative_valid)
  if valid is None:
    return jnp.mean(losses)
  return _safe_mean(losses, jnp.asarray(valid, bool))


@jax.jit
def supervised_contrastive(embeddings: jax.Array, labels: jax.Array, valid: jax.Array | None = None,
                           temperature: float = 0.1, *,
                           base_temperature: float | None = None) -> jax.Array:
  """Supervised contrastive loss (SupCon, Khosla et al. 2020, "L_out"), masked.

  For each valid anchor i with P(i) = {valid p != i with labels[p] == labels[i]} non-empty and
  A(i) = {valid a != i}:
    L_i = -(tau / base_tau) / |P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / tau)
                                                             / sum_{a in A(i)} exp(z_i.z_a / tau) )
  with z the L2-normalised embeddings. The loss is the mean of L_i over valid anchors that have at
  least one positive (anchors without a positive are left out of the mean; 0 if there is none).

  Args:
    embeddings: [N, C].
    labels: [N] integer classes.
    valid: [N] bool (all if None); invalid rows are neither anchors, positives nor negatives.
    temperature: tau.
    base_temperature: base_tau of the reference implementation (defaults to tau, i.e. no rescaling).
  Returns:
    Scalar loss.
  """
  z = l2_normalize(embeddings)
  num = z.shape[0]
  if labels.shape != (num,):
    raise ValueError(f"labels must have shape ({num},), got {labels.shape}")
  valid = jnp.ones((num,), bool) if valid is None else jnp.asarray(valid, bool)
  base_temperature = temperature if base_temperature is None else base_temperature
  logits = _matmul(z, z.T) / temperature
  not_self = ~jnp.eye(num, dtype=bool)
  contrast = valid[:, None] & valid[None, :] & not_self
  has_contrast = jnp.any(contrast, axis=1, keepdims=True)
  contrast_logits = jnp.where(contrast, logits, -jnp.inf)
  contrast_logits = jnp.where(has_contrast, contrast_logits, 0.0)   # keeps empty rows finite
  log_prob = logits - jax.nn.logsumexp(contrast_logits, axis=1, keepdims=True)
  positive = contrast & (labels[:, None] == labels[None, :])
  num_positive = jnp.sum(positive, axis=1)
  sum_log_prob = jnp.sum(jnp.where(positive, log_prob, 0.0), axis=1)
  mean_log_prob = sum_log_prob / jnp.maximum(num_positive, 1)
  anchor_losses = -(temperature / base_temperature) * mean_log_prob
  return _safe_mean(anchor_losses, valid & (num_positive > 0))


class PixelSamples(NamedTuple):
  """Fixed-size pixel subsets per frame: flat indices into H*W and their validity, each [B, S']."""
  pristine_index: jax.Array
  pristine_valid: jax.Array
  forged_index: jax.Array
  forged_valid: jax.Array


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


@functools.partial(jax.jit, static_argnames="num_samples")
def vilocal_pixel_samples(mask: jax.Array, rng: jax.Array,
                          num_samples: int = VILOCAL_NUM_SAMPLES) -> PixelSamples:
  """ViLocal's per-frame pixel sampling: up to `num_samples` pristine and forged pixels per frame.

  Args:
    mask: [B, H, W]; 0 pristine, 1 forged, other values ignored.
    rng: PRNG key; frame b uses `jax.random.split(rng, B)[b]`, and one random permutation of its
      pixels ranks both classes (the two subsets are independent uniform subsets, as with two
      `randperm` calls).
    num_samples: S; buffers hold min(S, H*W) slots.
  Returns:
    PixelSamples with [B, min(S, H*W)] flat indices (row-major over H, W) and validity.
  """
  if mask.ndim != 3:
    raise ValueError(f"mask must be [B, H, W], got shape {mask.shape}")
  batch = mask.shape[0]
  flat = mask.reshape(batch, -1)
  size = min(num_samples, flat.shape[1])
  keys = jax.random.split(rng, batch)

  def sample(frame, key):
    return PixelSamples(*random_subset(frame == 0, key, size), *random_subset(frame == 1, key, size))

  return jax.vmap(sample)(flat, keys)


@jax.jit
def vilocal_infonce_from_samples(pristine: jax.Array, pristine_valid: jax.Array, forged: jax.Array,
                                 forged_valid: jax.Array,
                                 temperature: float = VILOCAL_TEMPERATURE) -> jax.Array:
  """ViLocal's loss for one frame from its sampled embeddings (see the module docstring).

  Args:
    pristine: [S, C] sampled pristine embeddings (anchors and positives).
    pristine_valid: [S] bool.
    forged: [S', C] sampled forged embeddings (negatives).
    forged_valid: [S'] bool.
    temperature: tau.
  Returns:
    Scalar L_b: mean over valid anchors; 0 without forged samples or with fewer than 2 pristine ones.
  """
  anchors = l2_normalize(pristine)
  negatives = l2_normalize(forged)
  num_anchors = anchors.shape[0]
  num_valid = jnp.sum(pristine_valid)
  slot = jnp.arange(num_anchors)
  others = pristine_valid[None, :] & (slot[:, None] != slot[None, :])
  similarity = _matmul(anchors, anchors.T)
  mean_positive = (jnp.sum(jnp.where(others, similarity, 0.0), axis=1)
                   / jnp.maximum(num_valid - 1, 1).astype(similarity.dtype))
  losses = info_nce_per_anchor(mean_positive, _matmul(anchors, negatives.T), temperature,
                               forged_valid[None, :])
  return jnp.where(num_valid >= 2, _safe_mean(losses, pristine_valid), 0.0)


@functools.partial(jax.jit, static_argnames="num_samples")
def vilocal_pixel_infonce(embeddings: jax.Array, mask: jax.Array, rng: jax.Array, *,
                          num_samples: int = VILOCAL_NUM_SAMPLES,
                          temperature: float = VILOCAL_TEMPERATURE) -> jax.Array:
  """ViLocal stage-1 pixel InfoNCE, as the official code computes it (module docstring).

  Args:
    embeddings: [B, H, W, C] encoder output (no projection head), any float dtype.
    mask: [B, H, W] at the embeddings' resolution; 0 pristine, 1 forged, other values ignored.
    rng: PRNG key for the pixel subsampling.
    num_samples: S, the most pixels of each class sampled per frame (3000).
    temperature: tau (0.1).
  Returns:
    Scalar float32 loss, the mean over the B frames.
  Memory: two S x S float32 similarity matrices per frame (pristine-pristine and pristine-forged),
  2 x 36 MB at S = 3000.
  """
  if embeddings.ndim != 4 or mask.shape != embeddings.shape[:3]:
    raise ValueError(f"embeddings must be [B, H, W, C] and mask [B, H, W]; got {embeddings.shape} "
                     f"and {mask.shape}")
  batch, _, _, channels = embeddings.shape
  pixels = embeddings.reshape(batch, -1, channels)
  samples = vilocal_pixel_samples(mask, rng, num_samples)

  def frame_loss(frame, s):
    return vilocal_infonce_from_samples(frame[s.pristine_index], s.pristine_valid,
                                        frame[s.forged_index], s.forged_valid, temperature)

  return jnp.mean(jax.vmap(frame_loss)(pixels, samples))


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
