"""Pixel losses for localisation heads: sigmoid focal, binary and softmax cross-entropy, soft dice.

Pure `jax.numpy` functions wrapped in `jax.jit` (alpha, gamma and ignore_index static): an eager call
compiles once per shape, a call inside a jitted step inlines. They compute in float32 (or wider)
whatever the input dtype. Reductions follow PyTorch's defaults (`reduction="mean"`):
  * the element-wise losses are averaged over all elements, or, with `valid`, over the valid ones
    only: sum(valid * loss) / sum(valid). `valid` (bool or {0, 1}) broadcasts against the loss, e.g.
    [B, H, W] per pixel or [B, 1, 1] per sample;
  * where nothing is valid the loss is 0 (PyTorch returns NaN for an all-ignored cross-entropy).
Binary losses take logits and targets of the same shape ([B, H, W], [B, H, W, 1], ...), targets in
[0, 1] (soft targets allowed).
"""
import functools

import jax
import jax.numpy as jnp

VILOCAL_FOCAL_ALPHA = 0.5
VILOCAL_FOCAL_GAMMA = 2.0
IGNORE_INDEX = 255   # MSCCNet's padding label


def _as_float(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_same_shape(logits: jax.Array, targets: jax.Array):
  if logits.shape != targets.shape:
    raise ValueError(f"logits and targets must have the same shape, got {logits.shape} and "
                     f"{targets.shape}")


@jax.jit
def masked_mean(values: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """Mean of `values`, over the elements where `valid` (broadcast to values' shape) is nonzero.

  Returns 0 when no element is valid; invalid elements contribute neither value nor gradient, even
  when they hold inf or NaN.
  """
  if valid is None:
    return jnp.mean(values)
  weights = jnp.broadcast_to(jnp.asarray(valid), values.shape).astype(values.dtype)
  total = jnp.sum(weights)
  masked = jnp.where(weights != 0, values, 0.0)
  return jnp.where(total > 0, jnp.sum(weights * masked) / jnp.where(total > 0, total, 1.0), 0.0)


@jax.jit
def binary_cross_entropy_with_logits_elementwise(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """max(z, 0) - z * y + log(1 + exp(-|z|)) = -[y log sigmoid(z) + (1 - y) log sigmoid(-z)], stable."""
  logits, targets = _as_float(logits), _as_float(targets)
  return jnp.maximum(logits, 0.0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


@jax.jit
def binary_cross_entropy_with_logits(logits: jax.Array, targets: jax.Array,
                                     valid: jax.Array | None = None) -> jax.Array:
  """`F.binary_cross_entropy_with_logits(logits, targets)` (mean), optionally over valid elements."""
  _check_same_shape(logits, targets)
  return masked_mean(binary_cross_entropy_with_logits_elementwise(logits, targets), valid)


@functools.partial(jax.jit, static_argnames=("alpha", "gamma"))
def sigmoid_focal_loss(logits: jax.Array, targets: jax.Array, alpha: float = VILOCAL_FOCAL_ALPHA,
                       gamma: float = VILOCAL_FOCAL_GAMMA, valid: jax.Array | None = None) -> jax.Array:
  """ViLocal's `Sigmoid_Focal_Loss` (stage 2), torchvision's `sigmoid_focal_loss` with mean reduction.

  Per element, with p = sigmoid(z):
    ce = BCE-with-logits(z, y),  p_t = p y + (1 - p)(1 - y),
    loss = alpha_t (1 - p_t)^gamma ce,  alpha_t = alpha y + (1 - alpha)(1 - y)  (alpha >= 0);
  a negative alpha switches the alpha_t weighting off, as in both references. ViLocal uses
  alpha = 0.5, gamma = 2 (so alpha_t = 0.5 everywhere), torchvision defaults to alpha = 0.25.
  1 - p_t is evaluated as y sigmoid(-z) + (1 - y) sigmoid(z), the same value without the rounding of
  1 - p near p = 1; the gradient of (1 - p_t)^gamma at 1 - p_t = 0 (saturated logits) is taken as 0,
  its limit, so it is finite for any gamma >= 0.

  Args:
    logits: [B, H, W] (any shape) raw logits.
    targets: same shape, in [0, 1].
    alpha, gamma: as above.
    valid: optional mask broadcastable to the logits' shape.
  Returns:
    Scalar mean over (valid) elements.
  """
  _check_same_shape(logits, targets)
  if gamma < 0:
    raise ValueError(f"gamma must be >= 0, got {gamma}")
  logits, targets = _as_float(logits), _as_float(targets)
  ce = binary_cross_entropy_with_logits_elementwise(logits, targets)
  one_minus_p_t = targets * jax.nn.sigmoid(-logits) + (1.0 - targets) * jax.nn.sigmoid(logits)
  if gamma == 0:
    loss = ce
  else:
    positive = one_minus_p_t > 0
    modulation = jnp.where(positive, jnp.where(positive, one_minus_p_t, 1.0) ** gamma, 0.0)
    loss = modulation * ce
  if alpha >= 0:
    loss = (alpha * targets + (1.0 - alpha) * (1.0 - targets)) * loss
  return masked_mean(loss, valid)


@jax.jit
def dice_loss(logits: jax.Array, targets: jax.Array, valid: jax.Array | None = None,
              smooth: float = 1.0) -> jax.Array:
  """Soft dice loss on sigmoid probabilities, per sample, then the mean over samples.

  For sample b, with p = sigmoid(logits) and sums over its (valid) elements:
    dice_b = (2 sum(p y) + smooth) / (sum(p) + sum(y) + smooth),  loss = mean_b (1 - dice_b).
  The smooth term (1 by default) keeps empty masks defined: an all-authentic target with an
  all-authentic prediction gives dice -> 1, loss -> 0. With `valid`, a sample without any valid
  element is left out of the mean over samples (0 if no sample has one).

  Args:
    logits: [B, ...] raw logits.
    targets: same shape, in [0, 1].
    valid: optional mask broadcastable to the logits' shape.
    smooth: additive smoothing of numerator and denominator.
  Returns:
    Scalar loss.
  """
  _check_same_shape(logits, targets)
  probs, targets = jax.nn.sigmoid(_as_float(logits)), _as_float(targets)
  axes = tuple(range(1, probs.ndim))
  if valid is None:
    weights = jnp.ones_like(probs)
  else:
    weights = jnp.broadcast_to(jnp.asarray(valid), probs.shape).astype(probs.dtype)
  intersection = jnp.sum(weights * probs * targets, axis=axes)
  total = jnp.sum(weights * probs, axis=axes) + jnp.sum(weights * targets, axis=axes)
  dice = (2.0 * intersection + smooth) / (total + smooth)
  sample_valid = jnp.any(weights != 0, axis=axes)
  return masked_mean(1.0 - dice, sample_valid)


@functools.partial(jax.jit, static_argnames="ignore_index")
def softmax_cross_entropy(logits: jax.Array, labels: jax.Array, valid: jax.Array | None = None,
                          ignore_index: int | None = IGNORE_INDEX,
                          class_weights: jax.Array | None = None) -> jax.Array:
  """`F.cross_entropy(logits, labels, weight=class_weights, ignore_index=ignore_index)`, channels last.

  The mean is PyTorch's: sum_i w[y_i] nll_i / sum_i w[y_i] over the elements that are neither
  ignored (label == ignore_index) nor invalid; 0 when there is none. A label outside [0, K) that is
  not ignored (which PyTorch rejects with an error) makes the loss NaN, so it cannot pass unnoticed.

  Args:
    logits: [..., K] class logits, e.g. [B, H, W, 2] (MSCCNet masks) or [B, 2] (image labels).
    labels: [...] integer labels.
    valid: optional mask broadcastable to labels' shape.
    ignore_index: the label value to ignore (255, MSCCNet's padding), or None.
    class_weights: optional [K] per-class weights.
  Returns:
    Scalar loss.
  """
  logits, labels = _as_float(logits), jnp.asarray(labels)
  if logits.shape[:-1] != labels.shape:
    raise ValueError(f"logits must be [..., K] over labels' shape {labels.shape}, got {logits.shape}")
  num_classes = logits.shape[-1]
  keep = jnp.ones(labels.shape, bool) if ignore_index is None else labels != ignore_index
  if valid is not None:
    keep &= jnp.broadcast_to(jnp.asarray(valid), labels.shape).astype(bool)
  in_range = (labels >= 0) & (labels < num_classes)
  safe_labels = jnp.where(in_range, labels, 0).astype(jnp.int32)
  label_logit = jnp.take_along_axis(logits, safe_labels[..., None], axis=-1)[..., 0]
  nll = jax.nn.logsumexp(logits, axis=-1) - label_logit
  nll = jnp.where(in_range | ~keep, nll, jnp.nan)
  if class_weights is None:
    weights = keep
  else:
    class_weights = _as_float(class_weights)
    if class_weights.shape != (num_classes,):
      raise ValueError(f"class_weights must have shape ({num_classes},), got {class_weights.shape}")
    weights = jnp.where(keep, jnp.where(in_range, class_weights[safe_labels], 1.0), 0.0)
  return masked_mean(nll, weights)
