"""SafePaint's perceptual and style losses with a converted VGG (apart from tests/test_safepaint_task.py so that the
two heaviest SafePaint compilations can run on different test workers)."""
import jax
import numpy as np
import pytest

from common.nn import vgg as vgg_lib
from common.train import checkpoint, loop, weights
from common.train import config as config_lib
from safepaint_jax.task import to_float
from tests.test_safepaint_model import jit_build, rbg
from tests.test_safepaint_task import folders, smoke  # noqa: F401 (module fixture)


@pytest.mark.slow  # a VGG16 forward compile: ~1 min on 2 cores
def test_perceptual_and_style_losses_read_a_converted_vgg_that_stays_frozen(folders, tmp_path):
  """Without VGG weights the task refuses the losses; with a converted VGG run as init_from the engine's initial
  state holds its weights and no optimizer state for them (frozen), and the generator's perceptual and style terms
  are computed from it. (The train step around these terms is the alternating run's, above.)"""
  c = smoke(folders, total_steps=1, checkpoint_every=1)
  c.loss.update(dict(perceptual=0.1, style=250.0, vgg="vgg16",
                     style_layers=("relu2_2", "relu3_3", "relu4_3", "relu5_2")))
  with pytest.raises(ValueError, match="VGG weights"):
    config_lib.build_task(c).input_pipeline("train")
  vgg_run = str(tmp_path / "vgg")
  module = jit_build(lambda: vgg_lib.VGG("vgg16", rngs=rbg(3)))
  weights.to_workdir(module, c, vgg_run, model_name="vgg")
  c.init_from.workdir = vgg_run
  task, mesh, batch_sh, _, state_sh = loop.sharded_setup(c)  # the engine's start: init, then init_from
  with jax.set_mesh(mesh):
    state = loop.load_init_from(jax.jit(task.init, out_shardings=state_sh)(task.key(c.seed)), c.init_from, state_sh)
    batch = jax.device_put(next(iter(task.input_pipeline("train"))), batch_sh)
    _, terms = jax.jit(lambda s, b: task.generator_terms(task.models(s), *to_float(b)))(state, batch)
  assert float(terms["perceptual"]) > 0 and float(terms["style"]) > 0
  flat = checkpoint.flat_keys({"params": state.params, "opt_state": state.opt_state})
  assert not any(k.startswith("opt_state/vgg") for k in flat) and any(k.startswith("opt_state/generator") for k in flat)
  np.testing.assert_array_equal(flat["params/vgg/features/28/kernel"], module.features["28"].kernel[...])
