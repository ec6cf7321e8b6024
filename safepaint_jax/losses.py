"""SafePaint's own loss terms (the GAN, perceptual and style terms are in common.losses).

* `hole_l1`: mean|O - I| over the whole image divided by the hole fraction mean(M) of the whole batch (the
  official "reconstruction L1": the raw stage output, not the composite, so known pixels count too).
* `domain_loss`: the official `TripletMarginLoss(margin=0.1, p=2)(a, p, a)` on [B, 16, 1, 1] codes. PyTorch's
  pairwise distance reduces over the last axis (size 1), so each term is the element-wise
  mean(relu(|a - p + 1e-6| - 1e-6 + margin)) = mean|a - p| + margin, with gradient into both codes
  (`mode='official'`). `mode='l2'` is the cleaned reading: the mean over the batch of ||a - p||_2.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

DOMAIN_MODES = ("official", "l2")


def hole_l1(output: jax.Array, target: jax.Array, masks: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(output.astype(jnp.float32) - target.astype(jnp.float32))) / jnp.mean(masks)


def code_distance(a: jax.Array, p: jax.Array, mode: str = "official", margin: float = 0.1) -> jax.Array:
  """One triplet term between codes [B, D] (see the module docstring)."""
  a, p = a.astype(jnp.float32), p.astype(jnp.float32)
  if mode == "official":
    eps = 1e-6
    return jnp.mean(jax.nn.relu(jnp.abs(a - p + eps) - eps + margin))
  if mode == "l2":
    return jnp.mean(jnp.linalg.norm(a - p, axis=-1))
  raise ValueError(f"unknown domain loss mode {mode!r}; expected one of {DOMAIN_MODES}")


def domain_loss(z_real: jax.Array, z_refined: jax.Array, z_background: jax.Array, *, weight: float = 0.01,
                real_weight: float = 1.0, background_weight: float = 1.0, mode: str = "official",
                margin: float = 0.1) -> jax.Array:
  """weight * (real_weight * T(z_real, z_refined) + background_weight * T(z_refined, z_background))."""
  return weight * (real_weight * code_distance(z_real, z_refined, mode, margin)
                   + background_weight * code_distance(z_refined, z_background, mode, margin))
