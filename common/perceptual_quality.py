"""Perceptual image-quality metrics in JAX: LPIPS (Zhang et al. 2018, the `lpips` package, v0.1) and FID (Heusel et
al. 2017, as computed by `pytorch-fid`). Nothing is ever downloaded: weights come from files the user names.

LPIPS(x, y), x and y [B, H, W, 3] in [-1, 1] (`lpips.LPIPS(net=..., version='0.1')(x, y)` with NCHW inputs):
  1. ScalingLayer: (x - shift) / scale, shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450);
  2. backbone taps: 'alex' (torchvision AlexNet `features`, relu1..relu5) or 'vgg' (torchvision VGG16 `features`,
     relu1_2, relu2_2, relu3_3, relu4_3, relu5_3);
  3. per tap: unit-normalise each feature vector over channels, f / (sqrt(sum_c f^2) + 1e-10), squared difference;
  4. a 1x1 linear head without bias per tap (`lin{k}.model.1.weight`, [1, C, 1, 1]), then the spatial mean;
  5. the sum over taps: [B].
  Weights: the backbone from a torchvision `alexnet` / `vgg16` state_dict (`.pth` with the torch extra, or an `.npz`
  of the same keys, e.g. written by `python -m common.nn.alexnet` / `python -m common.nn.vgg`); the linear heads
  from `weights/v0.1/{alex,vgg}.pth` of the installed `lpips` package when it is installed and no file is named,
  else from a file named by the caller (`.pth` or `.npz` with the `lin{k}.model.1.weight` keys).
  `lpips_images` (eager) and `LPIPSDistance` (jitted) take uint8 [0, 255] or float [0, 1] images.

FID(real, fake): pool3 features of pytorch-fid's InceptionV3 (`common.nn.inception`) for each set, their mean and
  covariance (`np.cov(rowvar=False)`, float64), and the Fréchet distance
  |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2)) with `scipy.linalg.sqrtm`; where the product's square root
  is not finite, 1e-6 is added to both diagonals (pytorch-fid's fallback); an imaginary diagonal larger than 1e-3
  raises, a smaller imaginary part is dropped. Weights: `pt_inception-2015-12-05-6726825d.pth` (or an `.npz`).
  FID on few images is dominated by the estimator's bias (the covariance of N < 2048 images has rank < N): report
  the number of images with it. `fid_from_activations(..., method='svd')` computes the same quantity with the trace
  term from the data (`trace_sqrt_product`): milliseconds instead of a minute of `sqrtm` on 2048x2048.
"""
from __future__ import annotations

from collections.abc import Mapping
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from common.nn import alexnet as alexnet_lib
from common.nn import inception as inception_lib
from common.nn import layers
from common.nn import torch_port
from common.nn import vgg as vgg_lib

LPIPS_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
LPIPS_SCALE = np.array([0.458, 0.448, 0.450], np.float32)
LPIPS_EPS = 1e-10
NETS = {"alex": (alexnet_lib.LAYERS, alexnet_lib.CHANNELS),
        "vgg": (("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"), (64, 128, 256, 512, 512))}
FID_EPS = 1e-6


def _read_state_dict(path: str, what: str) -> dict[str, np.ndarray]:
  if not path:
    raise ValueError(f"no {what} file given")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{what}: no such file {path!r} (weights are never downloaded: convert them offline)")
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as f:
      return dict(f)
  return torch_port.load_pth(path)


def packaged_lpips_heads(net: str) -> str | None:
  """The path of `weights/v0.1/{net}.pth` inside the installed `lpips` package, or None (not installed / absent)."""
  import importlib.util
  try:
    spec = importlib.util.find_spec("lpips")
  except (ImportError, ValueError):
    return None
  if spec is None or not spec.submodule_search_locations:
    return None
  for root in spec.submodule_search_locations:
    path = os.path.join(root, "weights", "v0.1", f"{net}.pth")
    if os.path.isfile(path):
      return path
  return None


class LinearHead(nnx.Module):
  """LPIPS `NetLinLayer` (dropout, then a 1x1 conv without bias): [B, H, W, C] -> [B, H, W, 1]; the dropout is an
  identity in evaluation. Its kernel loads from `lin{k}.model.1.weight` ([1, C, 1, 1])."""
  TORCH_PARAMS = {"kernel": ("weight", "conv")}

  def __init__(self, channels: int):
    self.kernel = nnx.Param(jnp.zeros((1, 1, channels, 1), jnp.float32))

  def __call__(self, x):
    return jnp.einsum("bhwc,co->bhwo", x, self.kernel[0, 0], precision=jax.lax.Precision.HIGHEST)


class _Model1(nnx.Module):
  """The `model` Sequential of NetLinLayer; index 1 is the conv (index 0 the dropout)."""

  def __init__(self, channels: int):
    self.model = nnx.Dict({"1": LinearHead(channels)})


class LPIPS(nnx.Module):
  """LPIPS v0.1 distance: (x, y) [B, H, W, 3] in [-1, 1] -> [B] (with `per_layer=True` also {tap: [B]}).

  Attributes: `net` (the backbone: `AlexNet` or `VGG('vgg16')`) and `lin0`..`lin4` (the heads), so that the
  backbone loads from torchvision's keys under `net.` and the heads from the lpips package's keys.
  """

  def __init__(self, net: str = "alex", *, rngs: nnx.Rngs):
    if net not in NETS:
      raise ValueError(f"LPIPS net={net!r}; expected one of {sorted(NETS)}")
    self.net_name = net
    self.layers, channels = NETS[net]
    self.net = alexnet_lib.AlexNet(rngs=rngs) if net == "alex" else vgg_lib.VGG("vgg16", rngs=rngs)
    for k, c in enumerate(channels):
      setattr(self, f"lin{k}", _Model1(c))

  def __call__(self, x: jax.Array, y: jax.Array, per_layer: bool = False):
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"LPIPS takes two [B, H, W, 3] batches of one shape, got {x.shape} and {y.shape}")
    b = x.shape[0]
    z = (jnp.concatenate([x, y]).astype(jnp.float32) - LPIPS_SHIFT) / LPIPS_SCALE
    feats = self.net(z, self.layers)
    values = {}
    for k, name in enumerate(self.layers):
      f = feats[name]
      f = f / (jnp.sqrt(jnp.sum(jnp.square(f), -1, keepdims=True)) + LPIPS_EPS)
      d = jnp.square(f[:b] - f[b:])
      values[name] = getattr(self, f"lin{k}").model["1"](d).mean((1, 2, 3))
    total = sum(values.values())
    return (total, values) if per_layer else total


def _lpips_state_dict(net: str, backbone: Mapping[str, np.ndarray], heads: Mapping[str, np.ndarray]):
  out = {f"net.{k}": v for k, v in backbone.items() if k.startswith("features.")}
  out.update({k: v for k, v in heads.items() if k.startswith("lin")})
  return out


def lpips_from_state_dicts(net: str, backbone: Mapping[str, np.ndarray], heads: Mapping[str, np.ndarray]) -> LPIPS:
  """An `LPIPS` from a torchvision backbone state_dict (`features.*`; `classifier.*` ignored) and the lpips heads
  (`lin{k}.model.1.weight`; other keys of an lpips checkpoint ignored)."""
  module, _ = inception_lib.init_weights_only(lambda: LPIPS(net, rngs=nnx.Rngs(0)),
                                              _lpips_state_dict(net, backbone, heads),
                                              ignore=torch_port.DEFAULT_IGNORE)
  return module


class LPIPSDistance:
  """A jitted LPIPS: (x, y) images, uint8 [0, 255] or float [0, 1], [B, H, W, 3] -> numpy [B] (float32 matmuls at
  full precision). One compilation per input shape."""

  def __init__(self, model: LPIPS):
    graphdef, state = nnx.split(model)
    self._state = state
    self._apply = jax.jit(lambda s, x, y: nnx.merge(graphdef, s)(2 * x - 1, 2 * y - 1))

  def __call__(self, x, y) -> np.ndarray:
    with jax.default_matmul_precision("highest"):
      return np.asarray(self._apply(self._state, to_unit(x), to_unit(y)))


def load_lpips(net: str = "alex", backbone_weights: str = "", heads_weights: str = "") -> LPIPS:
  """An `LPIPS` from files: `backbone_weights` (torchvision `alexnet` / `vgg16` state_dict, `.pth` or `.npz`) and
  `heads_weights` (default: the installed `lpips` package's `weights/v0.1/{net}.pth`)."""
  if net not in NETS:
    raise ValueError(f"LPIPS net={net!r}; expected one of {sorted(NETS)}")
  if not backbone_weights:
    raise ValueError(f"LPIPS ({net}) needs the torchvision {'alexnet' if net == 'alex' else 'vgg16'} ImageNet weights: "
                     "name the file (config.quality.lpips_backbone_weights); nothing is downloaded")
  if not heads_weights:
    heads_weights = packaged_lpips_heads(net) or ""
    if not heads_weights:
      raise ValueError(f"LPIPS ({net}) needs its linear heads: install the `lpips` package (it ships "
                       f"weights/v0.1/{net}.pth) or name the file (config.quality.lpips_heads_weights)")
  backbone = _read_state_dict(backbone_weights, f"LPIPS {net} backbone weights (config.quality.lpips_backbone_weights)")
  heads = _read_state_dict(heads_weights, f"LPIPS {net} linear heads (config.quality.lpips_heads_weights)")
  try:
    return lpips_from_state_dicts(net, backbone, heads)
  except ValueError as e:
    raise ValueError(f"LPIPS ({net}) from {backbone_weights} and {heads_weights}: {e}") from e


def to_unit(images) -> jax.Array:
  """uint8 [0, 255] -> float32 [0, 1]; float images are taken as already in [0, 1]."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def lpips_images(model: LPIPS, x, y) -> jax.Array:
  """LPIPS of images given as uint8 [0, 255] or float [0, 1] ([B, H, W, 3]): the `normalize=True` path."""
  return model(2 * to_unit(x) - 1, 2 * to_unit(y) - 1)


# ---------------------------------------------------------------------------------------------------------- FID
def load_inception(path: str) -> inception_lib.FIDInceptionV3:
  if not path:
    raise ValueError("FID needs pytorch-fid's Inception weights pt_inception-2015-12-05-6726825d.pth (or an .npz "
                     "of it): name the file (config.quality.fid_weights); nothing is downloaded")
  state_dict = _read_state_dict(path, "FID Inception weights (config.quality.fid_weights)")
  try:
    return inception_lib.from_torch_state_dict(state_dict)[0]
  except ValueError as e:
    raise ValueError(f"{path}: not pytorch-fid's pt_inception state_dict: {e}") from e


def activation_statistics(activations) -> tuple[np.ndarray, np.ndarray]:
  """(mean, covariance) of [N, D] activations, in float64 as pytorch-fid (`np.cov(rowvar=False)`)."""
  a = np.asarray(activations, np.float64)
  if a.ndim != 2 or a.shape[0] < 2:
    raise ValueError(f"FID statistics need [N >= 2, D] activations, got shape {a.shape}")
  return a.mean(0), np.cov(a, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = FID_EPS) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), as pytorch-fid's `calculate_frechet_distance`."""
  from scipy import linalg
  mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
  sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f"mismatching statistics: means {mu1.shape} / {mu2.shape}, covariances {sigma1.shape} / "
                     f"{sigma2.shape}")
  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    logging.warning("fid calculation produces singular product; adding %s to diagonal of cov estimates", eps)
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm(sigma1 sigma2)")
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


FID_METHODS = ("sqrtm", "svd")


def trace_sqrt_product(a, b) -> float:
  """tr(sqrtm(S_a S_b)) for the sample covariances of activations a [N1, D] and b [N2, D], from the data: the
  eigenvalues of S_a S_b are those of the PSD matrix R S_b R (R = S_a^1/2), and, with centred data A, B, the nonzero
  ones are the squared singular values of A B^T / sqrt((N1 - 1)(N2 - 1)). Exact in exact arithmetic; O(N1 N2 D)
  when min(N1, N2) <= D, so FID over few images takes milliseconds where `sqrtm` of a 2048x2048 product takes a
  minute (and is ill-conditioned for rank-deficient covariances)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  n1, n2, d = a.shape[0], b.shape[0], a.shape[1]
  if min(n1, n2) <= d:
    a, b = a - a.mean(0), b - b.mean(0)
    s = np.linalg.svd(a @ b.T, compute_uv=False)
    return float(s.sum() / np.sqrt((n1 - 1) * (n2 - 1)))
  s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  w, v = np.linalg.eigh(s1)
  root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  return float(np.sqrt(np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)).sum())


def fid_from_activations(real, fake, method: str = "sqrtm") -> float:
  """FID between two [N, D] activation sets. `method='sqrtm'`: pytorch-fid's computation (`frechet_distance`);
  `'svd'`: the same quantity with the trace term from `trace_sqrt_product` (fast for N < D, no eps fallback)."""
  if method == "sqrtm":
    return frechet_distance(*activation_statistics(real), *activation_statistics(fake))
  if method != "svd":
    raise ValueError(f"FID method {method!r}; expected one of {FID_METHODS}")
  (mu1, s1), (mu2, s2) = activation_statistics(real), activation_statistics(fake)
  diff = mu1 - mu2
  return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt_product(real, fake))


class InceptionFeatures:
  """A jitted pool3 feature extractor: images (uint8 [0, 255] or float [0, 1], [B, H, W, 3]) -> numpy [B, 2048].

  Images are resized to 299x299 first (one small compilation per input shape), then run through the network in
  chunks of `batch_size` (the last chunk zero-padded), so the network compiles once whatever the batch sizes.
  """

  def __init__(self, model: inception_lib.FIDInceptionV3, batch_size: int = 8):
    graphdef, state = nnx.split(model)
    self._state = state
    self.batch_size = int(batch_size)
    self.resize_input = model.resize_input
    self._apply = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    self._resize = jax.jit(lambda x: layers.resize_bilinear_half_pixel(x, (inception_lib.FID_SIZE,) * 2))

  def resize(self, images) -> jax.Array:
    """[B, H, W, 3] uint8 / [0, 1] -> float32 [B, 299, 299, 3] in [0, 1] (pytorch-fid's resize)."""
    x = to_unit(images)
    return self._resize(x) if self.resize_input and x.shape[1:3] != (inception_lib.FID_SIZE,) * 2 else x

  def __call__(self, images) -> np.ndarray:
    x = self.resize(images)
    n, out = x.shape[0], []
    with jax.default_matmul_precision("highest"):
      for i in range(0, n, self.batch_size):
        chunk = x[i:i + self.batch_size]
        pad = self.batch_size - chunk.shape[0]
        if pad:
          chunk = jnp.concatenate([chunk, jnp.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
        out.append(np.asarray(self._apply(self._state, chunk))[:self.batch_size - pad])
    return np.concatenate(out) if out else np.zeros((0, inception_lib.FEATURES), np.float32)


def fid(inception: InceptionFeatures, real_batches, fake_batches, method: str = "sqrtm") -> float:
  """FID between two iterables of image batches (uint8 or [0, 1] floats)."""
  real = np.concatenate([inception(b) for b in real_batches])
  fake = np.concatenate([inception(b) for b in fake_batches])
  return fid_from_activations(real, fake, method)
