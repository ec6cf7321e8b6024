"""The ViT / MAE pieces Delocate is built from: patchify round trip, masked tokens invisible to the MAE, the masked
MSE, the localizer's shapes, and the whole-face recovery using each pass's targets."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.nn import vit
from delocate_jax import face_regions
from delocate_jax import model as model_lib

MAE_KW = dict(patch=8, dim=32, depth=1, num_heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2, mlp_ratio=2.0)


def test_patchify_round_trip_and_layout():
  x = jnp.arange(2 * 16 * 24 * 3, dtype=jnp.float32).reshape(2, 16, 24, 3)
  p = vit.patchify(x, 8)
  assert p.shape == (2, 6, 192)
  np.testing.assert_array_equal(p[0, 4], x[0, 8:16, 8:16].reshape(-1))  # row-major patches
  np.testing.assert_array_equal(vit.unpatchify(p, 8, (2, 3)), x)
  with pytest.raises(ValueError, match="not divisible"):
    vit.patchify(x[:, :15], 8)


def test_mae_predictions_do_not_see_masked_patches():
  mae = nnx.view(vit.MAE(rngs=nnx.Rngs(0), **MAE_KW), deterministic=True, raise_if_not_found=False)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(2, 32, 32, 3)), jnp.float32)
  mask = np.zeros((2, 16), bool)
  mask[0, [0, 5, 6, 15]] = True
  mask[1, [1, 2, 3, 4]] = True
  pred = mae(images, jnp.asarray(mask), 4)
  assert pred.shape == (2, 16, 8 * 8 * 3)
  changed = np.array(vit.patchify(images, 8))
  changed[mask] += 5.0  # new content in the masked patches only
  changed = vit.unpatchify(jnp.asarray(changed), 8, (4, 4))
  np.testing.assert_allclose(mae(changed, jnp.asarray(mask), 4), pred, atol=1e-5)
  visible = np.array(vit.patchify(images, 8))
  visible[~mask] += 5.0
  assert not np.allclose(mae(vit.unpatchify(jnp.asarray(visible), 8, (4, 4)), jnp.asarray(mask), 4), pred, atol=1e-3)


def test_masked_patch_mse_reads_masked_patches_only():
  images = jnp.zeros((2, 16, 16, 3))
  pred = jnp.ones((2, 4, 8 * 8 * 3)).at[:, 0].set(3.0)
  mask = jnp.array([[True, False, False, False], [False, True, False, False]])
  assert float(vit.masked_patch_mse(pred, images, mask, 8)) == pytest.approx((9.0 + 1.0) / 2)
  np.testing.assert_allclose(vit.masked_patch_mse(pred, images, mask, 8, per_sample=True), [9.0, 1.0])


def test_localizer_shapes_and_recovery():
  net = model_lib.Delocate(mae=MAE_KW, localizer=dict(patch=8, dim=32, depth=1, num_heads=2,
                                                      decoder_channels=(16, 8, 8), skip_channels=4),
                           rngs=nnx.Rngs(0))
  images = jnp.asarray(np.random.default_rng(0).normal(size=(3, 32, 32, 3)), jnp.float32)
  roi = face_regions.roi_token_masks(face_regions.geometry_rois(), 32, 32, 8).reshape(1, 6, 16)
  recovery = net.recover(images, jnp.asarray(roi), 12, 2, jax.random.key(0))
  assert recovery.shape == images.shape and np.all(np.isfinite(recovery))
  out = net.localize(images, recovery)
  assert out["mask_logits"].shape == (3, 32, 32) and out["logit"].shape == (3,)
  with pytest.raises(ValueError, match="log2"):
    model_lib.Localizer(patch=8, dim=32, depth=1, num_heads=2, decoder_channels=(16, 8), rngs=nnx.Rngs(0))
