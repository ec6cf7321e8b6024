"""UniFormer blocks and the ViLocal encoder: PyTorch parity on the golden tensors, key coverage of
the official checkpoints, the 2-D variant, train-mode randomness, remat and attention switches."""
import json
import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.nn import layers
from common.nn import torch_port
from common.nn import uniformer
from common.nn.uniformer import PatchSpec

GOLDEN = os.path.join(os.path.dirname(__file__), "testdata", "golden")
VILOCAL_RENAME = ((r"^Res_", ""),)  # ViLocal's `Res_blocks1.0...` -> our `blocks1.0...`
TOL = 1e-4


def _rel_err(ours, golden):
  ours = np.asarray(ours, np.float64)
  assert ours.shape == golden.shape, (ours.shape, golden.shape)
  return float(np.linalg.norm(ours - golden) / np.linalg.norm(golden))


def _to_channels_last(x):
  return np.moveaxis(x, 1, -1)


def _golden(name):
  data = np.load(os.path.join(GOLDEN, name), allow_pickle=False)
  params = {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}
  return data, params


def _eval(module):
  return nnx.view(module, deterministic=True, use_running_average=True, raise_if_not_found=False)


@jax.jit
def _apply(module, x):
  return module(x)


# --- UniFormer (Sense-X video) blocks -------------------------------------------------------------

VIDEO_BLOCKS = {
    "patch_embed1": lambda: uniformer.PatchEmbed(
        3, 64, PatchSpec((3, 4, 4), (2, 4, 4), (1, 0, 0)), rngs=nnx.Rngs(0)),
    "blocks1.0": lambda: uniformer.CBlock(64, spatial_dims=3, rngs=nnx.Rngs(0)),
    "patch_embed3": lambda: uniformer.PatchEmbed(
        128, 320, PatchSpec((1, 2, 2), (1, 2, 2)), rngs=nnx.Rngs(0)),
    "blocks3.0": lambda: uniformer.SABlock(320, 5, spatial_dims=3, norm_eps=1e-6,
                                           rngs=nnx.Rngs(0)),
}


@pytest.fixture(scope="module")
def video_blocks():
  return _golden("uniformer_video_blocks.npz")


@pytest.mark.parametrize("name", list(VIDEO_BLOCKS))
def test_video_block_matches_golden(video_blocks, name):
  data, params = video_blocks
  module, report = torch_port.init_from_torch(
      VIDEO_BLOCKS[name], torch_port.strip_prefix(params, name + "."))
  assert not report.missing and not report.unused
  io_name = name.replace(".", "_")
  x = jnp.asarray(_to_channels_last(data["input/" + io_name]))
  with jax.default_matmul_precision("highest"):
    y = _apply(_eval(module), x)
  err = _rel_err(y, _to_channels_last(data["output/" + io_name]))
  print(f"uniformer_video_blocks {name}: rel err {err:.2e}")
  assert err < TOL


def test_video_golden_keys_are_uniformer_small_keys(video_blocks):
  """Every key of the golden file is a key (with its shape) of our full UniFormer-S."""
  _, params = video_blocks
  model = nnx.eval_shape(lambda: uniformer.UniFormer(**uniformer.uniformer_video_config("small"),
                                                     rngs=nnx.Rngs(0)))
  slots = torch_port.torch_slots(model)
  for key, value in params.items():
    if key.endswith("num_batches_tracked"):
      continue
    assert key in slots, key
    axes = torch_port.torch_to_flax_axes(slots[key].layout, value.ndim)
    assert tuple(np.transpose(value, axes).shape) == slots[key].shape, key
  all_keys = set(slots)
  used = {k for k in params if not k.endswith("num_batches_tracked")}
  assert used <= all_keys


@pytest.mark.parametrize("config, expected_millions, tolerance", [
    (uniformer.uniformer_video_config("small"), 21.4, 0.05),  # spec §3.3, K400 head
    (uniformer.uniformer_image_config("small"), 22, 0.5),  # UniFormer paper, ImageNet head
])
def test_published_variant_sizes(config, expected_millions, tolerance):
  """Parameter counts of the named configurations."""
  model = nnx.eval_shape(lambda: uniformer.UniFormer(**config, rngs=nnx.Rngs(0)))
  count = sum(np.prod(v.shape) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert abs(count / 1e6 - expected_millions) < tolerance, count


def _slice_center_time(params):
  """3-D block weights -> the 2-D block that a T=1 input sees (centre temporal tap of each conv)."""
  out = {}
  for key, value in params.items():
    if value.ndim == 5:
      value = value[:, :, value.shape[2] // 2]
    out[key] = value
  return out


@pytest.mark.parametrize("name, build_2d", [
    ("blocks1.0", lambda: uniformer.CBlock(64, spatial_dims=2, rngs=nnx.Rngs(0))),
    ("blocks3.0", lambda: uniformer.SABlock(320, 5, spatial_dims=2, norm_eps=1e-6,
                                            rngs=nnx.Rngs(0))),
    ("patch_embed3", lambda: uniformer.PatchEmbed(128, 320, PatchSpec((2, 2), (2, 2)),
                                                  rngs=nnx.Rngs(0))),
])
def test_2d_block_equals_3d_block_on_one_frame(video_blocks, name, build_2d):
  """With T=1 and zero temporal padding a 3-D block only uses its centre temporal taps, so the 2-D
  block built from those taps must give the same output (checks the 2-D code path)."""
  data, params = video_blocks
  params = torch_port.strip_prefix(params, name + ".")
  block3d, _ = torch_port.init_from_torch(VIDEO_BLOCKS[name], params)
  block2d, _ = torch_port.init_from_torch(build_2d, _slice_center_time(params))
  x = _to_channels_last(data["input/" + name.replace(".", "_")])[:, :1]  # [1, 1, H, W, C]
  with jax.default_matmul_precision("highest"):
    y3 = _apply(_eval(block3d), jnp.asarray(x))
    y2 = _apply(_eval(block2d), jnp.asarray(x[:, 0]))
  np.testing.assert_allclose(np.asarray(y2), np.asarray(y3)[:, 0], rtol=1e-5, atol=1e-5)


def test_image_uniformer_forward_shapes():
  model = nnx.eval_shape(lambda: uniformer.UniFormer(
      **uniformer.uniformer_image_config("small", num_classes=10), rngs=nnx.Rngs(0)))
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  stages = jax.eval_shape(lambda m, x: m.forward_stages(x), _eval(model), x)
  assert [s.shape for s in stages] == [(2, 16, 16, 64), (2, 8, 8, 128), (2, 4, 4, 320),
                                       (2, 2, 2, 512)]
  assert jax.eval_shape(lambda m, x: m(x), _eval(model), x).shape == (2, 10)


# --- ViLocal encoder ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vilocal():
  data, params = _golden("vilocal_small.npz")
  build = lambda: uniformer.UniFormer(**uniformer.vilocal_encoder_config((2, 2, 1, 1)),
                                      rngs=nnx.Rngs(0))
  encoder, report = torch_port.init_from_torch(
      build, torch_port.strip_prefix(params, "encoder."), rename=VILOCAL_RENAME)
  return data, params, encoder, report


class _ViLocalDecoder(nnx.Module):
  """ViLocal's `Decoder.classifier`: 1x1 conv 256->128, BN, ReLU, 1x1 conv 128->1."""

  def __init__(self, rngs):
    self.classifier = nnx.Dict({
        "0": layers.torch_conv(256, 128, (1, 1), rngs=rngs),
        "1": layers.torch_batch_norm(128, rngs=rngs),
        "3": layers.torch_conv(128, 1, (1, 1), rngs=rngs)})

  def __call__(self, x):
    c = self.classifier
    return c["3"](jax.nn.relu(c["1"](c["0"](x))))


def test_vilocal_matches_golden(vilocal):
  """HP3D + encoder stages + T squeeze, then the 1x1-conv decoder and the x4 align_corners upsample."""
  data, params, encoder, _ = vilocal
  decoder, _ = torch_port.init_from_torch(
      lambda: _ViLocalDecoder(nnx.Rngs(0)), torch_port.strip_prefix(params, "decoder."))
  x = jnp.asarray(_to_channels_last(data["input/frames"]))
  h, w = x.shape[2:4]

  @jax.jit
  def forward(enc, dec, x):
    features = enc(x)
    logits = dec(features)
    return (enc.forward_stages(x)[:3], features, logits,
            layers.resize_bilinear_align_corners(logits, (h, w)))

  with jax.default_matmul_precision("highest"):
    stages, features, small_logits, logits = forward(_eval(encoder), _eval(decoder), x)
  outputs = dict(zip(["stage1_out", "stage2_out", "stage3_out"], stages))
  outputs.update(encoder_out=features, decoder_logits=small_logits)
  errors = {name: _rel_err(out, _to_channels_last(data["inter/" + name]))
            for name, out in outputs.items()}
  errors["logits"] = _rel_err(logits, _to_channels_last(data["output/logits"]))
  print("vilocal_small rel errors:", {k: f"{v:.2e}" for k, v in errors.items()})
  assert all(e < TOL for e in errors.values()), errors


def test_vilocal_bfloat16_compute(vilocal):
  """Mixed precision: float32 parameters, bfloat16 compute, close to the float32 golden."""
  data, params, _, _ = vilocal
  cfg = dict(uniformer.vilocal_encoder_config((2, 2, 1, 1)), dtype=jnp.bfloat16)
  encoder, _ = torch_port.init_from_torch(lambda: uniformer.UniFormer(**cfg, rngs=nnx.Rngs(0)),
                                          torch_port.strip_prefix(params, "encoder."),
                                          rename=VILOCAL_RENAME)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(encoder, nnx.Param)))
  y = _apply(_eval(encoder), jnp.asarray(_to_channels_last(data["input/frames"])))
  assert y.dtype == jnp.bfloat16
  err = _rel_err(y.astype(jnp.float32), _to_channels_last(data["inter/encoder_out"]))
  print(f"vilocal_small encoder_out bfloat16 rel err {err:.2e}")
  assert err < 5e-2


def test_vilocal_golden_keys_all_consumed(vilocal):
  _, params, _, encoder_report = vilocal
  assert not encoder_report.missing and not encoder_report.unused
  decoder = nnx.eval_shape(lambda: _ViLocalDecoder(nnx.Rngs(0)))
  decoder_report = torch_port.load_torch_state_dict(decoder,
                                                    torch_port.strip_prefix(params, "decoder."))
  consumed = {"encoder." + k for k in encoder_report.loaded + encoder_report.ignored}
  consumed |= {"decoder." + k for k in decoder_report.loaded + decoder_report.ignored}
  assert consumed == set(params)
  assert all(k.endswith("num_batches_tracked")
             for k in encoder_report.ignored + decoder_report.ignored)


@pytest.fixture(scope="module")
def vilocal_full_abstract():
  return nnx.eval_shape(lambda: uniformer.UniFormer(**uniformer.vilocal_encoder_config(),
                                                    rngs=nnx.Rngs(0)))


def test_vilocal_full_encoder_keys_and_size(vilocal_full_abstract):
  """Our full-size encoder has exactly the released checkpoint's encoder keys and shapes."""
  with open(os.path.join(GOLDEN, "vilocal_full_keys.json")) as f:
    entries = json.load(f)["state_dict"]
  expected = {e["key"][len("encoder."):]: tuple(e["shape"]) for e in entries
              if e["key"].startswith("encoder.") and not e["key"].endswith("num_batches_tracked")}
  model = vilocal_full_abstract
  slots = torch_port.torch_slots(model)
  renamed = torch_port.rename_keys(expected, VILOCAL_RENAME)
  assert set(renamed.values()) == set(slots)
  for key, shape in expected.items():
    slot = slots[renamed[key]]
    axes = torch_port.torch_to_flax_axes(slot.layout, len(shape))
    assert tuple(shape[a] for a in axes) == slot.shape, key
  n_params = sum(np.prod(v.shape) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert n_params == 11_239_424  # spec §1.4


def test_vilocal_state_is_exportable_and_filter_free():
  """String keys only in the pure-dict state (jax.export / Orbax), and no fixed filter in it."""
  model = nnx.eval_shape(lambda: uniformer.UniFormer(**uniformer.vilocal_encoder_config((2, 2, 1, 1)),
                                                     rngs=nnx.Rngs(0)))

  def keys(tree, prefix=()):
    for k, v in tree.items():
      assert isinstance(k, str), prefix + (k,)
      if isinstance(v, dict):
        yield from keys(v, prefix + (k,))
      else:
        yield prefix + (k,)

  paths = list(keys(nnx.to_pure_dict(nnx.state(model))))
  assert ("blocks1", "0", "attn", "kernel") in paths
  assert not any(p[0] == "srm_layer" for p in paths)


def test_vilocal_shapes_full_resolution_and_squeeze_check(vilocal_full_abstract):
  """240x432 clips of 5 frames give the spec's [B, 60, 108, 256]; a final T > 1 is refused."""
  model = vilocal_full_abstract
  out = jax.eval_shape(lambda m, x: m(x), _eval(model),
                       jax.ShapeDtypeStruct((2, 5, 240, 432, 3), jnp.float32))
  assert out.shape == (2, 60, 108, 256)
  with pytest.raises(ValueError, match="final temporal size of 1"):
    jax.eval_shape(lambda m, x: m(x), _eval(model),
                   jax.ShapeDtypeStruct((1, 17, 16, 16, 3), jnp.float32))


def _random_torch_state(build, seed=0):
  """Random PyTorch-layout arrays for every Param/BatchStat of `build()` (positive running_var)."""
  rng = np.random.default_rng(seed)
  state = {}
  for key, slot in torch_port.torch_slots(nnx.eval_shape(build)).items():
    axes = torch_port.torch_to_flax_axes(slot.layout, len(slot.shape))
    shape = tuple(slot.shape[axes.index(i)] for i in range(len(axes)))
    low = 0.5 if key.endswith("running_var") else -0.5
    state[key] = rng.uniform(low, low + 1.0, shape).astype(np.float32)
  return state


def test_train_mode_is_random_and_remat_is_exact():
  """Dropout, attention dropout and drop path draw from the 'dropout' stream in train mode (the
  loss changes with its seed); remat of the attention blocks changes neither the loss nor the
  gradients. BatchNorm uses running statistics here, so that only the
  stochastic layers differ between the runs. The dropout stream uses 'rbg' keys: threefry random
  bits take XLA:CPU ~1 s each to compile, which made this test several minutes long."""
  cfg = dict(depth=(1, 1, 1, 1), embed_dim=(8, 8, 16, 16), head_dim=8,
             patch_specs=uniformer.vilocal_encoder_config()["patch_specs"], drop_rate=0.3,
             attn_drop_rate=0.2, drop_path_rate=0.3, stage_norms="per_stage", squeeze_time=True,
             input_filter="hp3d", init="torch")

  def build(seed, remat):
    dropout_key = jax.random.key(seed, impl="rbg")
    return lambda: uniformer.UniFormer(**cfg, remat=remat,
                                       rngs=nnx.Rngs(params=0, dropout=dropout_key))

  weights = _random_torch_state(build(0, False))
  x = jax.random.uniform(jax.random.key(0), (2, 5, 8, 8, 3))
  target = jax.random.normal(jax.random.key(1), (2, 2, 2, 16))

  @jax.jit
  def step(model, x):
    model = nnx.view(model, use_running_average=True)
    loss_fn = lambda m: jnp.mean((m(x) - target) ** 2)
    return nnx.value_and_grad(loss_fn)(model)

  def run(seed, remat):
    model, _ = torch_port.init_from_torch(build(seed, remat), weights)
    loss, grads = step(model, x)
    return float(loss), nnx.to_pure_dict(grads)

  loss_a, grads_a = run(1, remat=False)
  loss_b, grads_b = run(1, remat=True)
  loss_c, _ = run(2, remat=False)
  assert loss_a == pytest.approx(loss_b, rel=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               grads_a, grads_b)
  assert abs(loss_a - loss_c) > 1e-3 * loss_a


def test_fused_attention_layout_matches_einsum():
  """The 'cudnn' switch calls jax.nn.dot_product_attention on our [B, N, heads, head_dim] layout;
  its XLA implementation must agree with the einsum path (cuDNN itself needs a GPU)."""
  q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 40, 4, 16))
  ref, out = jax.jit(lambda q, k, v: (
      uniformer.einsum_attention(q, k, v, 0.125),
      uniformer.fused_attention(q, k, v, 0.125, implementation="xla")))(q, k, v)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-6)


def test_cudnn_attention_refuses_attention_dropout(video_blocks):
  _, params = video_blocks
  block, _ = torch_port.init_from_torch(
      lambda: uniformer.SABlock(320, 5, attn_drop=0.2, attention_impl="cudnn", rngs=nnx.Rngs(0)),
      torch_port.strip_prefix(params, "blocks3.0."))
  with pytest.raises(ValueError, match="no attention dropout"):
    jax.eval_shape(lambda m, x: m(x), block, jax.ShapeDtypeStruct((1, 2, 6, 5, 320), jnp.float32))
  with pytest.raises(ValueError, match="attention_impl"):
    uniformer.Attention(64, 1, attention_impl="flash", rngs=nnx.Rngs(0))


def test_chunked_attention_matches_einsum_in_value_and_gradient():
  q, k, v = jax.random.normal(jax.random.key(1), (3, 2, 37, 4, 16))  # 37 tokens: the last chunk is padded

  def loss(fn, q, k, v):
    return jnp.sum(jnp.sin(fn(q, k, v)))

  full = jax.jit(jax.value_and_grad(lambda *a: loss(lambda q, k, v: uniformer.einsum_attention(q, k, v, 0.2), *a),
                                    argnums=(0, 1, 2)))(q, k, v)
  chunked = jax.jit(jax.value_and_grad(
      lambda *a: loss(lambda q, k, v: uniformer.chunked_attention(q, k, v, 0.2, 8), *a), argnums=(0, 1, 2)))(q, k, v)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
               full, chunked)


def test_chunked_attention_bounds_memory_of_the_train_step():
  """Compiled temp memory of value_and_grad at 4096 tokens: O(chunk x N) chunked, O(N^2) plain."""
  x = jax.ShapeDtypeStruct((1, 4096, 2, 32), jnp.float32)

  def temp_bytes(fn):
    grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) ** 2), argnums=(0, 1, 2)))
    return grad.lower(x, x, x).compile().memory_analysis().temp_size_in_bytes

  plain = temp_bytes(lambda q, k, v: uniformer.einsum_attention(q, k, v, 0.2))
  chunked = temp_bytes(lambda q, k, v: uniformer.chunked_attention(q, k, v, 0.2, 512))
  weights = 4096 * 4096 * 2 * 4  # one float32 attention matrix
  assert plain >= weights
  assert chunked < weights and chunked < plain / 4, (plain, chunked)  # measured: 538 MB vs 71 MB


def test_chunked_attention_block_applies_attention_dropout_only_in_train_mode():
  x = jax.random.normal(jax.random.key(2), (2, 1, 4, 6, 64))
  xla = uniformer.SABlock(64, 2, attn_drop=0.5, attention_impl="xla", rngs=nnx.Rngs(0))
  chunked = uniformer.SABlock(64, 2, attn_drop=0.5, attention_impl="chunked", query_chunk=5, rngs=nnx.Rngs(0))
  evaluate = lambda m: nnx.view(m, deterministic=True)(x)
  np.testing.assert_allclose(np.asarray(evaluate(chunked)), np.asarray(evaluate(xla)), rtol=1e-5, atol=1e-6)
  train = nnx.view(chunked, deterministic=False)
  first, second = train(x), train(x)  # the dropout stream advances between calls
  assert not np.allclose(np.asarray(first), np.asarray(evaluate(chunked)), atol=1e-3)
  assert not np.allclose(np.asarray(first), np.asarray(second), atol=1e-3)
