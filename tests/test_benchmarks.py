"""The train-step harness's profile: HLO instructions map to their JAX op names, and a traced step's time is
attributed to the operations that spend it."""
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import train_step


def _step(state, batch):
  """A toy train step: one convolution whose weight takes a gradient step; (state, metrics) like a task's."""
  def loss(w):
    y = jax.lax.conv_general_dilated(batch, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.mean(jnp.tanh(y) ** 2)
  value, grad = jax.value_and_grad(loss)(state)
  return state - 0.1 * grad, {"loss": value}


def test_profile_attributes_step_time_to_jax_ops():
  state = jnp.full((3, 3, 16, 16), 0.01, jnp.float32)
  batch = jnp.asarray(np.random.default_rng(0).standard_normal((4, 32, 32, 16)), jnp.float32)
  compiled = jax.jit(_step).lower(state, batch).compile()
  names = train_step.op_names(compiled.as_text())
  assert any(op.endswith("conv_general_dilated") for op in names.values())
  state, profile = train_step.profile_ops(compiled, state, batch, top=3)
  primitives = profile["by_primitive"]
  assert len(primitives) == 3 and primitives[0]["ms_per_step"] >= primitives[-1]["ms_per_step"] > 0
  assert "conv_general_dilated" in [row["op"] for row in primitives]  # the forward and both backward convs
  assert 0 < sum(row["share"] for row in profile["by_op"]) <= 1 + 1e-9
  assert state.shape == (3, 3, 16, 16)
