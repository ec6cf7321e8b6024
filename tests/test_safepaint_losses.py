"""SafePaint's loss pieces: hole-normalised L1, the official degenerate triplet, GAN terms, perceptual / style
(Gram) losses, the torchvision VGG converter, and the image-quality metrics against scikit-image."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from common import image_quality
from common.losses import gan, perceptual
from common.nn import vgg as vgg_lib
from safepaint_jax import losses


def test_hole_l1_divides_the_full_image_l1_by_the_batch_hole_fraction():
  rng = np.random.default_rng(0)
  out, target = rng.random((2, 8, 8, 3), np.float32), rng.random((2, 8, 8, 3), np.float32)
  masks = np.zeros((2, 8, 8, 1), np.float32)
  masks[0, :4] = 1  # hole fraction 0.25 over the batch
  np.testing.assert_allclose(losses.hole_l1(out, target, masks), np.abs(out - target).mean() / 0.25, rtol=1e-6)


def test_official_triplet_is_l1_plus_margin_and_pulls_both_codes():
  a, p = jax.random.normal(jax.random.key(0), (2, 3, 16))
  np.testing.assert_allclose(losses.code_distance(a, p), np.abs(np.asarray(a - p)).mean() + 0.1, rtol=1e-5)
  ga, gp = jax.grad(losses.code_distance, argnums=(0, 1))(a, p)
  np.testing.assert_allclose(ga, -gp, rtol=1e-6)
  assert float(jnp.abs(ga).min()) > 0
  np.testing.assert_allclose(losses.code_distance(a, p, "l2"), np.linalg.norm(a - p, axis=-1).mean(), rtol=1e-5)
  total = losses.domain_loss(a, p, a, weight=0.01, real_weight=1.0, background_weight=2.0)
  np.testing.assert_allclose(total, 0.01 * 3 * (np.abs(np.asarray(a - p)).mean() + 0.1), rtol=1e-5)
  with pytest.raises(ValueError, match="domain loss mode"):
    losses.code_distance(a, p, "kl")


def test_gan_terms_match_bce_on_sigmoid_outputs():
  logits = jnp.array([[-2.0, 0.5], [1.0, 3.0]])
  p = 1 / (1 + np.exp(-np.asarray(logits)))
  np.testing.assert_allclose(gan.discriminator_term(logits, True), -np.log(p).mean(), rtol=1e-6)
  np.testing.assert_allclose(gan.discriminator_term(logits, False), -np.log(1 - p).mean(), rtol=1e-6)
  np.testing.assert_allclose(gan.discriminator_loss(logits, -logits), -np.log(p).mean(), rtol=1e-6)
  np.testing.assert_allclose(gan.generator_term(logits), -np.log(p).mean(), rtol=1e-6)
  np.testing.assert_allclose(gan.discriminator_term(logits, True, "hinge"), np.maximum(1 - logits, 0).mean())
  np.testing.assert_allclose(gan.generator_term(logits, "lsgan"), np.square(p - 1).mean(), rtol=1e-6)
  with pytest.raises(ValueError, match="GAN loss"):
    gan.generator_term(logits, "wgan")


def test_gram_and_style_and_perceptual_losses():
  rng = np.random.default_rng(1)
  fx = {"a": rng.standard_normal((2, 4, 5, 3)).astype(np.float32), "b": rng.standard_normal((2, 2, 2, 6)).astype(np.float32)}
  fy = {k: v + 0.1 * rng.standard_normal(v.shape).astype(np.float32) for k, v in fx.items()}
  flat = fx["a"].reshape(2, 20, 3)
  np.testing.assert_allclose(perceptual.gram(fx["a"]), np.einsum("bnc,bnd->bcd", flat, flat) / 60, rtol=1e-5)
  want = sum(np.abs(np.asarray(perceptual.gram(fx[k]) - perceptual.gram(fy[k]))).mean() for k in "ab")
  np.testing.assert_allclose(perceptual.style_loss(fx, fy, ("a", "b")), want, rtol=1e-5)
  np.testing.assert_allclose(perceptual.perceptual_loss(fx, fy, ("a", "b"), (1.0, 2.0)),
                             np.abs(fx["a"] - fy["a"]).mean() + 2 * np.abs(fx["b"] - fy["b"]).mean(), rtol=1e-5)


@pytest.mark.parametrize("arch,convs", [("vgg16", 13), ("vgg19", 16)])
def test_vgg_loads_a_torchvision_state_dict_and_taps_named_relus(arch, convs, tmp_path):
  plan = vgg_lib.layer_plan(arch)
  rng = np.random.default_rng(0)
  sd, cin = {}, 3
  widths = iter(w for w, d in zip(vgg_lib.BLOCK_WIDTHS, vgg_lib.BLOCK_DEPTHS[arch]) for _ in range(d))
  for index, _ in plan:
    if index != "pool":
      cout = next(widths)
      sd[f"features.{index}.weight"] = 0.05 * rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
      sd[f"features.{index}.bias"] = rng.standard_normal(cout).astype(np.float32)
      cin = cout
  assert len(sd) == 2 * convs
  sd["classifier.0.weight"] = np.zeros((4, 25088), np.float32)
  model, report = vgg_lib.from_torch_state_dict(sd, arch)
  assert report.ignored == ["classifier.0.weight"] and not report.missing
  x = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3))
  out = model(x, ("relu1_1", "relu2_2", "relu5_2"))
  # relu1_1 is torchvision features[1]: ReLU(conv0(x)).
  ref = jax.lax.conv_general_dilated(x, jnp.transpose(sd["features.0.weight"], (2, 3, 1, 0)), (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + sd["features.0.bias"]
  np.testing.assert_allclose(out["relu1_1"], jax.nn.relu(ref), rtol=1e-5, atol=1e-5)
  assert out["relu2_2"].shape == (1, 16, 16, 128) and out["relu5_2"].shape == (1, 2, 2, 512)
  with pytest.raises(ValueError, match="relu3_4" if arch == "vgg16" else "relu6_1"):
    model(x, ("relu3_4" if arch == "vgg16" else "relu6_1",))
  with pytest.raises(ValueError, match="features.0.bias"):
    vgg_lib.from_torch_state_dict({k: v for k, v in sd.items() if k != "features.0.bias"}, arch)
  if arch == "vgg16":  # a torch-free .npz with the state_dict's keys loads the same; a VGG19 file is refused
    path = str(tmp_path / "vgg.npz")
    np.savez(path, **sd)
    np.testing.assert_array_equal(vgg_lib.load(path, arch).features["28"].kernel[...],
                                  np.transpose(sd["features.28.weight"], (2, 3, 1, 0)))
    with pytest.raises(ValueError, match="not a torchvision vgg19"):
      vgg_lib.load(path, "vgg19")


def test_psnr_ssim_l1_match_references():
  rng = np.random.default_rng(2)
  x = rng.random((2, 32, 40, 3)).astype(np.float32)
  y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
  mse = ((x - y) ** 2).mean((1, 2, 3))
  np.testing.assert_allclose(image_quality.psnr(x, y), 10 * np.log10(1 / mse), rtol=1e-5)
  np.testing.assert_allclose(image_quality.l1(x, y), np.abs(x - y).mean((1, 2, 3)), rtol=1e-5)
  want = [structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=1.0, channel_axis=-1) for a, b in zip(x, y)]
  np.testing.assert_allclose(image_quality.ssim(x, y), want, rtol=1e-4)
  np.testing.assert_allclose(image_quality.ssim(x, x), 1.0, rtol=1e-6)
