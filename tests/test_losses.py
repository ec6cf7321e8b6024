"""Tests of common.losses and vilocal_jax.losses against plain-numpy (float64) references.

ViLocal's pixel InfoNCE is checked against a loop-over-frames numpy transcription of the official
`train_stage1/loss.py` computation, on the very pixel subsets the jax code drew; the sampler is checked
for exact counts, distinctness, class membership and uniformity. The focal loss is checked against
ViLocal's `Sigmoid_Focal_Loss` and torchvision's `sigmoid_focal_loss` (alpha convention) written in
numpy; the cross-entropies and dice against their PyTorch definitions.
"""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.losses import contrastive, segmentation
from vilocal_jax import losses as vilocal_losses


def _logsumexp(x, axis):
  top = np.max(x, axis=axis, keepdims=True)
  return np.squeeze(top, axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def _normalize(x):
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def reference_vilocal_frame_losses(embeddings, mask, subsets=None, temperature=0.1):
  """The official ViLocal loss, per frame, in float64; NaN where the reference gives NaN.

  embeddings [B, H, W, C], mask [B, H, W]; subsets[b] = (pristine flat indices, forged flat indices),
  all pixels of each class when None (num_samples >= pixel counts).
  """
  batch, _, _, channels = embeddings.shape
  losses = []
  for b in range(batch):
    pixels = embeddings[b].reshape(-1, channels).astype(np.float64)
    labels = mask[b].reshape(-1)
    if subsets is None:
      pristine_index, forged_index = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    else:
      pristine_index, forged_index = subsets[b]
    query, negative = _normalize(pixels[pristine_index]), _normalize(pixels[forged_index])
    num = len(query)
    if num < 2:   # the mean over an empty off-diagonal row is NaN in the reference
      losses.append(np.nan)
      continue
    similarity = query @ query.T
    off_diagonal = similarity[~np.eye(num, dtype=bool)].reshape(num, num - 1)
    positive = off_diagonal.mean(axis=1, keepdims=True)
    logits = np.concatenate([positive, query @ negative.T], axis=1) / temperature
    losses.append(np.mean(_logsumexp(logits, axis=1) - logits[:, 0]))
  return np.array(losses)


def _random_masks(rng, batch, height, width, forged_share):
  return (rng.random((batch, height, width)) < forged_share).astype(np.uint8)


def test_vilocal_equals_reference_when_every_pixel_is_used():
  rng = np.random.default_rng(0)
  embeddings = rng.normal(size=(5, 6, 7, 8)).astype(np.float32)
  mask = _random_masks(rng, 5, 6, 7, 0.4)
  mask[1] = 0                      # no forged pixel: loss 0
  mask[2] = 1
  mask[2, 3, 4] = 0                # one pristine pixel: NaN in the reference, 0 here
  mask[3, :2] = 255                # ignored pixels (neither class)
  embeddings[4, 0, 0] = 0.0        # a zero embedding normalises to 0, as F.normalize does
  mask[4, 0, 0] = 0
  reference = reference_vilocal_frame_losses(embeddings, mask)
  assert np.isnan(reference[2]) and reference[1] == 0
  expected = np.mean(np.nan_to_num(reference, nan=0.0))
  loss = vilocal_losses.vilocal_pixel_infonce(jnp.asarray(embeddings), jnp.asarray(mask),
                                              jax.random.key(0), num_samples=3000)
  np.testing.assert_allclose(float(loss), expected, rtol=2e-6)


def _drawn_subsets(samples):
  subsets = []
  for p_index, p_valid, f_index, f_valid in zip(*(np.asarray(x) for x in samples)):
    subsets.append((p_index[p_valid], f_index[f_valid]))
  return subsets


@pytest.mark.parametrize("shape,num_samples,forged_share", [
    ((2, 6, 9, 8), 5, 0.5),           # both classes subsampled
    ((2, 60, 108, 16), 3000, 0.3),    # ViLocal's grid: pristine subsampled, forged all used
])
def test_vilocal_equals_reference_on_the_subsets_it_draws(shape, num_samples, forged_share):
  rng = np.random.default_rng(1)
  embeddings = rng.normal(size=shape).astype(np.float32)
  mask = _random_masks(rng, *shape[:3], forged_share)
  key = jax.random.key(7)
  samples = vilocal_losses.vilocal_pixel_samples(jnp.asarray(mask), key, num_samples)
  subsets = _drawn_subsets(samples)
  for (pristine, forged), frame in zip(subsets, mask.reshape(shape[0], -1)):
    assert len(pristine) == min(num_samples, np.sum(frame == 0))
    assert len(forged) == min(num_samples, np.sum(frame == 1))
  assert len(subsets[0][0]) < np.sum(mask[0] == 0)   # subsampling did happen
  expected = np.mean(reference_vilocal_frame_losses(embeddings, mask, subsets))
  loss = vilocal_losses.vilocal_pixel_infonce(jnp.asarray(embeddings), jnp.asarray(mask), key,
                                              num_samples=num_samples)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_pixel_sampler_picks_min_n_k_distinct_pixels_of_each_class():
  rng = np.random.default_rng(2)
  mask = rng.choice(np.array([0, 1, 255], np.uint8), size=(16, 5, 6), p=[0.5, 0.3, 0.2])
  mask[0] = 0
  mask[1] = 1
  mask[2] = 255
  for num_samples in (4, 100):
    samples = vilocal_losses.vilocal_pixel_samples(jnp.asarray(mask), jax.random.key(num_samples),
                                                   num_samples)
    size = min(num_samples, 30)
    assert samples.pristine_index.shape == samples.forged_index.shape == (16, size)
    for frame, p_index, p_valid, f_index, f_valid in zip(mask.reshape(16, -1),
                                                         *(np.asarray(x) for x in samples)):
      for cls, index, valid in ((0, p_index, p_valid), (1, f_index, f_valid)):
        chosen = index[valid]
        assert len(chosen) == min(np.sum(frame == cls), num_samples)
        assert len(set(chosen.tolist())) == len(chosen)
        assert np.all(frame[chosen] == cls)
        assert np.all(frame[index[~valid]] != cls)


def test_pixel_sampler_is_uniform_and_independent_between_classes():
  draws = 4000
  frame = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1], np.uint8).reshape(2, 5)
  mask = np.broadcast_to(frame, (draws, 2, 5))
  samples = vilocal_losses.vilocal_pixel_samples(jnp.asarray(mask), jax.random.key(3), 3)
  pristine, forged = np.asarray(samples.pristine_index), np.asarray(samples.forged_index)
  assert np.all(samples.pristine_valid) and np.all(samples.forged_valid)
  pristine_hits = np.zeros((draws, 10), bool)
  np.put_along_axis(pristine_hits, pristine, True, axis=1)
  forged_hits = np.zeros((draws, 10), bool)
  np.put_along_axis(forged_hits, forged, True, axis=1)
  np.testing.assert_allclose(pristine_hits[:, :6].mean(0), 0.5, atol=0.04)
  np.testing.assert_allclose(forged_hits[:, 6:].mean(0), 0.75, atol=0.04)
  subset_counts = {s: 0 for s in itertools.combinations(range(6), 3)}
  for row in np.sort(pristine, axis=1):
    subset_counts[tuple(row)] += 1
  np.testing.assert_allclose(np.array(list(subset_counts.values())) / draws, 1 / 20, atol=0.02)
  joint = np.mean(pristine_hits[:, 0] & forged_hits[:, 6])
  np.testing.assert_allclose(joint, 0.5 * 0.75, atol=0.04)


def test_vilocal_jits_once_and_changes_subsets_with_the_key():
  rng = np.random.default_rng(4)
  embeddings = jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.bfloat16)
  mask = jnp.asarray(_random_masks(rng, 2, 8, 8, 0.5))
  traces = []

  @functools.partial(jax.jit, static_argnames="num_samples")
  def loss_fn(embeddings, mask, key, num_samples):
    traces.append(1)
    return vilocal_losses.vilocal_pixel_infonce(embeddings, mask, key, num_samples=num_samples)

  first = loss_fn(embeddings, mask, jax.random.key(0), num_samples=10)
  second = loss_fn(embeddings, mask, jax.random.key(1), num_samples=10)
  assert len(traces) == 1
  assert first.dtype == jnp.float32 and np.isfinite(first) and float(first) != float(second)


def test_vilocal_zero_cases_and_finite_gradients():
  rng = np.random.default_rng(5)
  embeddings = jnp.asarray(rng.normal(size=(4, 5, 5, 6)) * 100.0, jnp.float32)
  embeddings = embeddings.at[3, 0, 0].set(0.0)
  mask = np.zeros((4, 5, 5), np.uint8)
  mask[2, 2:, 2:] = 1
  mask[3] = 1
  mask[3, 0, :2] = 0                   # two pristine pixels, one with a zero embedding
  value_and_grad = jax.jit(jax.value_and_grad(vilocal_losses.vilocal_pixel_infonce),
                           static_argnames="num_samples")
  key = jax.random.key(0)
  loss, grads = value_and_grad(embeddings, jnp.asarray(mask), key, num_samples=8)
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert np.all(np.isfinite(np.asarray(grads)))
  assert np.all(np.asarray(grads[:2]) == 0)
  mask[0] = 0                          # no forged pixel
  mask[1] = 1                          # no pristine pixel
  mask[2] = 1
  mask[2, 0, 0] = 0                    # a single pristine pixel (NaN in the reference)
  mask[3] = 255                        # all ignored
  loss, grads = value_and_grad(embeddings, jnp.asarray(mask), key, num_samples=8)
  assert float(loss) == 0.0 and np.all(np.asarray(grads) == 0)


def test_vilocal_is_info_nce_with_the_mean_cosine_positive():
  rng = np.random.default_rng(7)
  pristine = rng.normal(size=(9, 4)).astype(np.float32)
  forged = rng.normal(size=(6, 4)).astype(np.float32)
  q, g = _normalize(pristine.astype(np.float64)), _normalize(forged.astype(np.float64))
  mean_cosine = ((q @ q.T).sum(1) - np.sum(q * q, 1)) / 8
  logits = np.concatenate([mean_cosine[:, None], q @ g.T], axis=1) / 0.1
  expected = np.mean(_logsumexp(logits, 1) - logits[:, 0])
  loss = vilocal_losses.vilocal_infonce_from_samples(jnp.asarray(pristine), jnp.ones(9, bool),
                                                     jnp.asarray(forged), jnp.ones(6, bool))
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)


def test_patch_classes():
  mask = np.zeros((1, 4, 6), np.uint8)
  mask[0, :2, :2] = 1     # a tampered patch
  mask[0, 2, 3] = 1       # a contour patch
  classes, fraction = contrastive.patch_classes(jnp.asarray(mask), 2)
  np.testing.assert_array_equal(classes[0], [[1, 0, 0], [0, 2, 0]])
  np.testing.assert_allclose(fraction[0], [[1, 0, 0], [0, 0.25, 0]])
  with pytest.raises(ValueError, match="divisible"):
    contrastive.patch_classes(jnp.asarray(mask), 4)


# ---------------------------------------------------------------------------------------------------
# Segmentation losses.


def _np_sigmoid(z):
  return 0.5 * (1 + np.tanh(0.5 * z))


def _np_bce(z, y):
  return np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))


def _vilocal_focal(z, y, alpha=0.5, gamma=2.0):
  """ViLocal's Sigmoid_Focal_Loss, line by line, in numpy (elementwise)."""
  p = _np_sigmoid(z)
  ce = _np_bce(z, y)
  p_t = p * y + (1 - p) * (1 - y)
  loss = ce * (1 - p_t) ** gamma
  if alpha >= 0:
    loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
  return loss


def _torchvision_focal(inputs, targets, alpha=0.25, gamma=2.0):
  """torchvision.ops.sigmoid_focal_loss (reduction='none'), transcribed to numpy."""
  p = 1 / (1 + np.exp(-inputs))
  ce_loss = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
  p_t = p * targets + (1 - p) * (1 - targets)
  loss = ce_loss * ((1 - p_t) ** gamma)
  if alpha >= 0:
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    loss = alpha_t * loss
  return loss


def test_sigmoid_focal_loss_matches_vilocal_and_torchvision():
  rng = np.random.default_rng(9)
  logits = rng.normal(scale=3.0, size=(2, 16, 24))
  targets = (rng.random((2, 16, 24)) < 0.3).astype(np.float64)
  z, y = jnp.asarray(logits, jnp.float32), jnp.asarray(targets, jnp.float32)
  np.testing.assert_allclose(float(segmentation.sigmoid_focal_loss(z, y)),
                             _vilocal_focal(logits, targets).mean(), rtol=1e-5)
  for alpha, gamma in ((0.25, 2.0), (0.8, 1.5), (-1.0, 2.0), (0.25, 0.0)):
    np.testing.assert_allclose(float(segmentation.sigmoid_focal_loss(z, y, alpha, gamma)),
                               _torchvision_focal(logits, targets, alpha, gamma).mean(), rtol=1e-5)
  soft = rng.random((2, 16, 24))
  np.testing.assert_allclose(float(segmentation.sigmoid_focal_loss(z, jnp.asarray(soft, jnp.float32))),
                             _vilocal_focal(logits, soft).mean(), rtol=1e-5)
  valid = rng.random((2, 16, 24)) < 0.5
  np.testing.assert_allclose(float(segmentation.sigmoid_focal_loss(z, y, valid=jnp.asarray(valid))),
                             _vilocal_focal(logits, targets)[valid].mean(), rtol=1e-5)


def test_segmentation_losses_are_finite_at_extreme_logits():
  z = np.array([-100.0, 100.0, -100.0, 100.0, 0.0])
  y = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
  logits, targets = jnp.asarray(z[None], jnp.float32), jnp.asarray(y[None], jnp.float32)
  losses = {
      "focal": lambda z: segmentation.sigmoid_focal_loss(z, targets),
      "focal gamma 0.5": lambda z: segmentation.sigmoid_focal_loss(z, targets, gamma=0.5),
      "bce": lambda z: segmentation.binary_cross_entropy_with_logits(z, targets),
      "dice": lambda z: segmentation.dice_loss(z, targets),
      "ce": lambda z: segmentation.softmax_cross_entropy(
          jnp.stack([jnp.zeros_like(z), z], -1), targets.astype(jnp.int32)),
  }
  for name, fn in losses.items():
    value, grad = jax.value_and_grad(fn)(logits)
    assert np.isfinite(float(value)), name
    assert np.all(np.isfinite(np.asarray(grad))), name
  # Saturated wrong predictions cost |z| = 100 (BCE), times alpha_t = 0.5 and (1 - p_t)^gamma = 1.
  for gamma in (2.0, 0.5):
    np.testing.assert_allclose(float(segmentation.sigmoid_focal_loss(logits, targets, gamma=gamma)),
                               _vilocal_focal(z, y, gamma=gamma).mean(), rtol=1e-6)


def test_binary_cross_entropy_and_dice_match_numpy():
  rng = np.random.default_rng(10)
  logits = rng.normal(scale=4.0, size=(3, 8, 8, 1))
  targets = (rng.random((3, 8, 8, 1)) < 0.4).astype(np.float64)
  targets[2] = 0
  z, y = jnp.asarray(logits, jnp.float32), jnp.asarray(targets, jnp.float32)
  np.testing.assert_allclose(float(segmentation.binary_cross_entropy_with_logits(z, y)),
                             _np_bce(logits, targets).mean(), rtol=1e-5)
  valid = np.ones((3, 1, 1, 1), bool)
  valid[1] = False
  np.testing.assert_allclose(
      float(segmentation.binary_cross_entropy_with_logits(z, y, valid=jnp.asarray(valid))),
      _np_bce(logits, targets)[[0, 2]].mean(), rtol=1e-5)
  p = _np_sigmoid(logits)
  axes = (1, 2, 3)
  dice = (2 * np.sum(p * targets, axes) + 1) / (np.sum(p, axes) + np.sum(targets, axes) + 1)
  np.testing.assert_allclose(float(segmentation.dice_loss(z, y)), np.mean(1 - dice), rtol=1e-5)
  np.testing.assert_allclose(float(segmentation.dice_loss(z, y, valid=jnp.asarray(valid))),
                             np.mean(1 - dice[[0, 2]]), rtol=1e-5)
  assert float(segmentation.dice_loss(jnp.full((1, 4, 4), -100.0), jnp.zeros((1, 4, 4)))) < 1e-6
  with pytest.raises(ValueError, match="same shape"):
    segmentation.dice_loss(z, y[..., 0])


def test_softmax_cross_entropy_with_ignore_index_and_class_weights():
  rng = np.random.default_rng(11)
  logits = rng.normal(size=(2, 6, 6, 2))
  labels = rng.integers(0, 2, size=(2, 6, 6))
  labels[:, -2:] = 255
  keep = labels != 255
  safe = np.where(keep, labels, 0)
  nll = _logsumexp(logits, -1) - np.take_along_axis(logits, safe[..., None], -1)[..., 0]
  z, t = jnp.asarray(logits, jnp.float32), jnp.asarray(labels)
  loss_fn = jax.jit(segmentation.softmax_cross_entropy)
  np.testing.assert_allclose(float(loss_fn(z, t)), nll[keep].mean(), rtol=1e-5)
  weights = np.array([0.5, 2.5])
  w = weights[safe] * keep
  np.testing.assert_allclose(
      float(segmentation.softmax_cross_entropy(z, t, class_weights=jnp.asarray(weights))),
      np.sum(w * nll) / np.sum(w), rtol=1e-5)
  image_logits = rng.normal(size=(4, 2))
  image_labels = np.array([0, 1, 1, 0])
  image_nll = _logsumexp(image_logits, -1) - image_logits[np.arange(4), image_labels]
  image_loss = segmentation.softmax_cross_entropy(
      jnp.asarray(image_logits, jnp.float32), jnp.asarray(image_labels), valid=jnp.array([1, 1, 0, 1]))
  np.testing.assert_allclose(float(image_loss), image_nll[[0, 1, 3]].mean(), rtol=1e-5)
  assert float(segmentation.softmax_cross_entropy(z, jnp.full((2, 6, 6), 255))) == 0.0
  assert np.isnan(float(segmentation.softmax_cross_entropy(z, t.at[0, 0, 0].set(3))))
