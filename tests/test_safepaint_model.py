"""SafePaint against the official PyTorch outputs (tests/testdata/golden/safepaint_*.npz): components, the whole
generator (one residual block per stage at 64x64; the official 8 blocks at 256x256, slow) and the discriminator,
loaded through the converter; the converter against the full official key lists; shapes."""
import json
import os
import re
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import ml_collections
from flax import nnx

from common.nn import torch_port
from common.train.task import eval_view, train_view
from safepaint_jax import convert
from safepaint_jax import model as model_lib

GOLDEN = os.path.join(os.path.dirname(__file__), "testdata", "golden")


def load(name):
  with np.load(os.path.join(GOLDEN, name), allow_pickle=False) as f:
    return dict(f)


def params(golden, prefix):
  return torch_port.strip_prefix({k[len("param/"):]: v for k, v in golden.items() if k.startswith("param/")}, prefix)


def nhwc(x):
  return jnp.asarray(np.transpose(x, (0, 2, 3, 1)))


def rel_err(ours, theirs):
  ours = np.transpose(np.asarray(ours), (0, 3, 1, 2))
  return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


def rbg(seed=0):
  """Rngs on 'rbg' keys: XLA CPU compiles their initialisers ~5x faster than threefry's."""
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def jit_build(build):
  """`build()` with its initialisers run under jit (eager initialisation compiles one kernel per shape)."""
  graphdef, _ = nnx.split(nnx.eval_shape(build))
  return nnx.merge(graphdef, jax.jit(lambda: nnx.state(build()))())


def loaded(build, state_dict, **kw):
  module, report = torch_port.init_from_torch(build, state_dict, **kw)
  return eval_view(module), report


def test_rwsa_matches_official_on_all_three_mask_resamplings():
  g = load("safepaint_rwsa.npz")
  sd = params(g, "fine_generator.att3.")
  assert convert.check_gaussian_buffers(sd) == ["gaussianMask.weight"]
  rwsa, report = loaded(lambda: model_lib.RWSA(64, rngs=nnx.Rngs(0)), sd, rename=convert.GENERATOR_RENAME,
                        ignore=torch_port.DEFAULT_IGNORE + (convert.GAUSSIAN,))
  assert not report.missing and not report.unused
  for case in "abc":
    feature, mask = nhwc(g[f"input/feature_{case}"]), nhwc(g[f"input/mask_{case}"])
    soft, soft_reverse = rwsa.soft_masks(mask, feature.shape[1])
    assert rel_err(soft, g[f"inter/soft_mask_{case}"]) < 1e-6
    assert rel_err(soft_reverse, g[f"inter/soft_reverse_mask_{case}"]) < 1e-6
    err = rel_err(rwsa(feature, mask), g[f"output/out_{case}"])
    print(f"RWSA case {case}: rel err {err:.2e}")
    assert err < 1e-4, case


def test_gaussian_buffer_check_rejects_a_textbook_gaussian():
  t = np.arange(5) - 2.0
  textbook = np.outer(np.exp(-t ** 2 / 2), np.exp(-t ** 2 / 2))
  with pytest.raises(ValueError, match="gaussianMask"):
    convert.check_gaussian_buffers({"att1.gaussianMask.weight": (textbook / textbook.sum())[None, None]})


def test_residual_block_matches_official():
  g = load("safepaint_resblock.npz")
  block, _ = loaded(lambda: model_lib.ResnetBlock(256, 2, rngs=nnx.Rngs(0)),
                    params(g, "coarse_generator.middle.0."), rename=convert.GENERATOR_RENAME)
  err = rel_err(block(nhwc(g["input/x"])), g["output/out"])
  print(f"residual block: rel err {err:.2e}")
  assert err < 1e-4


def extractor_head(g):
  """The extractor with the golden's first three stages loaded (the later stages are not in the file)."""
  extractor = jit_build(lambda: model_lib.StyleEncoder(16, rngs=rbg()))
  report = torch_port.load_torch_state_dict(extractor, params(g, "extractor."), strict=False)
  assert not report.unused and all(k.startswith(("conv4f", "conv5f", "norm4f", "convs")) for k in report.missing)
  return eval_view(extractor)


def test_extractor_head_matches_official():
  g = load("safepaint_extractor_head.npz")
  extractor = extractor_head(g)
  features, mask = extractor.head(nhwc(g["input/image"]), nhwc(g["input/valid_mask"]))
  np.testing.assert_array_equal(np.transpose(np.asarray(mask), (0, 3, 1, 2)), g["output/mask"])
  err = rel_err(features, g["output/features"])
  print(f"extractor head: rel err {err:.2e}")
  assert err < 1e-4


def test_extractor_head_fails_without_the_partial_rescaling():
  """The parity test can fail: a plain conv (no 9/update rescaling) is far off."""
  g = load("safepaint_extractor_head.npz")
  extractor = extractor_head(g)
  ones = jnp.ones_like(nhwc(g["input/valid_mask"]))
  features, _ = extractor.head(nhwc(g["input/image"]) * nhwc(g["input/valid_mask"]), ones)
  assert rel_err(features, g["output/features"]) > 1e-2


def key_list(name):
  with open(os.path.join(GOLDEN, name)) as f:
    return json.load(f)["state_dict"]


def random_state_dict(entries, seed=0):
  rng = np.random.default_rng(seed)
  sd = {}
  for e in entries:
    if e.get("alias_of"):
      continue
    if e["dtype"] == "int64":
      sd[e["key"]] = np.zeros(e["shape"], np.int64)
    elif e["key"].endswith("gaussianMask.weight"):
      sd[e["key"]] = model_lib.gaussian_kernel()[None, None]
    else:
      sd[e["key"]] = rng.standard_normal(e["shape"]).astype(np.float32)
  for e in entries:
    if e.get("alias_of"):
      sd[e["key"]] = sd[e["alias_of"]]
  return sd


def test_converter_consumes_every_official_generator_key():
  entries = key_list("safepaint_generator_keys.json")
  sd = random_state_dict(entries)
  generator, report = convert.from_torch_state_dict({"iteration": 10, "generator": sd})
  gaussians = [k for k in sd if k.endswith("gaussianMask.weight")]
  counters = [k for k in sd if k.endswith("num_batches_tracked")]
  assert len(gaussians) == 3 and len(counters) == 9
  assert sorted(report.loaded + report.ignored) == sorted(sd) and not report.missing and not report.unused
  assert sorted(report.ignored) == sorted(gaussians + counters)
  n = sum(int(np.prod(e["shape"])) for e in entries if e["kind"] == "parameter")
  assert sum(x.size for x in jax.tree.leaves(nnx.state(generator, nnx.Param))) == n == 28_840_298
  # Layouts: a transposed conv ([in, out, k, k] -> [k, k, out, in]) and a Linear.
  np.testing.assert_array_equal(generator.fine_generator.deconv1.kernel[...],
                                np.transpose(sd["fine_generator.deconv1.weight"], (2, 3, 1, 0)))
  np.testing.assert_array_equal(generator.fine_generator.att2.mixed_attention.fc2.kernel[...],
                                sd["fine_generator.att2.mixed_attention.fc.2.weight"].T)
  np.testing.assert_array_equal(generator.coarse_generator.deconv3.kernel[...],
                                np.transpose(sd["coarse_generator.decoder.7.weight"], (2, 3, 1, 0)))


def test_converter_consumes_every_official_discriminator_key_and_checks_aliases():
  entries = key_list("safepaint_discriminator_keys.json")
  sd = random_state_dict(entries)
  disc, report = convert.discriminator_from_torch_state_dict({"discriminator": sd})
  aliases = [e["key"] for e in entries if e.get("alias_of")]
  assert sorted(report.ignored) == sorted(aliases) and len(report.loaded) == 15
  assert not report.missing and not report.unused
  np.testing.assert_array_equal(disc.conv3.v[...], sd["conv3.0.weight_v"])
  broken = dict(sd, **{"features.0.weight_orig": sd["conv1.0.weight_orig"] + 1})
  with pytest.raises(ValueError, match="alias"):
    convert.discriminator_from_torch_state_dict(broken)
  with pytest.raises(ValueError, match="conv5"):
    convert.discriminator_from_torch_state_dict({k: v for k, v in sd.items() if not k.startswith("conv5")})


def test_spectral_norm_power_iteration_matches_numpy():
  """Train mode: one power iteration (v then u) before the conv, weight / sigma; eval: stored u, v."""
  layer = model_lib.SpectralNormConv(3, 8, 2, rngs=nnx.Rngs(1))
  w = np.asarray(layer.kernel[...]).transpose(3, 2, 0, 1).reshape(8, -1)
  u0, v0 = np.asarray(layer.u[...]), np.asarray(layer.v[...])
  v = w.T @ u0
  v /= np.linalg.norm(v)
  u = w @ v
  u /= np.linalg.norm(u)
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  frozen = nnx.jit(lambda m, x: m(x))(eval_view(layer), x)
  y = nnx.jit(lambda m, x: m(x))(train_view(layer), x)
  np.testing.assert_allclose(layer.u[...], u, rtol=1e-5)
  np.testing.assert_allclose(layer.v[...], v, rtol=1e-5)
  sigma0, sigma = u0 @ w @ v0, u @ w @ v
  np.testing.assert_allclose(np.asarray(y) * sigma, np.asarray(frozen) * sigma0, rtol=2e-4, atol=1e-5)


def test_full_generator_and_discriminator_shapes_at_64():
  gen = jit_build(lambda: model_lib.InpaintGenerator(width=8, residual_blocks=1, extractor_width=8,
                                                     attention_reduction=4, rngs=rbg()))
  disc = jit_build(lambda: model_lib.Discriminator(3, 8, rngs=rbg(1)))
  images = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3))
  masks = jnp.zeros((2, 64, 64, 1)).at[:, 20:40, 10:30].set(1.0)

  @nnx.jit
  def forward(gen, disc, images, masks):
    out = gen(images, masks)
    return out, disc(out.refined)

  out, logits = forward(train_view(gen), train_view(disc), images, masks)
  assert out.coarse.shape == out.composite2.shape == (2, 64, 64, 3)
  assert out.z_refined.shape == (2, 16)
  np.testing.assert_array_equal(out.composite2[:, :20], images[:, :20])  # the known pixels are kept
  assert float(out.refined.min()) >= 0 and float(out.refined.max()) <= 1
  assert logits.shape == (2, 6, 6)


def test_transposed_conv_matches_the_pytorch_definition():
  """nn.ConvTranspose2d(k4, s2, p1): out[i*s - p + a, j*s - p + b, o] += x[i, j, c] * W[c, o, a, b] + bias."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((1, 5, 6, 3)).astype(np.float32)
  w = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)  # PyTorch [in, out, k, k]
  bias = rng.standard_normal(2).astype(np.float32)
  layer, _ = loaded(lambda: model_lib.ConvTranspose2d(3, 2, rngs=rbg()), {"weight": w, "bias": bias})
  full = np.zeros((1, 5 * 2 + 2, 6 * 2 + 2, 2), np.float32)  # before cropping p = 1 on each side
  for i in range(5):
    for j in range(6):
      full[0, 2 * i:2 * i + 4, 2 * j:2 * j + 4] += np.einsum("c,coab->abo", x[0, i, j], w)
  want = full[:, 1:-1, 1:-1] + bias
  np.testing.assert_allclose(layer(jnp.asarray(x)), want, rtol=1e-5, atol=1e-5)


# --- whole-model goldens: official weights drawn by a seeded recipe (not stored: 28.8 M / 2.8 M parameters) ------


def recipe_value(key, shape, seed=0):
  """The goldens' weight recipe (manifest.json `weights`): each entry from its own seeded stream, float64 -> float32."""
  rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
  name, shape = key.rsplit(".", 1)[-1], tuple(shape)
  if name == "running_mean":
    v = rng.standard_normal(shape) * 0.1
  elif name == "running_var":
    v = rng.uniform(0.5, 1.5, shape)
  elif name == "bias":
    v = rng.standard_normal(shape) * 0.1
  elif len(shape) == 1:
    v = rng.uniform(0.5, 1.5, shape)
  else:
    v = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
  return v.astype(np.float32)


def recipe_state_dict(golden, entries, seed=0):
  """The state_dict the golden's official model ran with, for these key-list entries; checked against the file's
  per-key checksums (a changed numpy stream fails here, not as a parity error)."""
  sd, spectral = {}, []
  for e in entries:
    key = e["key"]
    if e.get("alias_of") or key.endswith(("weight_u", "weight_v")):
      spectral += [key] if key.endswith("weight_u") and not e.get("alias_of") else []
    elif e["dtype"] == "int64":
      sd[key] = np.zeros(e["shape"], np.int64)
    elif key.endswith("gaussianMask.weight"):
      sd[key] = golden["param/" + key]
    else:
      sd[key] = recipe_value(key, e["shape"], seed)
  for key in spectral:  # one power iteration from a seeded u: v = W^T u / |.|, u = W v / |.| (float64)
    base = key[:-len("weight_u")]
    w = sd[base + "weight_orig"].astype(np.float64)
    w = w.reshape(w.shape[0], -1)
    u = np.random.default_rng([seed, zlib.crc32(key.encode())]).standard_normal(w.shape[0])
    v = w.T @ (u / np.linalg.norm(u))
    v /= np.linalg.norm(v)
    u = w @ v
    sd[key], sd[base + "weight_v"] = (u / np.linalg.norm(u)).astype(np.float32), v.astype(np.float32)
  for e in entries:
    if e.get("alias_of"):
      sd[e["key"]] = sd[e["alias_of"]]
  keys = [str(k) for k in golden["recipe/keys"]]
  assert sorted(keys) == sorted(k for k in sd if not k.endswith(("num_batches_tracked", "gaussianMask.weight"))
                                and not re.match(r"features\.0\.", k))
  ours = np.array([[sd[k].astype(np.float64).sum(), (sd[k].astype(np.float64) ** 2).sum()] for k in keys])
  np.testing.assert_allclose(ours, golden["recipe/checksum"], rtol=1e-9, err_msg="weight recipe drifted")
  return sd


def thin_entries():
  """The official generator's keys with one residual block per stage (`middle.0` only)."""
  return [e for e in key_list("safepaint_generator_keys.json") if not re.search(r"\.middle\.[1-9]\.", e["key"])]


def generator_errors(g, out, sub_and_pool=False):
  if sub_and_pool:
    pool = lambda x: x.reshape(x.shape[0], x.shape[1] // 4, 4, x.shape[2] // 4, 4, x.shape[3]).mean((2, 4))
    images = {f"{name}_{kind}": f(np.asarray(image, np.float64)) for name, image in (("stage1", out.coarse),
                                                                                    ("stage2", out.refined))
              for kind, f in (("sub4", lambda x: x[:, 1::4, 2::4]), ("pool4", pool))}
  else:
    images = {"stage1": out.coarse, "stage2": out.refined}
  errors = {name: rel_err(image, g[f"output/{name}"]) for name, image in images.items()}
  codes = {"bg_code": out.z_background, "real_fg_code": out.z_real, "coarse_fg_code": out.z_coarse,
           "refine_fg_code": out.z_refined}
  for name, code in codes.items():
    theirs = g[f"output/{name}"].reshape(code.shape)
    errors[name] = float(np.linalg.norm(np.asarray(code) - theirs) / np.linalg.norm(theirs))
  return errors


def test_thin_generator_matches_the_official_forward():
  """InpaintGenerator with one residual block per stage, at 64x64: coarse and refined images and the four domain
  codes, against the official CoarseGenerator / FineGenerator / StyleEncoder run through InpaintGenerator.forward."""
  g = load("safepaint_generator_thin.npz")
  sd = recipe_state_dict(g, thin_entries())
  config = ml_collections.ConfigDict({"model": {"residual_blocks": 1}})
  generator, report = convert.from_torch_state_dict(sd, config)
  assert not report.missing and not report.unused
  images, masks = nhwc(g["input/image"]), nhwc(g["input/mask"])
  with jax.default_matmul_precision("highest"):
    out = nnx.jit(lambda m, x, k: m(x, k))(eval_view(generator), images, masks)
  errors = generator_errors(g, out)
  print("thin generator rel errors", errors)
  assert all(err < 1e-4 for err in errors.values()), errors
  np.testing.assert_array_equal(np.asarray(out.composite2)[np.asarray(masks)[..., 0] == 0],
                                np.asarray(images)[np.asarray(masks)[..., 0] == 0])


def test_thin_generator_parity_fails_with_a_wrong_mask_resampling(monkeypatch):
  """The parity test can fail: RWSA's mask resampled by nearest pick instead of avg_pool + round is far off."""
  g = load("safepaint_generator_thin.npz")
  generator, _ = convert.from_torch_state_dict(recipe_state_dict(g, thin_entries()),
                                               ml_collections.ConfigDict({"model": {"residual_blocks": 1}}))
  monkeypatch.setattr(model_lib, "resample_mask", lambda m, size: m[:, ::m.shape[1] // size, ::m.shape[1] // size])
  with jax.default_matmul_precision("highest"):
    out = nnx.jit(lambda m, x, k: m(x, k))(eval_view(generator), nhwc(g["input/image"]), nhwc(g["input/mask"]))
  assert generator_errors(g, out)["stage2"] > 1e-3


@pytest.mark.slow  # the official size: 28.8 M parameters at 256x256 (26 s on 2 busy CPU cores)
def test_full_generator_matches_the_official_forward_at_256():
  g = load("safepaint_generator_full.npz")
  generator, report = convert.from_torch_state_dict(
      {"generator": recipe_state_dict(g, key_list("safepaint_generator_keys.json"))})
  assert not report.missing and not report.unused
  images = nhwc(g["input/image_uint8"].astype(np.float32) / 255)
  masks = nhwc(g["input/mask_uint8"].astype(np.float32))
  with jax.default_matmul_precision("highest"):
    out = nnx.jit(lambda m, x, k: m(x, k))(eval_view(generator), images, masks)
  errors = generator_errors(g, out, sub_and_pool=True)
  print("full generator rel errors", errors)
  assert all(err < 1e-4 for err in errors.values()), errors


def test_discriminator_matches_official():
  """Discriminator(3) in eval mode (stored u, v): logits, sigmoid probabilities and the conv3 features."""
  g = load("safepaint_discriminator.npz")
  disc, report = convert.discriminator_from_torch_state_dict(
      recipe_state_dict(g, key_list("safepaint_discriminator_keys.json")))
  assert not report.missing and not report.unused

  def forward(d, x):
    h = x
    features = []
    for layer in (d.conv1, d.conv2, d.conv3, d.conv4):
      h = nnx.leaky_relu(layer(h), 0.2)
      features.append(h)
    return d(x), features[2]

  with jax.default_matmul_precision("highest"):
    logits, conv3 = nnx.jit(forward)(eval_view(disc), nhwc(g["input/image"]))
  errors = {"logits": rel_err(logits[..., None], g["output/logits"]),
            "probs": rel_err(jax.nn.sigmoid(logits)[..., None], g["output/probs"]),
            "conv3": rel_err(conv3, g["inter/conv3"])}
  print("discriminator rel errors", errors)
  assert all(err < 1e-4 for err in errors.values()), errors
