"""Pod readiness without a pod: the global batch from `per_device_batch_size` on the 4-device CPU mesh, the one
divisibility check (gradient-accumulation micro-batches included), learning-rate scaling reaching the optimizers,
the resume guard refusing a device count that changes the batch, and every stage of every method's paper train
step lowered for TPU and GPU from this CPU host."""
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common.train import config as config_lib
from common.train import errors, loop, optim
from configs import safepaint as safepaint_configs
from tests.test_engine import config


def toy(**overrides):
  """The toy run with the batch taken from `per_device_batch_size` (global_batch_size 0)."""
  return config(**{"global_batch_size": 0, "per_device_batch_size": 2, **overrides})


# ------------------------------------------------------------------------------------------------ global batch
@pytest.mark.parametrize("mesh, expected", [
    (dict(data=-1, fsdp=1), 8),  # all 4 devices data-parallel
    (dict(data=2, fsdp=2), 8),   # the batch is split over fsdp too
    (dict(data=2, fsdp=1), 4),   # an explicit 2-device mesh
])
def test_per_device_batch_gives_the_global_batch_of_the_mesh(mesh, expected):
  assert jax.device_count() == 4
  c = toy(**{"mesh.data": mesh["data"], "mesh.fsdp": mesh["fsdp"]})
  task, m, *_ = loop.sharded_setup(c)
  assert task.config.global_batch_size == expected and task.config.per_device_batch_size == 0
  assert c.global_batch_size == 0 and c.per_device_batch_size == 2  # the caller's config is left alone
  stored = task.resolved_config()
  assert stored.global_batch_size == expected and stored.optimizer.lr_factor == 1.0
  # a resolved config resolves to itself on any mesh (evaluating on one device keeps the run's batch)
  again = config_lib.resolve_batch(stored, {"data": 1, "fsdp": 1})
  assert again.global_batch_size == expected
  assert next(iter(task.input_pipeline("train")))["image"].shape[0] == expected


def test_global_and_per_device_batch_must_agree():
  task, *_ = loop.sharded_setup(toy(global_batch_size=8))  # 2 x 4 devices: the same batch, accepted
  assert task.config.global_batch_size == 8
  with pytest.raises(ValueError) as error:
    loop.sharded_setup(toy(global_batch_size=6))
  assert str(error.value) == (
      "global_batch_size 6 conflicts with per_device_batch_size 2: 2 x 4 data-parallel devices (mesh data=4) = 8. "
      "Set one of them: global_batch_size=0 to take the batch from per_device_batch_size, or per_device_batch_size=0")
  with pytest.raises(ValueError, match="global_batch_size is 0 and per_device_batch_size is 0"):
    loop.sharded_setup(toy(per_device_batch_size=0))


def test_a_batch_that_does_not_divide_over_the_devices_is_one_clear_error():
  with pytest.raises(ValueError) as error:
    loop.sharded_setup(config(global_batch_size=2))
  assert str(error.value) == (
      "global_batch_size 2 does not divide over the 4 data-parallel devices (mesh data=4): set global_batch_size "
      "to a multiple of 4, or per_device_batch_size")
  with pytest.raises(ValueError, match=re.escape("global_batch_size 6 does not divide over the 4 data-parallel "
                                                 "devices (mesh data=2 x fsdp=2)")):
    loop.sharded_setup(config(global_batch_size=6, **{"mesh.data": 2, "mesh.fsdp": 2}))
  with pytest.raises(ValueError) as error:  # 6 devices over 4 hosts cannot happen here: the rule alone
    config_lib.resolve_batch(config(global_batch_size=6), {"data": 6, "fsdp": 1}, process_count=4)
  assert str(error.value) == ("global_batch_size 6 does not divide over the 4 processes: set global_batch_size to "
                              "a multiple of 4, or per_device_batch_size")


def test_each_accumulated_micro_batch_must_divide_over_the_devices():
  """grad_accum_steps k cuts the global batch into k micro-batches, each split over the data-parallel devices."""
  with pytest.raises(ValueError) as error:  # 8 / 4 = micro-batches of 2 on 4 devices
    loop.sharded_setup(config(global_batch_size=8, grad_accum_steps=4))
  assert str(error.value) == (
      "global_batch_size 8 with grad_accum_steps 4 gives micro-batches of 2, which do not divide over the 4 "
      "data-parallel devices (mesh data=4): set global_batch_size to a multiple of 16 (4 micro-batches x 4 "
      "devices), per_device_batch_size to a multiple of 4, or a grad_accum_steps that divides 2")
  with pytest.raises(ValueError, match=re.escape("global_batch_size 12 with grad_accum_steps 8 gives micro-batches "
                                                 "of 1.5, which do not divide over the 2 data-parallel devices")):
    config_lib.resolve_batch(config(global_batch_size=12, grad_accum_steps=8), {"data": 2, "fsdp": 1})
  with pytest.raises(ValueError, match="grad_accum_steps must be at least 1, got 0"):
    config_lib.resolve_batch(config(grad_accum_steps=0), {"data": 4, "fsdp": 1})
  task, *_ = loop.sharded_setup(config(global_batch_size=16, grad_accum_steps=4))  # micro-batches of 4: 1 each
  assert task.config.global_batch_size == 16
  task, *_ = loop.sharded_setup(toy(per_device_batch_size=4, grad_accum_steps=2, **{"mesh.data": 2, "mesh.fsdp": 2}))
  assert task.config.global_batch_size == 16  # 4 x 4 devices, micro-batches of 8


# ------------------------------------------------------------------------------------------- learning rates
def _applied_sgd_lr(task) -> float:
  """The step size the task's optimizer takes: plain SGD moves every parameter by lr x gradient (all ones)."""
  state = task.init(task.key(0))
  trainable, _ = task.split_trainable("model", state.params["model"])
  ones = jax.tree.map(jnp.ones_like, trainable)
  new = task.apply_grads(state, {"model": ones})
  steps = jax.tree.leaves(jax.tree.map(lambda a, b: np.asarray(a - b), state.params["model"], new.params["model"]))
  assert all(np.allclose(s, steps[0].flat[0], rtol=1e-5) for s in steps)
  return float(steps[0].flat[0])


@pytest.mark.parametrize("scaling, factor", [("none", 1.0), ("linear", 2.0), ("sqrt", math.sqrt(2.0))])
def test_lr_scaling_reaches_the_optimizer(scaling, factor):
  """Global batch 2 x 4 devices = 8 against a reference batch of 4: the step SGD takes is lr x factor."""
  c = toy(lr_scaling=scaling, reference_batch_size=4, dropout=0.0,
          optimizer=dict(name="sgd", lr=0.1, schedule="constant", weight_decay=0.0))
  task, *_ = loop.sharded_setup(c)
  assert task.config.optimizer.lr_factor == pytest.approx(factor)
  assert task.resolved_config().optimizer.lr_factor == pytest.approx(factor)  # what the run records
  assert _applied_sgd_lr(task) == pytest.approx(0.1 * factor, rel=1e-5)


def test_lr_scaling_reference_defaults_to_the_configured_batch_and_scales_the_whole_schedule():
  task = config_lib.build_task(config(lr_scaling="linear", optimizer=dict(name="sgd", lr=0.1, weight_decay=0.0)))
  assert task.config.reference_batch_size == 8 and task.config.optimizer.lr_factor == 1.0  # 8 / 8
  c = config(optimizer=dict(name="adamw", lr=1e-3, schedule="cosine", end_lr=1e-5, warmup_steps=2, lr_factor=3.0))
  schedule = optim.make_schedule(c.optimizer, total_steps=10)
  assert float(schedule(2)) == pytest.approx(3e-3) and float(schedule(10)) == pytest.approx(3e-5)
  with pytest.raises(ValueError, match="lr_scaling must be one of"):
    config_lib.build_task(config(lr_scaling="quadratic"))


def test_paper_configs_name_their_reference_batch():
  """Each paper config's learning rates are the paper's, for the paper's global batch: lr_scaling scales from it."""
  import importlib
  for method in sorted(PAPER_DATA):
    module = importlib.import_module(f"configs.{method}")
    paper, demo = module.get_config("paper"), module.get_config("demo")
    assert paper.reference_batch_size == paper.global_batch_size, method
    assert demo.reference_batch_size == 0, method  # demo learning rates were tuned at the demo batch


def test_both_gan_optimizers_are_scaled():
  """SafePaint's generator and discriminator Adams (built by the task itself) both take the scaled step."""
  c = safepaint_configs.get_config("smoke")
  c.lr_scaling, c.reference_batch_size = "linear", 2  # smoke batch 4 -> x2
  task = config_lib.build_task(c)
  assert task.config.optimizer.lr_factor == 2.0
  params = {"w": jnp.zeros(3)}
  for name in ("generator", "discriminator"):
    tx = task.optimizers[name]
    updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -2 * c.optimizer.lr, rtol=1e-4)  # Adam's first step is lr


# -------------------------------------------------------------------------------------------------- resume
def test_resume_on_another_device_count_is_refused_when_it_changes_the_batch(tmp_path):
  workdir = str(tmp_path / "run")
  fast = dict(total_steps=2, eval_every=0, checkpoint_every=2, log_every=1)
  loop.train_and_evaluate(toy(**fast), workdir)  # 2 per device x 4 devices
  with pytest.raises(errors.RunError) as error:  # the same command on 2 devices: a global batch of 4
    loop.train_and_evaluate(toy(**{**fast, "total_steps": 4, "mesh.data": 2}), workdir)
  message = str(error.value)
  assert "  global_batch_size: 8 (stored) -> 4 (now)" in message
  assert "--config.allow_changes=global_batch_size" in message and "mesh" not in message.split("\n")[1]
  # the same global batch spelled the other way, and new lr-scaling keys that scale nothing, resume fine
  stored = toy(**fast)
  stored_resolved = config_lib.resolve_batch(stored, {"data": 4, "fsdp": 1})
  refused, _ = config_lib.refused_changes(stored_resolved, config_lib.resolve_batch(
      config(**fast, lr_scaling="linear", reference_batch_size=8), {"data": 4, "fsdp": 1}))
  assert not refused
  # a config stored before these keys existed (no optimizer.lr_factor, no per-device keys) is no change
  old = stored_resolved.to_dict()
  for key in ("per_device_batch_size", "lr_scaling", "reference_batch_size"):
    del old[key]
  del old["optimizer"]["lr_factor"]
  assert config_lib.refused_changes(old, stored_resolved)[0] == {}


# ------------------------------------------------------------------------------------ lowering for TPU and GPU
# Data overrides (the harness's `--set` form) that let a paper config read the tiny demo corpus: where the data
# come from and how many frames are indexed, never a shape, width, depth or loss of the step.
PAPER_DATA = {
    "vilocal": ["data.root={corpus}/video_inpainting", "data.methods=()", "data.clip_length=3", "data.verify=none"],
    "msccnet": ["data.root={corpus}/faces", "data.methods=()", "data.compression=c23", "data.frames_per_video=2",
                "data.mask_source=auto", "data.face_boxes=face_boxes.json", "data.augment=False"],
    "ncl": ["data.sets={{'train': '{corpus}/image_manipulation/train.json', "
            "'test': '{corpus}/image_manipulation/test.json'}}",
            "data.train_split=train", "eval_split=test"],
    # The paper's perceptual / style VGG is built (random weights: lowering needs no ImageNet weights).
    "safepaint": ["init_from.workdir=unused-lowering-loads-no-weights",
                  "data.train_images={corpus}/inpainting/train/images",
                  "data.train_masks={corpus}/inpainting/train/masks"],
    "delocate": ["data.root={corpus}/faces", "data.methods=('FaceSwap',)", "data.cross_methods=()",
                 "data.frames_per_video=2", "data.mask_source=auto", "data.face_boxes=face_boxes.json"],
}
# The one structural reduction, for CI time: ViLocal's paper encoder repeats two block kinds 5 + 8 + 20 + 7 times
# (tracing it alone took 116 s of a 4-minute run on 2 busy cores; lowering time grows with the number of blocks,
# not with the input size). One block per stage keeps every layer kind, the paper widths, heads, input size, clip
# length, batch and the chunked attention.
REDUCED = {"vilocal": ["model.depth=(1, 1, 1, 1)"]}


def grouped_convolutions(stablehlo: str) -> set[int]:
  """The feature_group_count values > 1 of the module's convolutions (depthwise convolutions: = channels)."""
  return {int(g) for g in re.findall(r"feature_group_count = (\d+)", stablehlo)} - {1}


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
  from common.data import demo
  out = str(tmp_path_factory.mktemp("demo") / "corpus")
  demo.build(out, seed=0, scale="tiny")
  return out


def paper_stages(method: str) -> list[str | None]:
  """The stages of `configs/<method>.py:paper` ([None]: a single-stage config)."""
  import importlib
  names = importlib.import_module(f"configs.{method}").get_config("paper").get("run_stages", "")
  return names.split(",") if names else [None]


def export_paper_train_step(method: str, corpus: str, platforms=("tpu", "cuda"), stage: str | None = None):
  """(task, jax.export.Exported) of `configs/<method>.py:paper`'s train step (`stage` of a two-stage config,
  default its first; ViLocal with one block per stage, see `REDUCED`), lowered for `platforms` from abstract state
  and batch: nothing is compiled or allocated at paper size. The config and the batch's shapes and dtypes come as
  the train-step harness (`benchmarks/train_step.py`) takes them: `load_config` and one batch of the task's own
  input pipeline."""
  from benchmarks import train_step
  overrides = [o.format(corpus=corpus) for o in PAPER_DATA[method]] + REDUCED.get(method, [])
  config = train_step.load_config(method, "paper", stage, overrides)
  task = config_lib.build_task(config)
  host_batch = next(iter(task.input_pipeline("train")))  # as the harness takes its batch: shapes and dtypes only
  batch = {k: jax.ShapeDtypeStruct(np.shape(v), jax.dtypes.canonicalize_dtype(np.asarray(v).dtype))
           for k, v in host_batch.items()}
  state = jax.eval_shape(task.init, task.key(config.seed))
  return task, jax.export.export(jax.jit(task.train_step), platforms=platforms)(state, batch)


@pytest.mark.slow  # tracing the paper networks: 5-25 s per method and stage on 2 cores
@pytest.mark.parametrize("method, stage", [(m, s) for m in sorted(PAPER_DATA) for s in paper_stages(m)])
def test_paper_train_step_lowers_for_tpu_and_gpu(method, stage, tiny_corpus):
  """Accelerator readiness from a CPU host: the paper train step (paper model, batch and input size) of every
  stage lowers to StableHLO for TPU and CUDA, and no CPU-only code path is baked in (the depthwise convolutions of
  ViLocal's UniFormer stay XLA grouped convolutions there; on CPU they are a shift-and-add, see the next test)."""
  task, exported = export_paper_train_step(method, tiny_corpus, stage=stage)
  assert exported.platforms == ("tpu", "cuda")
  if stage == "stage2":
    assert task.config.stage == 2 and task.config.freeze  # the localization step, its stage-1 part frozen
  text = exported.mlir_module()
  assert "stablehlo.convolution" in text or "stablehlo.dot_general" in text
  if method == "vilocal":
    assert grouped_convolutions(text) == set(task.config.model.widths)  # one grouped conv width per stage


def test_depthwise_convolution_lowers_per_platform():
  """The shift-and-add path is chosen when lowering (lax.platform_dependent), not from the host's backend: the
  CPU lowering has no grouped convolution, the CUDA and TPU lowerings have only it; CPU numbers are unchanged."""
  from flax import nnx
  from common.nn import layers
  conv = layers.torch_conv(8, 8, (3, 5, 5), padding=(1, 2, 2), groups=8, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(conv)

  def loss(params, x):
    return jnp.sum(nnx.merge(graphdef, params)(x) ** 2)

  step = jax.jit(jax.value_and_grad(loss))
  x = jax.random.normal(jax.random.key(0), (2, 3, 6, 7, 8))
  abstract = jax.eval_shape(lambda: (params, x))
  for platform in ("cpu", "cuda", "tpu"):
    text = jax.export.export(step, platforms=(platform,))(*abstract).mlir_module()
    if platform == "cpu":
      assert grouped_convolutions(text) == set()  # forward and both gradients: shifted slices, no convolution
    else:
      assert grouped_convolutions(text) == {8} and "stablehlo.convolution" in text
  value, grads = step(params, x)
  kernel = params["kernel"].get_value()
  reference = jax.lax.conv_general_dilated(x, kernel, (1, 1, 1), [(1, 1), (2, 2), (2, 2)],
                                           dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), feature_group_count=8,
                                           precision="highest") + params["bias"].get_value()
  np.testing.assert_allclose(value, jnp.sum(reference ** 2), rtol=1e-5)
