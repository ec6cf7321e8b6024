"""NCL losses: patch classes on hand-made masks, opposite contour roles of the two pivot branches (and their
switch), the patch InfoNCE against a numpy reference, the pivot-consistent loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ncl_jax import losses


def test_patches_of_a_hand_made_mask_get_all_three_kinds():
  mask = np.zeros((1, 16, 16), np.uint8)
  mask[0, 0:8, 8:16] = 1        # top-right patch: every pixel tampered
  mask[0, 10:12, 3:5] = 1       # a few pixels in the bottom-left patch: contour
  # embedding grid 4x4 (stride 4), patch_size 2 cells -> 8-pixel patches, a 2x2 patch grid
  classes = np.asarray(losses.mask_patches(jnp.asarray(mask), (4, 4), 2))
  np.testing.assert_array_equal(classes[0], [[losses.AUTHENTIC, losses.TAMPERED],
                                             [losses.CONTOUR, losses.AUTHENTIC]])
  mask[0, 7, 8] = 0             # one authentic pixel makes the tampered patch a contour patch
  assert int(losses.mask_patches(jnp.asarray(mask), (4, 4), 2)[0, 0, 1]) == losses.CONTOUR
  with pytest.raises(ValueError, match="patch_size"):
    losses.mask_patches(jnp.asarray(mask), (4, 4), 3)


def test_two_branches_give_contour_patches_opposite_roles_and_switch():
  classes = jnp.array([losses.AUTHENTIC, losses.TAMPERED, losses.CONTOUR, losses.CONTOUR])
  for step in range(4):
    phase = losses.switch_phase(jnp.asarray(step), switch_every=2)
    roles = np.asarray(losses.contour_roles(2, "pivot", phase))
    assert sorted(roles.tolist()) == [losses.AUTHENTIC, losses.TAMPERED]  # one positive, one negative role
    a, b = (np.asarray(losses.contrast_labels(classes, r)) for r in roles)
    np.testing.assert_array_equal(a[:2], [0, 1])
    np.testing.assert_array_equal(b[:2], [0, 1])
    assert (a[2:] == 1 - b[2:]).all()
    expected_first = losses.TAMPERED if (step // 2) % 2 == 0 else losses.AUTHENTIC
    assert roles[0] == expected_first                                    # roles swap every 2 steps
  assert np.asarray(losses.contour_roles(2, "discard", 0)).tolist() == [losses.IGNORE] * 2
  assert np.asarray(losses.contour_roles(2, "tampered", 1)).tolist() == [losses.TAMPERED] * 2
  assert int(losses.switch_phase(jnp.asarray(7), 0)) == 0
  with pytest.raises(ValueError, match="contour_mode"):
    losses.contour_roles(2, "both", 0)


def _reference_infonce(z, labels, tau):
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  out = []
  for i in range(len(z)):
    if labels[i] < 0:
      continue
    same = [j for j in range(len(z)) if j != i and labels[j] == labels[i]]
    other = [j for j in range(len(z)) if labels[j] >= 0 and labels[j] != labels[i]]
    if not same or not other:
      continue
    p = z[same].sum(0)
    p /= np.linalg.norm(p)
    logits = np.concatenate([[z[i] @ p], z[other] @ z[i]]) / tau
    out.append(np.log(np.exp(logits).sum()) - logits[0])
  return np.mean(out)


def test_patch_infonce_matches_numpy_and_ignores_left_out_patches():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(10, 6)).astype(np.float32)
  labels = np.array([0, 1, 1, -1, 0, 0, 1, -1, 0, 1])
  loss = losses.patch_infonce(jnp.asarray(z), jnp.asarray(labels), jax.random.key(0), max_per_class=16,
                              temperature=0.2)
  np.testing.assert_allclose(float(loss), _reference_infonce(z, labels, 0.2), rtol=1e-5)
  # a cap below the class sizes draws subsets: still finite, and differs with the draw
  capped = [float(losses.patch_infonce(jnp.asarray(z), jnp.asarray(labels), jax.random.key(k), max_per_class=2,
                                       temperature=0.2)) for k in range(4)]
  assert np.all(np.isfinite(capped)) and len(set(capped)) > 1
  # one label only: no negatives, loss 0
  assert float(losses.patch_infonce(jnp.asarray(z), jnp.zeros(10, jnp.int32), jax.random.key(0),
                                    max_per_class=16, temperature=0.2)) == 0.0


def test_pivot_consistent_loss_is_zero_when_branches_agree():
  logits = jax.random.normal(jax.random.key(0), (1, 2, 4, 4, 2))
  agree = jnp.concatenate([logits, logits], 0)
  assert float(losses.pivot_consistency(agree)) == 0.0
  assert float(losses.pivot_consistency(logits)) == 0.0          # a single branch
  differ = jnp.concatenate([logits, -logits], 0)
  z = np.asarray(logits, np.float64)
  probs = 1 / (1 + np.exp(z[..., 0] - z[..., 1]))   # softmax tampered probability, numpy
  np.testing.assert_allclose(float(losses.pivot_consistency(differ)), np.mean((probs - (1 - probs)) ** 2), rtol=1e-5)
  three = np.random.default_rng(0).normal(size=(3, 1, 4, 4, 2))  # three branches: the mean over the three pairs
  p = 1 / (1 + np.exp(three[..., 0] - three[..., 1]))
  expected = np.mean([np.mean((p[a] - p[b]) ** 2) for a, b in ((0, 1), (0, 2), (1, 2))])
  np.testing.assert_allclose(float(losses.pivot_consistency(jnp.asarray(three, jnp.float32))), expected, rtol=1e-5)
  grad = jax.grad(lambda x: losses.pivot_consistency(x))(differ)
  assert float(jnp.abs(grad).sum()) > 0
