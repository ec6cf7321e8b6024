"""SafePaint through the engine (smoke config, tiny folders of real-looking images): both update modes, both
models and optimizers change, the official combined pass sends the adversarial gradient into D, checkpoints
resume exactly, evaluation reports PSNR/SSIM/L1 per hole-ratio bin, data errors name the file."""
import os

import jax
import numpy as np
import pytest
from PIL import Image

from common.data import masks as mask_lib
from common.train import loop
from common.train import config as config_lib
from configs import safepaint as safepaint_configs
from safepaint_jax import data
from safepaint_jax.task import to_float
from common.nn import vgg as vgg_lib
from common.train import checkpoint, weights
from tests.test_engine import losses
from tests.test_safepaint_model import jit_build, rbg


def write_folders(root, n=6, size=80, seed=0):
  """n smooth colour images (non-square, to exercise the centre crop) and free-form masks of various ratios."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size + 16] / size
  for kind in ("images", "masks"):
    os.makedirs(os.path.join(root, kind), exist_ok=True)
  for i in range(n):
    phase = rng.uniform(0, 6, 3)
    image = np.stack([np.sin(4 * xx + phase[c]) * np.cos(3 * yy + phase[c]) for c in range(3)], -1)
    Image.fromarray(np.uint8((image + 1) * 127.5)).save(os.path.join(root, "images", f"{i:03d}.png"))
    bin_ = mask_lib.HOLE_RATIO_BINS[i % len(mask_lib.HOLE_RATIO_BINS)]
    mask = mask_lib.free_form_mask(rng, size, size, bin_)
    Image.fromarray(mask * 255).save(os.path.join(root, "masks", f"{i:03d}.png"))
  return os.path.join(root, "images"), os.path.join(root, "masks")


def saved_state(workdir, step):
  """Flat params, model state (BatchNorm / spectral-norm vectors, RNG streams) and both optimizer states."""
  ck = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True, async_save=False)
  raw = ck.restore_raw(step)
  ck.close()
  flat = checkpoint.flat_keys({n: raw[n] for n in ("params", "rest", "opt_state")})
  return {k: np.asarray(v) for k, v in flat.items()}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  return write_folders(str(tmp_path_factory.mktemp("inpainting")))


def smoke(folders, **overrides):
  c = safepaint_configs.get_config("smoke")
  images, masks = folders
  c.data.update(dict(train_images=images, train_masks=masks, test_images=images, test_masks=masks))
  c.update(overrides)
  return c


def test_sources_crop_resize_and_pair_masks(folders):
  source = data.ImageSource(folders[0], 64, folders[1], mask_threshold=127)
  record = source[2]
  assert record["image"].shape == (64, 64, 3) and record["image"].dtype == np.uint8
  assert set(np.unique(record["mask"])) <= {0, 1} and record["mask"].shape == (64, 64)
  assert 0.19 <= record["mask"].mean() < 0.31  # mask 2 was drawn in the 20-30% bin
  grown = data.read_hole_mask(os.path.join(folders[1], "002.png"), 64)  # the official '> 0' rule
  assert grown.mean() > record["mask"].mean() and np.all(grown >= record["mask"])
  generated = data.RandomMask(64).random_map({"image": record["image"]}, np.random.default_rng(0))
  assert generated["mask"].shape == (64, 64) and 0 < generated["mask"].mean() < 0.6
  with pytest.raises(data.DataError, match="nowhere: missing image folder"):
    data.ImageSource("/nowhere", 64)
  with pytest.raises(data.DataError, match="empty mask folder"):
    data.ImageSource(folders[0], 64, os.path.dirname(folders[0]))


def test_bad_mask_file_names_the_file(folders, tmp_path):
  bad = tmp_path / "bad.png"
  bad.write_bytes(b"not a png")
  with pytest.raises(data.DataError, match=r"bad\.png: cannot read mask \(") as raised:
    data.read_hole_mask(str(bad), 64)
  assert raised.value.path == str(bad) and raised.value.problem.startswith("cannot read mask")


def test_images_below_the_style_encoders_minimum_are_refused(folders):
  c = smoke(folders)
  c.data.size = 32  # conv5f would see an empty map: NaN from the first step
  with pytest.raises(ValueError, match=r"data.size=32: SafePaint's style encoder .* at least 63 px"):
    config_lib.build_task(c)


@pytest.mark.slow  # three train-step compiles: ~2 min on 2 busy cores
def test_combined_pass_feeds_the_adversarial_gradient_into_the_discriminator(folders):
  """Same state and batch. Official combined pass: D's gradient depends on the generator's adversarial weight (D
  also descends 0.1 * BCE(D(O2), real)); with that weight at 0 the combined pass gives G the alternating mode's
  gradient (L_D has none for G). (In alternating mode D's loss does not read the weight at all.)"""
  task = config_lib.build_task(smoke(folders))
  state = task.init(task.key(0))
  batch = next(iter(task.input_pipeline("test")))
  batch = {k: v for k, v in batch.items() if k != "valid"}

  def gradients(mode, adversarial):
    """{model: gradient} of one train step (jitted): what its `apply_grads` calls receive."""
    task.config.update_mode, task.config.loss.adversarial = mode, adversarial
    original = task.apply_grads

    def step(state, batch):
      captured = {}
      task.apply_grads = lambda s, g, r=None: (captured.update(g), original(s, g, r))[1]
      try:
        task.train_step(state, batch)
      finally:
        task.apply_grads = original
      return captured

    return jax.jit(step)(state, batch)

  close = lambda a, b: all(np.allclose(x, y, rtol=1e-4, atol=1e-8) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  combined = {w: gradients("combined", w) for w in (0.0, 0.1)}
  alternating = gradients("alternating", 0.0)
  assert not close(combined[0.0]["discriminator"], combined[0.1]["discriminator"])
  assert close(combined[0.0]["generator"], alternating["generator"])
  assert not close(combined[0.0]["generator"], combined[0.1]["generator"])


@pytest.mark.slow  # three short runs of the smoke GAN (compile-bound): ~90 s on 2 cores
def test_alternating_run_updates_both_models_evaluates_and_resumes_exactly(folders, tmp_path):
  reference = str(tmp_path / "reference")
  metrics = loop.train_and_evaluate(smoke(folders), reference)
  for key in ("psnr", "ssim", "l1", "psnr_stage1", "psnr_hole_0_10", "ssim_hole_50_60"):
    assert np.isfinite(metrics[key]), key
  assert 0 < metrics["ssim"] <= 1 and metrics["psnr"] > 5
  for term in ("l1", "domain", "adversarial", "g_loss", "d_loss"):
    assert all(np.isfinite(v) for v in losses(reference, f"train/{term}").values()), term
  p2, p4 = saved_state(reference, 2), saved_state(reference, 4)
  assert any(k.startswith("opt_state/generator") for k in p4) and any(k.startswith("opt_state/discriminator") for k in p4)
  for name in ("params/generator/fine_generator/att3/fuser/kernel", "params/generator/extractor/conv5f/kernel",
               "params/discriminator/conv5/kernel", "rest/discriminator/conv4/u"):
    assert not np.allclose(p2[name], p4[name]), name

  # common.train.evaluate on a set apart from the training data: the test images mirrored.
  from common.train import evaluate
  images, masks = folders
  mirrored = tmp_path / "mirrored"
  mirrored.mkdir()
  for name in sorted(os.listdir(images)):
    Image.fromarray(np.asarray(Image.open(os.path.join(images, name)))[:, ::-1]).save(mirrored / name)
  sets = {"mirrored": {"data": {"test_images": str(mirrored)}}}
  evaluated = evaluate.evaluate_run(reference, str(tmp_path / "evaluation"), overrides=[f"eval_sets={sets!r}"])
  psnr = evaluated["sets"]["mirrored"]["psnr"]
  assert np.isfinite(psnr) and psnr != metrics["psnr"]

  resumed = str(tmp_path / "resumed")
  loop.train_and_evaluate(smoke(folders, total_steps=2), resumed)
  loop.train_and_evaluate(smoke(folders), resumed)
  assert losses(resumed) == losses(reference)
  final = saved_state(resumed, 4)
  assert sorted(final) == sorted(p4)
  for name, value in p4.items():
    np.testing.assert_array_equal(final[name], value, err_msg=name)


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
