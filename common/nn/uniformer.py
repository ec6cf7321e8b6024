"""UniFormer (Li et al., ICLR 2022) in NNX, for images (2-D) and videos (3-D), channels-last.

One implementation serves both: the number of spatial dimensions comes from the patch-embedding
kernels (`len(PatchSpec.kernel)`), and every block builds its convolutions with that many dims.
Inputs are `[B, H, W, C]` (2-D) or `[B, T, H, W, C]` (3-D).

Blocks follow the official PyTorch modules (Sense-X `image_classification/models/uniformer.py`,
`video_classification/slowfast/models/uniformer.py`, and the mmaction2 copy that ViLocal modified):

* `PatchEmbed`: conv `proj`, then LayerNorm `norm` (eps 1e-5) over channels.
* `CBlock` (local MHRA): `x += pos_embed(x)` (depthwise 3^n conv, the dynamic position encoding),
  `x += drop_path(conv2(attn(conv1(norm1(x)))))` with BatchNorm `norm1` and a depthwise 5^n conv
  `attn`, then `x += drop_path(mlp(norm2(x)))` with a 1x1 conv MLP.
* `SABlock` (global MHRA): `x += pos_embed(x)`, then pre-LN multi-head self-attention over all
  tokens in (t, h, w) row-major order and a pre-LN MLP, each residual with `drop_path`.

Attribute names are the PyTorch module names (`patch_embed1`, `blocks1`, `norm`, ...). Block lists
are `nnx.Dict`s keyed '0', '1', ... so that NNX paths read `blocks1.0.attn.qkv.kernel` (matching the
`state_dict` key `blocks1.0.attn.qkv.weight`) and pure-dict states have string keys only, which
`jax.export` and Orbax handle.

Named configurations: `uniformer_video_config` ('small', 'base'), `uniformer_image_config`
('small', 'base') and `vilocal_encoder_config` (ViLocal's modified 3-D encoder).
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from common.nn import layers
from common.nn import srm

ATTENTION_IMPLS = ("xla", "chunked", "cudnn")
STAGE_NORMS = ("final", "per_stage", "none")
INITS = ("uniformer", "torch")


@dataclasses.dataclass(frozen=True)
class PatchSpec:
  """Kernel, stride and symmetric zero padding of a patch-embedding conv, one entry per spatial dim."""
  kernel: tuple[int, ...]
  stride: tuple[int, ...]
  padding: tuple[int, ...] | None = None

  def __post_init__(self):
    object.__setattr__(self, "kernel", tuple(int(k) for k in self.kernel))
    object.__setattr__(self, "stride", tuple(int(s) for s in self.stride))
    padding = (0,) * len(self.kernel) if self.padding is None else self.padding
    object.__setattr__(self, "padding", tuple(int(p) for p in padding))
    if not len(self.kernel) == len(self.stride) == len(self.padding):
      raise ValueError(f"PatchSpec entries must have equal lengths: {self}")


def _linear_inits(init: str):
  """(kernel_init, bias_init) of Linear layers: PyTorch defaults, or UniFormer's N(0, 0.02) / 0.

  timm's `trunc_normal_(std=.02)` truncates at +-2 in absolute value, i.e. at 100 sigma: a plain normal.
  """
  if init == "torch":
    return None, None
  if init == "uniformer":
    return nnx.initializers.normal(0.02), nnx.initializers.zeros
  raise ValueError(f"init must be one of {INITS}, got {init!r}")


class PatchEmbed(nnx.Module):
  """Patch embedding: strided conv `proj` then LayerNorm `norm` over channels.

  `[B, *S, in_features] -> [B, *S', embed_dim]`, with S' given by the conv arithmetic of `spec`.
  """

  def __init__(self, in_features: int, embed_dim: int, spec: PatchSpec, *, norm_eps: float = 1e-5,
               dtype=None, rngs: nnx.Rngs):
    self.proj = layers.torch_conv(in_features, embed_dim, spec.kernel, stride=spec.stride,
                                  padding=spec.padding, dtype=dtype, rngs=rngs)
    self.norm = layers.torch_layer_norm(embed_dim, eps=norm_eps, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.norm(self.proj(x))


class CMlp(nnx.Module):
  """Conv MLP: 1x1 conv `fc1` -> GELU(exact) -> drop -> 1x1 conv `fc2` -> drop. `[B, *S, C] -> same`."""

  def __init__(self, dim: int, hidden: int, *, spatial_dims: int, drop: float = 0.0, dtype=None,
               rngs: nnx.Rngs):
    one = (1,) * spatial_dims
    self.fc1 = layers.torch_conv(dim, hidden, one, dtype=dtype, rngs=rngs)
    self.fc2 = layers.torch_conv(hidden, dim, one, dtype=dtype, rngs=rngs)
    self.drop = nnx.Dropout(drop, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.drop(layers.gelu(self.fc1(x)))
    return self.drop(self.fc2(x))


class CBlock(nnx.Module):
  """Local MHRA block (convolutional relation aggregator). `[B, *S, dim] -> [B, *S, dim]`."""

  def __init__(self, dim: int, *, spatial_dims: int = 3, mlp_ratio: float = 4.0, drop: float = 0.0,
               drop_path: float = 0.0, dtype=None, rngs: nnx.Rngs):
    n = spatial_dims
    self.pos_embed = layers.torch_conv(dim, dim, (3,) * n, padding=1, groups=dim, dtype=dtype,
                                       rngs=rngs)
    self.norm1 = layers.torch_batch_norm(dim, dtype=dtype, rngs=rngs)
    self.conv1 = layers.torch_conv(dim, dim, (1,) * n, dtype=dtype, rngs=rngs)
    self.conv2 = layers.torch_conv(dim, dim, (1,) * n, dtype=dtype, rngs=rngs)
    self.attn = layers.torch_conv(dim, dim, (5,) * n, padding=2, groups=dim, dtype=dtype, rngs=rngs)
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)
    self.norm2 = layers.torch_batch_norm(dim, dtype=dtype, rngs=rngs)
    self.mlp = CMlp(dim, int(dim * mlp_ratio), spatial_dims=n, drop=drop, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.pos_embed(x)
    x = x + self.drop_path(self.conv2(self.attn(self.conv1(self.norm1(x)))))
    return x + self.drop_path(self.mlp(self.norm2(x)))


class Attention(nnx.Module):
  """Multi-head self-attention over tokens. `[B, N, dim] -> [B, N, dim]`.

  `qkv` output channels are laid out (3, heads, head_dim), as in the reference. Logits are
  `(q @ k^T) * scale` with `scale = qk_scale or head_dim ** -0.5`; the softmax runs in float32.

  attention_impl:
    'xla': plain einsum/softmax attention (exact float32 parity; supports attention dropout).
    'chunked': the same softmax attention over query chunks of `query_chunk` tokens in a `lax.map`,
      each chunk rematerialised in the backward pass: memory O(chunk x N) instead of O(N^2) per head
      (ViLocal's 8100-token stages need ~1 GB per block for the full weights). Attention dropout is
      supported (masks drawn per chunk, so not bit-identical to 'xla' in train mode).
    'cudnn': `jax.nn.dot_product_attention(implementation='cudnn')` (fused flash attention on
      NVIDIA GPUs; bf16/fp16 inputs only). It has no attention dropout, so it raises if
      attention dropout is active (train mode with `attn_drop > 0`).
  """

  def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True,
               qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
               attention_impl: str = "xla", query_chunk: int = 1024, init: str = "uniformer", dtype=None,
               rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
    if attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {attention_impl!r}")
    self.num_heads = num_heads
    self.scale = float(qk_scale or (dim // num_heads) ** -0.5)
    self.attention_impl = attention_impl
    self.query_chunk = query_chunk
    kernel_init, bias_init = _linear_inits(init)
    self.qkv = layers.torch_linear(dim, 3 * dim, use_bias=qkv_bias, dtype=dtype,
                                   kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)
    self.attn_drop = nnx.Dropout(attn_drop, rngs=rngs)
    self.proj = layers.torch_linear(dim, dim, dtype=dtype, kernel_init=kernel_init,
                                    bias_init=bias_init, rngs=rngs)
    self.proj_drop = nnx.Dropout(proj_drop, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, n, c = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, N, heads, head_dim]
    if self.attention_impl == "cudnn":
      if self.attn_drop.rate > 0 and not self.attn_drop.deterministic:
        raise ValueError("attention_impl='cudnn' has no attention dropout; use 'xla' in train mode "
                         "or set attn_drop_rate=0.")
      out = fused_attention(q, k, v, self.scale, implementation="cudnn")
    elif self.attention_impl == "chunked":
      active = self.attn_drop.rate > 0 and not self.attn_drop.deterministic
      out = chunked_attention(q, k, v, self.scale, self.query_chunk,
                              dropout_rate=self.attn_drop.rate if active else 0.0,
                              dropout_key=self.attn_drop.rngs() if active else None)
    else:
      out = einsum_attention(q, k, v, self.scale, self.attn_drop)
    return self.proj_drop(self.proj(out.reshape(b, n, c)))


def einsum_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float,
                     dropout: nnx.Dropout | None = None) -> jax.Array:
  """softmax(q k^T * scale) v with optional dropout on the weights. `[B, N, h, d]` in and out."""
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
  if dropout is not None:
    weights = dropout(weights)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float, chunk: int, *,
                      dropout_rate: float = 0.0, dropout_key: jax.Array | None = None) -> jax.Array:
  """`einsum_attention` over query chunks (rematerialised per chunk). `[B, N, h, d]` in and out."""
  n = q.shape[1]
  chunks = -(-n // chunk)
  q = jnp.pad(q, ((0, 0), (0, chunks * chunk - n), (0, 0), (0, 0)))
  q = jnp.moveaxis(q.reshape(q.shape[0], chunks, chunk, *q.shape[2:]), 1, 0)  # [chunks, B, chunk, h, d]

  @jax.checkpoint
  def one_chunk(args):
    index, q_chunk = args
    logits = jnp.einsum("bqhd,bkhd->bhqk", q_chunk, k) * scale
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    if dropout_rate > 0:
      keep = jax.random.bernoulli(jax.random.fold_in(dropout_key, index), 1.0 - dropout_rate, weights.shape)
      weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
    return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)

  out = jax.lax.map(one_chunk, (jnp.arange(chunks), q))  # [chunks, B, chunk, h, d]
  out = jnp.moveaxis(out, 0, 1).reshape(out.shape[1], chunks * chunk, *out.shape[3:])
  return out[:, :n]


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float, *,
                    implementation: str) -> jax.Array:
  """`jax.nn.dot_product_attention` on `[B, N, h, d]` inputs (no mask, no bias)."""
  return jax.nn.dot_product_attention(q, k, v, scale=scale, implementation=implementation)


class SABlock(nnx.Module):
  """Global MHRA block (self-attention). `[B, *S, dim] -> [B, *S, dim]`."""

  def __init__(self, dim: int, num_heads: int, *, spatial_dims: int = 3, mlp_ratio: float = 4.0,
               qkv_bias: bool = True, qk_scale: float | None = None, drop: float = 0.0,
               attn_drop: float = 0.0, drop_path: float = 0.0, norm_eps: float = 1e-6,
               attention_impl: str = "xla", query_chunk: int = 1024, init: str = "uniformer", dtype=None,
               rngs: nnx.Rngs):
    self.pos_embed = layers.torch_conv(dim, dim, (3,) * spatial_dims, padding=1, groups=dim,
                                       dtype=dtype, rngs=rngs)
    self.norm1 = layers.torch_layer_norm(dim, eps=norm_eps, dtype=dtype, rngs=rngs)
    self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                          attn_drop=attn_drop, proj_drop=drop, attention_impl=attention_impl,
                          query_chunk=query_chunk,
                          init=init, dtype=dtype, rngs=rngs)
    self.drop_path = layers.DropPath(drop_path, rngs=rngs)
    self.norm2 = layers.torch_layer_norm(dim, eps=norm_eps, dtype=dtype, rngs=rngs)
    kernel_init, bias_init = _linear_inits(init)
    self.mlp = layers.Mlp(dim, int(dim * mlp_ratio), drop=drop, dtype=dtype,
                          kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.pos_embed(x)
    shape = x.shape
    tokens = x.reshape(shape[0], -1, shape[-1])
    tokens = tokens + self.drop_path(self.attn(self.norm1(tokens)))
    tokens = tokens + self.drop_path(self.mlp(self.norm2(tokens)))
    return tokens.reshape(shape)


class UniFormer(nnx.Module):
  """UniFormer backbone for images or videos, with optional classification head.

  Input `[B, *S, in_chans]` with S = (H, W) or (T, H, W), the dimensionality given by the patch specs.
  Four stages, each `patch_embed{i}` then `blocks{i}` (CBlocks for 'conv' stages, SABlocks for
  'attn' stages); `pos_drop` (dropout) follows `patch_embed1`. Stage norms are BatchNorms:
  'final' puts one `norm` after stage 4 (classification UniFormer), 'per_stage' puts `norm{i}` after
  every stage (ViLocal, dense-prediction UniFormer), 'none' has none. Stochastic-depth rates rise
  linearly from 0 to `drop_path_rate` over all blocks in order.

  Output (`__call__`): with `num_classes > 0`, logits `[B, num_classes]` from a global average over
  S and the Linear `head`; otherwise the last stage's features `[B, *S4, embed_dim[3]]`, with the
  time axis removed when `squeeze_time` (which requires T == 1 there).

  Modes: dropout, attention dropout and drop path are active and BatchNorm uses batch statistics
  unless viewed with `nnx.view(model, deterministic=True, use_running_average=True)`; random
  draws come from the 'dropout' stream of the `rngs` given at construction.
  """

  def __init__(self,
               *,
               depth: Sequence[int],
               embed_dim: Sequence[int],
               patch_specs: Sequence[PatchSpec],
               head_dim: int = 64,
               mlp_ratio: float = 4.0,
               qkv_bias: bool = True,
               qk_scale: float | None = None,
               block_types: Sequence[str] = ("conv", "conv", "attn", "attn"),
               in_chans: int = 3,
               num_classes: int = 0,
               drop_rate: float = 0.0,
               attn_drop_rate: float = 0.0,
               drop_path_rate: float = 0.0,
               attn_norm_eps: float = 1e-6,
               stage_norms: str = "final",
               squeeze_time: bool = False,
               input_filter: str | None = None,
               init: str = "uniformer",
               attention_impl: str = "xla",
               query_chunk: int = 1024,
               remat: bool = False,
               dtype=None,
               rngs: nnx.Rngs):
    depth = tuple(int(d) for d in depth)
    embed_dim = tuple(int(d) for d in embed_dim)
    patch_specs = tuple(p if isinstance(p, PatchSpec) else PatchSpec(*p) for p in patch_specs)
    block_types = tuple(block_types)
    if not len(depth) == len(embed_dim) == len(patch_specs) == len(block_types) == 4:
      raise ValueError("depth, embed_dim, patch_specs and block_types need 4 entries each")
    if any(t not in ("conv", "attn") for t in block_types):
      raise ValueError(f"block_types entries must be 'conv' or 'attn', got {block_types}")
    if stage_norms not in STAGE_NORMS:
      raise ValueError(f"stage_norms must be one of {STAGE_NORMS}, got {stage_norms!r}")
    spatial_dims = len(patch_specs[0].kernel)
    if any(len(p.kernel) != spatial_dims for p in patch_specs):
      raise ValueError("all patch specs must have the same number of spatial dims")
    if squeeze_time and spatial_dims != 3:
      raise ValueError("squeeze_time needs a 3-D (video) model")
    if input_filter not in (None, "hp3d"):
      raise ValueError(f"input_filter must be None or 'hp3d', got {input_filter!r}")
    if input_filter == "hp3d" and spatial_dims != 3:
      raise ValueError("the 'hp3d' input filter needs a 3-D (video) model")

    self.spatial_dims = spatial_dims
    self.depth = depth
    self.block_types = block_types
    self.stage_norms = stage_norms
    self.squeeze_time = squeeze_time
    self.remat = remat
    self.num_classes = num_classes

    self.srm_layer = srm.HP3D() if input_filter == "hp3d" else None
    dpr = np.linspace(0.0, drop_path_rate, sum(depth)).tolist()
    in_features = in_chans
    for s in range(4):
      dim = embed_dim[s]
      setattr(self, f"patch_embed{s + 1}",
              PatchEmbed(in_features, dim, patch_specs[s], dtype=dtype, rngs=rngs))
      blocks = {}
      for i in range(depth[s]):
        rate = dpr[sum(depth[:s]) + i]
        if block_types[s] == "conv":
          blocks[str(i)] = CBlock(dim, spatial_dims=spatial_dims, mlp_ratio=mlp_ratio,
                                  drop=drop_rate, drop_path=rate, dtype=dtype, rngs=rngs)
        else:
          if dim % head_dim:
            raise ValueError(f"embed_dim {dim} is not a multiple of head_dim {head_dim}")
          blocks[str(i)] = SABlock(
              dim, dim // head_dim, spatial_dims=spatial_dims, mlp_ratio=mlp_ratio,
              qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
              drop_path=rate, norm_eps=attn_norm_eps, attention_impl=attention_impl,
              query_chunk=query_chunk, init=init,
              dtype=dtype, rngs=rngs)
      setattr(self, f"blocks{s + 1}", nnx.Dict(blocks))
      if stage_norms == "per_stage":
        setattr(self, f"norm{s + 1}", layers.torch_batch_norm(dim, dtype=dtype, rngs=rngs))
      in_features = dim
    self.pos_drop = nnx.Dropout(drop_rate, rngs=rngs)
    if stage_norms == "final":
      self.norm = layers.torch_batch_norm(embed_dim[-1], dtype=dtype, rngs=rngs)
    if num_classes > 0:
      kernel_init, bias_init = _linear_inits(init)
      self.head = layers.torch_linear(embed_dim[-1], num_classes, dtype=dtype,
                                      kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)

  def _run_block(self, block: nnx.Module, x: jax.Array) -> jax.Array:
    if self.remat and isinstance(block, SABlock):
      return nnx.remat(lambda blk, y: blk(y))(block, x)
    return block(x)

  def forward_stages(self, x: jax.Array) -> list[jax.Array]:
    """The four stage outputs, each after its stage norm when it has one.

    `[B, *S, in_chans] -> [[B, *S1, embed_dim[0]], ..., [B, *S4, embed_dim[3]]]`.
    """
    if x.ndim != self.spatial_dims + 2:
      raise ValueError(f"expected a {self.spatial_dims + 2}-D channels-last input, got {x.shape}")
    if self.srm_layer is not None:
      x = self.srm_layer(x)
    outputs = []
    for s in range(4):
      x = getattr(self, f"patch_embed{s + 1}")(x)
      if s == 0:
        x = self.pos_drop(x)
      blocks = getattr(self, f"blocks{s + 1}")
      for i in range(self.depth[s]):
        x = self._run_block(blocks[str(i)], x)
      if self.stage_norms == "per_stage":
        x = getattr(self, f"norm{s + 1}")(x)
      elif self.stage_norms == "final" and s == 3:
        x = self.norm(x)
      outputs.append(x)
    return outputs

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.forward_stages(x)[-1]
    if self.squeeze_time:
      if x.shape[1] != 1:
        raise ValueError(f"squeeze_time needs a final temporal size of 1, got {x.shape[1]} "
                         f"(features {x.shape})")
      x = x[:, 0]
    if self.num_classes > 0:
      x = self.head(jnp.mean(x, axis=tuple(range(1, x.ndim - 1))))
    return x


def uniformer_video_config(variant: str = "small", *, num_classes: int = 400,
                           std: bool = False) -> dict:
  """Constructor kwargs of the Sense-X video UniFormer-S or -B (`UniFormer(**cfg, rngs=...)`).

  Stage 1 embeds with a (3, 4, 4) kernel and (2, 4, 4) stride (halving T); stages 2-4 with (1, 2, 2)
  kernels and strides, or (3, 2, 2) kernels with temporal padding 1 when `std` (UNIFORMER.STD).
  SABlock LayerNorm eps 1e-6; drop path 0.1 (S) / 0.3 (B); no dropout.
  """
  depths = {"small": (3, 4, 8, 3), "base": (5, 8, 20, 7)}
  drop_path = {"small": 0.1, "base": 0.3}
  if variant not in depths:
    raise ValueError(f"variant must be one of {sorted(depths)}, got {variant!r}")
  later = (PatchSpec((3, 2, 2), (1, 2, 2), (1, 0, 0)) if std else
           PatchSpec((1, 2, 2), (1, 2, 2)))
  return dict(
      depth=depths[variant], embed_dim=(64, 128, 320, 512), head_dim=64, mlp_ratio=4.0,
      qkv_bias=True, qk_scale=None, block_types=("conv", "conv", "attn", "attn"),
      patch_specs=(PatchSpec((3, 4, 4), (2, 4, 4), (1, 0, 0)), later, later, later),
      num_classes=num_classes, drop_rate=0.0, attn_drop_rate=0.0,
      drop_path_rate=drop_path[variant], attn_norm_eps=1e-6, stage_norms="final", init="uniformer")


def uniformer_image_config(variant: str = "small", *, num_classes: int = 1000) -> dict:
  """Constructor kwargs of the Sense-X image UniFormer-S or -B (patch stem; 2-D).

  Patch embeds: 4x4 stride 4, then 2x2 stride 2. Drop path 0.1 (S) / 0.3 (B) as in their run.sh.
  """
  depths = {"small": (3, 4, 8, 3), "base": (5, 8, 20, 7)}
  drop_path = {"small": 0.1, "base": 0.3}
  if variant not in depths:
    raise ValueError(f"variant must be one of {sorted(depths)}, got {variant!r}")
  later = PatchSpec((2, 2), (2, 2))
  return dict(
      depth=depths[variant], embed_dim=(64, 128, 320, 512), head_dim=64, mlp_ratio=4.0,
      qkv_bias=True, qk_scale=None, block_types=("conv", "conv", "attn", "attn"),
      patch_specs=(PatchSpec((4, 4), (4, 4)), later, later, later), num_classes=num_classes,
      drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=drop_path[variant], attn_norm_eps=1e-6,
      stage_norms="final", init="uniformer")


def vilocal_encoder_config(depth: Sequence[int] = (5, 8, 20, 7)) -> dict:
  """Constructor kwargs of ViLocal's encoder (`train_stage*/uniformer.py: Encoder()`).

  HP3D noise layer first; widths (32, 64, 128, 256), head_dim 64 (2 and 4 heads); embeds
  k(3,2,2) s(2,2,2) p(1,0,0) for stages 1-2 and k(3,3,3) s(2,1,1) p(1,1,1) for stages 3-4 (no
  spatial downsampling there); BatchNorm after every stage; SABlock LayerNorm eps 1e-5; dropout
  0.3, attention dropout 0.2, drop path 0.3; PyTorch default init; T squeezed at the end.
  `[B, T, H, W, 3]` (T <= 16, H and W multiples of 4) -> `[B, H/4, W/4, 256]`.
  PyTorch keys map with one rename, `Res_` prefix removed (`Res_blocks1.0...` -> `blocks1.0...`).
  """
  early = PatchSpec((3, 2, 2), (2, 2, 2), (1, 0, 0))
  late = PatchSpec((3, 3, 3), (2, 1, 1), (1, 1, 1))
  return dict(
      depth=tuple(depth), embed_dim=(32, 64, 128, 256), head_dim=64, mlp_ratio=4.0,
      qkv_bias=True, qk_scale=None, block_types=("conv", "conv", "attn", "attn"),
      patch_specs=(early, early, late, late), num_classes=0, drop_rate=0.3, attn_drop_rate=0.2,
      drop_path_rate=0.3, attn_norm_eps=1e-5, stage_norms="per_stage", squeeze_time=True,
      input_filter="hp3d", init="torch")
