"""SafePaint (hnucdy/SafePaint, `networks.py`) in Flax NNX, channels-last.

Two-stage inpainting generator ("complete, then adjust"), the domain-pattern extractor and the 30x30
spectral-norm PatchGAN discriminator. Shapes are for an [B, H, W, 3] image in [0, 1] and an [B, H, W, 1]
hole mask (1 = hole), H and W multiples of 4 and at least 64 (the extractor's five stride-2 valid convs).
The official code is fixed at 256x256 (the background code is expanded to a hard-coded 256x256 map); here
the code is broadcast to the input size, which is the same at 256.

* `StageGenerator` (coarse: 4 input channels, no RWSA; fine: 20 input channels with RWSA after the middle
  blocks and after each up-sampling; `InpaintGenerator(attention=...)` selects the ablations 'global' and 'none'): reflect-pad 7x7 conv, two 4x4 s2 convs (InstanceNorm without affine,
  ReLU), `residual_blocks` dilated residual blocks, two 4x4 s2 transposed convs, reflect-pad 7x7 conv to 3
  channels, `(tanh + 1) / 2`. `width` is the official 64.
* `RWSA` (class `RASC`): three channel attentions on the whole map, gated by Gaussian-softened resampled
  hole / background masks; a conv-BN-ELU block on the hole path only; 1x1 fuser over [B + S, F].
* `StyleEncoder`: five 3x3 s2 valid partial convolutions (BatchNorm on 2-4), global average (including
  invalid positions, as AdaptiveAvgPool2d), 1x1 conv to a `style_dim` code [B, style_dim].
* `Discriminator`: 4x4 convs 64-128-256 (s2) -512-1 (s1), all padding 1, no bias, spectral norm with one
  power iteration per train-mode call (PyTorch `spectral_norm`; u and v are `BatchStat`s); returns logits
  [B, h, w] (the official sigmoid is applied by the losses / `probabilities`).

Initialisation as `BaseNetwork.init_weights`: conv, transposed-conv and linear weights N(0, 0.02), zero
biases, BatchNorm scales N(1, 0.02). Attribute names follow the PyTorch modules (the converter's rename
table maps the Sequential indices).
"""
from __future__ import annotations

from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from common.nn.resnet import ResLayer

INIT = nnx.initializers.normal(0.02)
_DN = ("NHWC", "HWIO", "NHWC")


def conv(cin: int, cout: int, k: int, *, stride: int = 1, padding: int = 0, dilation: int = 1,
         use_bias: bool = True, dtype=None, rngs: nnx.Rngs) -> nnx.Conv:
  """`nn.Conv2d` with explicit symmetric zero padding and the official N(0, 0.02) / zero-bias init."""
  return nnx.Conv(cin, cout, (k, k), strides=stride, padding=[(padding, padding)] * 2, kernel_dilation=dilation,
                  use_bias=use_bias, kernel_init=INIT, bias_init=nnx.initializers.zeros, dtype=dtype, rngs=rngs)


def batch_norm(c: int, *, dtype=None, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """`nn.BatchNorm2d` (eps 1e-5, torch momentum 0.1) with the official N(1, 0.02) scale init."""
  return nnx.BatchNorm(c, momentum=0.9, epsilon=1e-5, use_fast_variance=False, dtype=dtype,
                       scale_init=lambda key, shape, dtype=jnp.float32: 1.0 + INIT(key, shape, dtype), rngs=rngs)


def linear(cin: int, cout: int, *, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(cin, cout, kernel_init=INIT, bias_init=nnx.initializers.zeros, rngs=rngs)


def reflect_pad(x: jax.Array, p: int) -> jax.Array:
  """`nn.ReflectionPad2d(p)` on [B, H, W, C]."""
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """`nn.InstanceNorm2d(affine=False)`: per-sample, per-channel over H, W, biased variance."""
  xf = x.astype(jnp.float32)
  mean = xf.mean((1, 2), keepdims=True)
  var = jnp.square(xf - mean).mean((1, 2), keepdims=True)
  return ((xf - mean) * lax.rsqrt(var + eps)).astype(x.dtype)


def to_unit(x: jax.Array) -> jax.Array:
  """The generators' output activation `(tanh(x) + 1) / 2`, in float32."""
  return (jnp.tanh(x.astype(jnp.float32)) + 1.0) / 2.0


class ConvTranspose2d(nnx.Module):
  """`nn.ConvTranspose2d(cin, cout, k, stride, padding)`: [B, H, W, cin] -> [B, (H-1)s - 2p + k, ..., cout].

  The kernel is stored [k, k, cout, cin] (PyTorch's [cin, cout, k, k] through the 'conv' transpose) and run
  as a correlation of the stride-dilated input with the spatially flipped kernel, padded k - 1 - p.
  """
  TORCH_PARAMS = {"kernel": ("weight", "conv"), "bias": ("bias", "identity")}

  def __init__(self, cin: int, cout: int, k: int = 4, stride: int = 2, padding: int = 1, *, dtype=None,
               rngs: nnx.Rngs):
    self.kernel = nnx.Param(INIT(rngs.params(), (k, k, cout, cin)))
    self.bias = nnx.Param(jnp.zeros((cout,)))
    self.stride, self.padding, self.dtype = stride, padding, dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel.shape[0]
    q = k - 1 - self.padding
    dtype = self.dtype or x.dtype
    rhs = jnp.flip(self.kernel[...], (0, 1)).swapaxes(2, 3).astype(dtype)
    y = lax.conv_general_dilated(x.astype(dtype), rhs, (1, 1), [(q, q)] * 2, lhs_dilation=(self.stride,) * 2,
                                 dimension_numbers=_DN)
    return y + self.bias[...].astype(dtype)


class ResnetBlock(nnx.Module):
  """x + IN(conv3x3(pad1(ReLU(IN(conv3x3_dil(pad_d(x))))))), no ReLU after the sum: [B, H, W, C] -> same."""

  def __init__(self, dim: int, dilation: int = 2, *, dtype=None, rngs: nnx.Rngs):
    self.conv1 = conv(dim, dim, 3, dilation=dilation, dtype=dtype, rngs=rngs)
    self.conv2 = conv(dim, dim, 3, dtype=dtype, rngs=rngs)
    self.dilation = dilation

  def __call__(self, x: jax.Array) -> jax.Array:
    h = nnx.relu(instance_norm(self.conv1(reflect_pad(x, self.dilation))))
    return x + instance_norm(self.conv2(reflect_pad(h, 1)))


class Encoder(nnx.Module):
  """reflect-pad 3, 7x7 conv -> 4x4 s2 -> 4x4 s2, each IN + ReLU: [B, H, W, cin] -> [B, H/4, W/4, 4w]."""

  def __init__(self, cin: int, width: int, *, dtype=None, rngs: nnx.Rngs):
    self.conv1 = conv(cin, width, 7, dtype=dtype, rngs=rngs)
    self.conv2 = conv(width, 2 * width, 4, stride=2, padding=1, dtype=dtype, rngs=rngs)
    self.conv3 = conv(2 * width, 4 * width, 4, stride=2, padding=1, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(instance_norm(self.conv1(reflect_pad(x, 3))))
    x = nnx.relu(instance_norm(self.conv2(x)))
    return nnx.relu(instance_norm(self.conv3(x)))


def gaussian_kernel(size: int = 5, sigma: float = 1.0) -> np.ndarray:
  """`GaussianSmoothing(1, size, sigma)`'s [size, size] kernel: prod over axes of exp(-((t - mu) / (2 sigma))^2),
  normalised to sum 1 (the official exponent, i.e. an effective sigma of sqrt(2) * sigma)."""
  t = np.arange(size, dtype=np.float32)
  g = np.exp(-(((t - (size - 1) / 2) / (2 * sigma)) ** 2)) / (sigma * np.sqrt(2 * np.pi))
  kernel = np.outer(g, g)
  return (kernel / kernel.sum()).astype(np.float32)


class GlobalAttention(nnx.Module):
  """`GlobalAttentionModule`: x * sigmoid(fc2(ReLU(fc1([avg(x), max(x)])))) over the whole map, per channel."""

  def __init__(self, c: int, reduction: int = 16, *, rngs: nnx.Rngs):
    self.fc1 = linear(2 * c, c // reduction, rngs=rngs)
    self.fc2 = linear(c // reduction, c, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = jnp.concatenate([x.mean((1, 2)), x.max((1, 2))], -1)
    return x * jax.nn.sigmoid(self.fc2(nnx.relu(self.fc1(pooled))))[:, None, None, :].astype(x.dtype)


class BasicLearningBlock(nnx.Module):
  """ELU(BN(conv3x3(ELU(BN(conv3x3(x)))))) with C -> 2C -> C channels, convs without bias."""

  def __init__(self, c: int, *, dtype=None, rngs: nnx.Rngs):
    self.rconv1 = conv(c, 2 * c, 3, padding=1, use_bias=False, dtype=dtype, rngs=rngs)
    self.rbn1 = batch_norm(2 * c, dtype=dtype, rngs=rngs)
    self.rconv2 = conv(2 * c, c, 3, padding=1, use_bias=False, dtype=dtype, rngs=rngs)
    self.rbn2 = batch_norm(c, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.elu(self.rbn2(self.rconv2(nnx.elu(self.rbn1(self.rconv1(x))))))


def resample_mask(mask: jax.Array, size: int) -> jax.Array:
  """RWSA's mask resampling: [B, Hm, Wm, 1] -> round(avg_pool(kernel 2, stride Hm // size)) at `size` rows
  (rounding half to even, as torch.round); unchanged when Hm == size."""
  hm = mask.shape[1]
  if hm == size:
    return mask
  s = hm // size
  pooled = lax.reduce_window(mask, 0.0, lax.add, (1, 2, 2, 1), (1, s, s, 1), "VALID") / 4.0
  if pooled.shape[1] != size:
    raise ValueError(f"RWSA: a {hm}-row mask pools to {pooled.shape[1]} rows, not the feature's {size}")
  return jnp.round(pooled)


class RWSA(nnx.Module):
  """Region-wise separated attention (`RASC`): F [B, h, w, C], mask [B, Hm, Wm, 1] (1 = hole) -> [B, h, w, C].

  out = fuser([A_bg(F) * G(1 - M_s) + (Block(A_spl(F)) + A_mix(F)) * G(M_s), F]), M_s the resampled mask and
  G the fixed 5x5 smoothing on its reflect-padded map.

  `separated=False` (the 'global' ablation) removes the region-wise separation and keeps the parameters: both
  gates are 1 everywhere, so every position gets A_bg(F) + Block(A_spl(F)) + A_mix(F) (the mask is not read).
  """

  def __init__(self, c: int, reduction: int = 16, *, separated: bool = True, dtype=None, rngs: nnx.Rngs):
    self.separated = bool(separated)
    self.connection = BasicLearningBlock(c, dtype=dtype, rngs=rngs)
    self.background_attention = GlobalAttention(c, reduction, rngs=rngs)
    self.mixed_attention = GlobalAttention(c, reduction, rngs=rngs)
    self.spliced_attention = GlobalAttention(c, reduction, rngs=rngs)
    self.fuser = conv(2 * c, c, 1, dtype=dtype, rngs=rngs)

  def soft_masks(self, mask: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """(smoothed hole mask, smoothed background mask), each [B, size, size', 1]."""
    m = resample_mask(mask.astype(jnp.float32), size)
    kernel = jnp.asarray(gaussian_kernel())[:, :, None, None]
    smooth = lambda x: lax.conv_general_dilated(reflect_pad(x, 2), kernel, (1, 1), "VALID", dimension_numbers=_DN,
                                                precision=lax.Precision.HIGHEST)
    return smooth(m), smooth(1.0 - m)

  def __call__(self, feature: jax.Array, mask: jax.Array) -> jax.Array:
    if not self.separated:
      mixed = (self.background_attention(feature) + self.connection(self.spliced_attention(feature))
               + self.mixed_attention(feature))
      return self.fuser(jnp.concatenate([mixed, feature], -1))
    soft, soft_reverse = self.soft_masks(mask, feature.shape[1])
    soft, soft_reverse = soft.astype(feature.dtype), soft_reverse.astype(feature.dtype)
    background = self.background_attention(feature) * soft_reverse
    spliced = (self.connection(self.spliced_attention(feature)) + self.mixed_attention(feature)) * soft
    return self.fuser(jnp.concatenate([background + spliced, feature], -1))


ATTENTIONS = ("rwsa", "global", "none")


class StageGenerator(nnx.Module):
  """`CoarseGenerator` (`attention=False` / 'none') or `FineGenerator` (`attention=True` / 'rwsa': RWSA at H/4,
  H/2 and H; 'global': the same blocks without the region-wise separation, `RWSA(separated=False)`):
  [B, H, W, cin] (and the [B, H, W, 1] mask for the fine stage) -> [B, H, W, 3] in [0, 1]."""

  def __init__(self, cin: int, *, width: int = 64, residual_blocks: int = 8, attention: bool | str = False,
               reduction: int = 16, dtype=None, rngs: nnx.Rngs):
    kind = ("rwsa" if attention else "none") if isinstance(attention, bool) else attention
    if kind not in ATTENTIONS:
      raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    w = width
    self.encoder = Encoder(cin, w, dtype=dtype, rngs=rngs)
    self.middle = ResLayer({str(i): ResnetBlock(4 * w, 2, dtype=dtype, rngs=rngs) for i in range(residual_blocks)})
    att = lambda c: (RWSA(c, reduction, separated=kind == "rwsa", dtype=dtype, rngs=rngs) if kind != "none"
                     else None)
    self.att1 = att(4 * w)
    self.deconv1 = ConvTranspose2d(4 * w, 2 * w, dtype=dtype, rngs=rngs)
    self.att2 = att(2 * w)
    self.deconv2 = ConvTranspose2d(2 * w, w, dtype=dtype, rngs=rngs)
    self.att3 = att(w)
    self.deconv3 = conv(w, 3, 7, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    attend = (lambda a, h: a(h, mask)) if self.att1 is not None else (lambda a, h: h)
    x = attend(self.att1, self.middle(self.encoder(x)))
    x = attend(self.att2, nnx.relu(instance_norm(self.deconv1(x))))
    x = attend(self.att3, nnx.relu(instance_norm(self.deconv2(x))))
    return to_unit(self.deconv3(reflect_pad(x, 3)))


class PartialConv2d(nnx.Module):
  """NVIDIA `PartialConv2d` (single-channel mask), 3x3 stride 2, no padding.

  x [B, H, W, cin], mask [B, H, W, 1] -> (out [B, H', W', cout], updated mask [B, H', W', 1]), H' = (H - 3) // 2 + 1:
  update = sum of the mask in the window; out = conv(x * mask) * 9 / update where update > 0 (bias kept
  outside the rescaling and zeroed where update = 0); the new mask is clip(update, 0, 1).
  """
  TORCH_PARAMS = {"kernel": ("weight", "conv"), "bias": ("bias", "identity")}

  def __init__(self, cin: int, cout: int, *, use_bias: bool, dtype=None, rngs: nnx.Rngs):
    self.kernel = nnx.Param(INIT(rngs.params(), (3, 3, cin, cout)))
    self.bias = nnx.Param(jnp.zeros((cout,))) if use_bias else None
    self.dtype = dtype

  def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    dtype = self.dtype or x.dtype
    window = lambda a, k: lax.conv_general_dilated(a, k, (2, 2), "VALID", dimension_numbers=_DN)
    update = window(mask.astype(jnp.float32), jnp.ones((3, 3, 1, 1), jnp.float32))
    ratio = 9.0 / (update + 1e-8)
    update = jnp.clip(update, 0.0, 1.0)
    ratio = (ratio * update).astype(dtype)
    raw = window((x * mask).astype(dtype), self.kernel[...].astype(dtype))
    if self.bias is None:
      return raw * ratio, update
    return (raw * ratio + self.bias[...].astype(dtype)) * update.astype(dtype), update


class StyleEncoder(nnx.Module):
  """The domain-pattern extractor: image [B, H, W, 3], validity mask [B, H, W, 1] (1 = region described) ->
  code [B, style_dim]. Five unpadded stride-2 3x3 convolutions: H and W must be at least `MIN_SIZE` (63; a 32 px
  input leaves conv5f an empty map, whose mean is NaN)."""
  MIN_SIZE = 63

  def __init__(self, style_dim: int = 16, width: int = 64, *, dtype=None, rngs: nnx.Rngs):
    w = width
    self.conv1f = PartialConv2d(3, w, use_bias=True, dtype=dtype, rngs=rngs)
    self.conv2f = PartialConv2d(w, 2 * w, use_bias=False, dtype=dtype, rngs=rngs)
    self.norm2f = batch_norm(2 * w, dtype=dtype, rngs=rngs)
    self.conv3f = PartialConv2d(2 * w, 4 * w, use_bias=False, dtype=dtype, rngs=rngs)
    self.norm3f = batch_norm(4 * w, dtype=dtype, rngs=rngs)
    self.conv4f = PartialConv2d(4 * w, 8 * w, use_bias=False, dtype=dtype, rngs=rngs)
    self.norm4f = batch_norm(8 * w, dtype=dtype, rngs=rngs)
    self.conv5f = PartialConv2d(8 * w, 8 * w, use_bias=False, dtype=dtype, rngs=rngs)
    self.convs = conv(8 * w, style_dim, 1, dtype=dtype, rngs=rngs)

  def head(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The first three stages (conv1f .. relu3): ([B, H3, W3, 4w], mask [B, H3, W3, 1])."""
    x, mask = self.conv1f(x, mask)
    x, mask = self.conv2f(nnx.relu(x), mask)
    x, mask = self.conv3f(nnx.relu(self.norm2f(x)), mask)
    return nnx.relu(self.norm3f(x)), mask

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    x, mask = self.head(x, mask)
    x, mask = self.conv4f(x, mask)
    x, _ = self.conv5f(nnx.relu(self.norm4f(x)), mask)
    return self.convs(x.mean((1, 2), keepdims=True))[:, 0, 0, :]


class GeneratorOutputs(NamedTuple):
  """Images [B, H, W, 3] in [0, 1] and codes [B, style_dim]."""
  coarse: jax.Array      # O1, the raw stage-1 output
  refined: jax.Array     # O2, the raw stage-2 output
  composite1: jax.Array  # C1 = O1 * M + I * (1 - M)
  composite2: jax.Array  # C2 = I * (1 - M) + O2 * M, the inpainted image
  z_background: jax.Array = None  # E(I, 1 - M)
  z_real: jax.Array = None        # E(I, M)
  z_coarse: jax.Array = None      # E(C1, M) (computed, as officially, but unused by the losses)
  z_refined: jax.Array = None     # E(C2, M)


class InpaintGenerator(nnx.Module):
  """`InpaintGenerator`: coarse stage, background code, fine stage with RWSA.

  `attention` is the fine stage's attention: 'rwsa' (the paper's), 'global' (the RWSA blocks without the
  region-wise separation) or 'none' (no attention blocks: the fine stage has the coarse stage's layout).
  """

  def __init__(self, *, width: int = 64, residual_blocks: int = 8, style_dim: int = 16, extractor_width: int = 64,
               attention_reduction: int = 16, attention: str = "rwsa", dtype=None, rngs: nnx.Rngs):
    self.coarse_generator = StageGenerator(4, width=width, residual_blocks=residual_blocks, dtype=dtype, rngs=rngs)
    self.fine_generator = StageGenerator(4 + style_dim, width=width, residual_blocks=residual_blocks,
                                         attention=attention, reduction=attention_reduction, dtype=dtype, rngs=rngs)
    self.extractor = StyleEncoder(style_dim, extractor_width, dtype=dtype, rngs=rngs)

  @classmethod
  def from_config(cls, config=None, *, dtype=None, rngs: nnx.Rngs) -> "InpaintGenerator":
    """The generator of `config.model` (configs/safepaint.py; a missing field, or no config: the official value)."""
    m = config.model if config is not None else {}
    return cls(width=m.get("width", 64), residual_blocks=m.get("residual_blocks", 8),
               style_dim=m.get("style_dim", 16), extractor_width=m.get("extractor_width", 64),
               attention_reduction=m.get("attention_reduction", 16), attention=m.get("attention", "rwsa"),
               dtype=dtype, rngs=rngs)

  def __call__(self, images: jax.Array, masks: jax.Array, *, codes: bool = True) -> GeneratorOutputs:
    """images [B, H, W, 3] in [0, 1], masks [B, H, W, 1] (1 = hole). `codes=False` skips the three foreground
    codes (inference: they only feed the domain loss)."""
    m = masks.astype(images.dtype)
    known = images * (1 - m)
    o1 = self.coarse_generator(jnp.concatenate([known + m, m], -1))
    c1 = o1 * m + known
    z_b = self.extractor(images, 1 - m)
    style = jnp.broadcast_to(z_b[:, None, None, :].astype(images.dtype), (*images.shape[:3], z_b.shape[-1]))
    o2 = self.fine_generator(jnp.concatenate([c1, m, style], -1), m)
    c2 = known + o2 * m
    if not codes:
      return GeneratorOutputs(o1, o2, c1, c2, z_b)
    return GeneratorOutputs(o1, o2, c1, c2, z_b, self.extractor(images, m), self.extractor(c1, m),
                            self.extractor(c2, m))


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x), eps)


class SpectralNormConv(nnx.Module):
  """`spectral_norm(nn.Conv2d(cin, cout, 4, stride, 1, bias=False))`: [B, H, W, cin] -> [B, H', W', cout].

  W_mat = weight_orig as [cout, cin*k*k] (PyTorch's O, I, H, W order). In train mode (`use_running_average`
  False) one power iteration updates v = normalize(W_mat^T u), u = normalize(W_mat v) (no gradient) before
  each call; sigma = u . W_mat v; the conv uses weight_orig / sigma. Eval mode uses the stored u, v.
  """
  TORCH_PARAMS = {"kernel": ("weight_orig", "conv"), "u": ("weight_u", "identity"), "v": ("weight_v", "identity")}

  def __init__(self, cin: int, cout: int, stride: int, *, k: int = 4, dtype=None, rngs: nnx.Rngs):
    self.kernel = nnx.Param(INIT(rngs.params(), (k, k, cin, cout)))
    self.u = nnx.BatchStat(_l2_normalize(jax.random.normal(rngs.params(), (cout,))))
    self.v = nnx.BatchStat(_l2_normalize(jax.random.normal(rngs.params(), (cin * k * k,))))
    self.stride, self.dtype = stride, dtype
    self.use_running_average = False

  def set_view(self, use_running_average: bool | None = None):
    if use_running_average is not None:
      self.use_running_average = use_running_average

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.kernel[...]
    w_mat = kernel.transpose(3, 2, 0, 1).reshape(kernel.shape[3], -1)
    u, v = self.u[...], self.v[...]
    if not self.use_running_average:
      w_const = lax.stop_gradient(w_mat)
      v = _l2_normalize(jnp.dot(w_const.T, u, precision=lax.Precision.HIGHEST))
      u = _l2_normalize(jnp.dot(w_const, v, precision=lax.Precision.HIGHEST))
      self.u[...], self.v[...] = u, v
    sigma = jnp.dot(u, jnp.dot(w_mat, v, precision=lax.Precision.HIGHEST), precision=lax.Precision.HIGHEST)
    dtype = self.dtype or x.dtype
    return lax.conv_general_dilated(x.astype(dtype), (kernel / sigma).astype(dtype), (self.stride,) * 2,
                                    [(1, 1), (1, 1)], dimension_numbers=_DN)


class Discriminator(nnx.Module):
  """PatchGAN: [B, H, W, 3] -> logits [B, H/8 - 2, W/8 - 2] (30x30 at 256)."""

  def __init__(self, in_channels: int = 3, width: int = 64, *, dtype=None, rngs: nnx.Rngs):
    w = width
    self.conv1 = SpectralNormConv(in_channels, w, 2, dtype=dtype, rngs=rngs)
    self.conv2 = SpectralNormConv(w, 2 * w, 2, dtype=dtype, rngs=rngs)
    self.conv3 = SpectralNormConv(2 * w, 4 * w, 2, dtype=dtype, rngs=rngs)
    self.conv4 = SpectralNormConv(4 * w, 8 * w, 1, dtype=dtype, rngs=rngs)
    self.conv5 = SpectralNormConv(8 * w, 1, 1, dtype=dtype, rngs=rngs)

  @classmethod
  def from_config(cls, config=None, *, dtype=None, rngs: nnx.Rngs) -> "Discriminator":
    """The discriminator of `config.model.disc_width` (no config: the official width 64)."""
    width = config.model.get("disc_width", 64) if config is not None else 64
    return cls(3, width, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in (self.conv1, self.conv2, self.conv3, self.conv4):
      x = nnx.leaky_relu(layer(x), 0.2)
    return self.conv5(x)[..., 0].astype(jnp.float32)
