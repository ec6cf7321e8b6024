"""Perceptual and style losses on the features of a frozen extractor (EdgeConnect / SafePaint `src/loss.py`).

`features` maps {layer name: [B, h, w, C]}, e.g. `common.nn.vgg.VGG(x, layers)`.

* perceptual: sum over layers of weight_l * mean|phi_l(x) - phi_l(y)| (EdgeConnect: relu1_1 .. relu5_1, all 1);
* style: sum over layers of mean|Gram(phi_l(x)) - Gram(phi_l(y))|, Gram = F^T F / (C h w) per sample
  (EdgeConnect: relu2_2, relu3_4, relu4_4, relu5_2).
Both are computed in float32.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from jax import lax


def gram(f: jax.Array) -> jax.Array:
  """[B, h, w, C] -> [B, C, C] Gram matrix divided by C * h * w."""
  b, h, w, c = f.shape
  flat = f.astype(jnp.float32).reshape(b, h * w, c)
  return jnp.einsum("bnc,bnd->bcd", flat, flat, precision=lax.Precision.HIGHEST) / (c * h * w)


def perceptual_loss(fx: Mapping[str, jax.Array], fy: Mapping[str, jax.Array], layers: Sequence[str],
                    weights: Sequence[float] | None = None) -> jax.Array:
  weights = weights or (1.0,) * len(layers)
  if len(weights) != len(layers):
    raise ValueError(f"{len(weights)} perceptual weights for {len(layers)} layers")
  return sum(w * jnp.mean(jnp.abs(fx[l].astype(jnp.float32) - fy[l].astype(jnp.float32)))
             for l, w in zip(layers, weights))


def style_loss(fx: Mapping[str, jax.Array], fy: Mapping[str, jax.Array], layers: Sequence[str]) -> jax.Array:
  return sum(jnp.mean(jnp.abs(gram(fx[l]) - gram(fy[l]))) for l in layers)
