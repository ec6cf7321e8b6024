"""ViLocal's stage-1 pixel InfoNCE (`train_stage1/loss.py`, class `info_nce_loss`, spec §1.6).

Pure `jax.numpy`, static shapes, wrapped in `jax.jit` (sizes static, temperature traced). Sampled pixel
sets are fixed-size buffers with boolean validity masks. Similarities are cosines of vectors normalised
by `common.losses.contrastive.l2_normalize` (torch `F.normalize`), in float32 with `Precision.HIGHEST`
matmuls whatever the input dtype; means over no valid anchor are 0, not NaN.

Per frame b, with the encoder output E_b [H, W, C] and the mask M_b [H, W] at the same resolution:
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

from common.losses.contrastive import info_nce_per_anchor, l2_normalize, random_subset

VILOCAL_NUM_SAMPLES = 3000
VILOCAL_TEMPERATURE = 0.1

_matmul = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


def _safe_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  """sum(weights * values) / sum(weights), and 0 when the weights sum to 0 (no NaN, no NaN gradient)."""
  weights = weights.astype(values.dtype)
  total = jnp.sum(weights)
  masked = jnp.where(weights > 0, values, 0.0)
  return jnp.where(total > 0, jnp.sum(weights * masked) / jnp.where(total > 0, total, 1.0), 0.0)


class PixelSamples(NamedTuple):
  """Fixed-size pixel subsets per frame: flat indices into H*W and their validity, each [B, S']."""
  pristine_index: jax.Array
  pristine_valid: jax.Array
  forged_index: jax.Array
  forged_valid: jax.Array


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
  """ViLocal's loss for one frame from its sampled embeddings (module docstring).

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
