"""Adversarial losses on discriminator logits (EdgeConnect / SafePaint `AdversarialLoss`).

The official discriminators end in a sigmoid and use `nn.BCELoss` for 'nsgan'; here they return logits and the
loss applies the sigmoid (`optax.sigmoid_binary_cross_entropy`), which equals BCE(sigmoid(x)) except where
PyTorch clamps log(p) at -100 (|logit| > 100). 'lsgan' is MSE on sigmoid outputs (the official code applies it
to the sigmoided map as well); 'hinge' uses raw logits: the discriminator's mean(ReLU(1 - real)) +
mean(ReLU(1 + fake)), the generator's -mean(fake).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

KINDS = ("nsgan", "lsgan", "hinge")


def _check(kind: str) -> None:
  if kind not in KINDS:
    raise ValueError(f"unknown GAN loss {kind!r}; expected one of {KINDS}")


def discriminator_term(logits: jax.Array, is_real: bool, kind: str = "nsgan") -> jax.Array:
  """Mean discriminator loss of one batch of logits (any shape) labelled real or fake."""
  _check(kind)
  logits = logits.astype(jnp.float32)
  if kind == "nsgan":
    return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, float(is_real))).mean()
  if kind == "lsgan":
    return jnp.mean(jnp.square(jax.nn.sigmoid(logits) - float(is_real)))
  return jnp.mean(jax.nn.relu(1.0 - logits if is_real else 1.0 + logits))


def generator_term(fake_logits: jax.Array, kind: str = "nsgan") -> jax.Array:
  """Mean generator loss: the discriminator's output on fakes pushed toward 'real'."""
  _check(kind)
  if kind == "hinge":
    return -jnp.mean(fake_logits.astype(jnp.float32))
  return discriminator_term(fake_logits, True, kind)


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array, kind: str = "nsgan") -> jax.Array:
  """(real term + fake term) / 2, as EdgeConnect and SafePaint weight it."""
  return 0.5 * (discriminator_term(real_logits, True, kind) + discriminator_term(fake_logits, False, kind))
