"""Delocate's masked-ROI recovery and MAE loss against numpy references on small inputs.

The method's premise on the demo corpus (after stage 1, the recovery error on the manipulated pixels of FaceSwap
fakes exceeds that on the same pixels of their real crops: `stage1:recovery_ratio` > 1) needs the demo's whole
4000-step stage 1, minutes of CPU, and is a demo figure, not a test: `python -m benchmarks.demo_figures
--method=delocate` regenerates it (benchmarks/RESULTS.md).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.nn import vit
from delocate_jax import face_regions
from delocate_jax import model as model_lib
from tests.test_safepaint_model import jit_build, rbg

PATCH = 8
MAE_KW = dict(patch=PATCH, dim=32, depth=1, num_heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2,
              mlp_ratio=2.0)


def _patches(images, p=PATCH):
  """numpy patchify: [B, H, W, C] -> [B, N, p*p*C], patches row-major, pixels (row, col, channel) inside."""
  b, h, w, c = images.shape
  return np.stack([images[:, i:i + p, j:j + p].reshape(b, -1) for i in range(0, h, p) for j in range(0, w, p)], 1)


def _image(patches, grid, p=PATCH):
  """numpy inverse of `_patches`."""
  b, _, d = patches.shape
  out = np.zeros((b, grid[0] * p, grid[1] * p, d // (p * p)), patches.dtype)
  for t in range(grid[0] * grid[1]):
    i, j = divmod(t, grid[1])
    out[:, i * p:(i + 1) * p, j * p:(j + 1) * p] = patches[:, t].reshape(b, p, p, -1)
  return out


def test_recovery_takes_each_token_from_the_pass_that_masks_it_as_its_target():
  """`Delocate.recover` against a numpy assembly of one MAE call per pass: a token comes from the pass that
  targets it and masks it; a target its pass left visible (its region outnumbers `num_masked`) is the mean over
  the passes that masked it. Also: every pass masks exactly `num_masked` tokens, its targets first."""
  net = jit_build(lambda: model_lib.Delocate(mae=MAE_KW, localizer=dict(patch=PATCH, dim=32, depth=1, num_heads=2,
                                                                        decoder_channels=(16, 8, 8), skip_channels=4),
                                             rngs=rbg(0)))
  net = nnx.view(net, deterministic=True, raise_if_not_found=False)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
  roi = np.zeros((1, 2, 16), np.uint8)
  roi[0, 0, :6] = 1      # region 0: 6 tokens, more than num_masked
  roi[0, 1, 5:9] = 1     # region 1 overlaps token 5, which belongs to region 0's pass
  num_masked, groups, key = 4, 2, jax.random.key(3)
  masks, targets = (np.asarray(a)[:, 0] for a in face_regions.recovery_passes(key, jnp.asarray(roi), num_masked,
                                                                                 groups))  # [P, N]
  assert masks.shape == (2 + groups, 16)
  np.testing.assert_array_equal(targets.sum(0), np.ones(16))             # the targets partition the tokens
  np.testing.assert_array_equal(np.flatnonzero(targets[0]), np.arange(6))
  np.testing.assert_array_equal(np.flatnonzero(targets[1]), [6, 7, 8])
  assert (masks.sum(1) == num_masked).all()
  for m, t in zip(masks, targets):  # targets masked first: all of them, or num_masked of them
    assert (m >= t).all() if t.sum() <= num_masked else (m <= t).all()

  recover = nnx.jit(lambda net, x: net.recover(x, jnp.asarray(roi), num_masked, groups, key))
  mae = nnx.jit(lambda net, x, m: net.mae(x, m, num_masked))  # one MAE call per pass, compiled once
  recovery = np.asarray(recover(net, jnp.asarray(images)))
  preds = np.stack([np.asarray(mae(net, jnp.asarray(images), jnp.asarray(np.broadcast_to(m, (2, 16)))))
                    for m in masks])  # [P, B, N, D]
  expected = np.zeros_like(preds[0])  # a token no pass masks has no prediction: 0
  fallback = 0
  for t in range(16):
    own = np.flatnonzero(masks[:, t] & targets[:, t])
    if own.size:
      expected[:, t] = preds[own[0], :, t]
    elif masks[:, t].any():
      expected[:, t] = preds[masks[:, t], :, t].mean(0)
      fallback += 1
  assert fallback >= 1  # one of region 0's two targets beyond num_masked is masked by a later pass
  np.testing.assert_allclose(recovery, _image(expected, (4, 4)), rtol=1e-4, atol=1e-5)
  assert not np.allclose(recovery, images, atol=0.1)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_masked_patch_mse_matches_numpy(norm_pix):
  """The stage-1 loss: per-patch MSE against the (optionally standardised) target patches, averaged over the
  masked patches, overall and per sample."""
  rng = np.random.default_rng(1)
  images = rng.normal(size=(2, 16, 24, 3)).astype(np.float32)
  pred = rng.normal(size=(2, 6, PATCH * PATCH * 3)).astype(np.float32)
  mask = np.array([[1, 0, 0, 1, 1, 0], [0, 1, 0, 0, 0, 0]], bool)
  target = _patches(images.astype(np.float64))
  if norm_pix:
    target = (target - target.mean(-1, keepdims=True)) / np.sqrt(target.var(-1, keepdims=True) + 1e-6)
  per_patch = ((pred - target) ** 2).mean(-1)
  ours = vit.masked_patch_mse(jnp.asarray(pred), jnp.asarray(images), jnp.asarray(mask), PATCH, norm_pix)
  np.testing.assert_allclose(float(ours), per_patch[mask].mean(), rtol=1e-5)
  per_sample = vit.masked_patch_mse(jnp.asarray(pred), jnp.asarray(images), jnp.asarray(mask), PATCH, norm_pix,
                                    per_sample=True)
  np.testing.assert_allclose(per_sample, [per_patch[0, mask[0]].mean(), per_patch[1, mask[1]].mean()], rtol=1e-5)
