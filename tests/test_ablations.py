"""The ablation sweeps (configs/sweeps/*_ablation.py): every entry applies over the method's smoke and demo configs,
its model builds through `from_config` and traces a forward pass (`jax.eval_shape`), and the ablated model is the
one the config docstring describes. Also ViLocal's documented single-stage commands: stage 2 alone, from scratch
(no init_from), with nothing frozen, through the unfrozen loss path (and the joint stage's contrastive term)."""
import os
import shlex

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.train import config as config_lib
from common.train import sweep
from msccnet_jax import model as msccnet_model
from safepaint_jax import model as safepaint_model
from vilocal_jax import model as vilocal_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("vilocal", "msccnet", "safepaint", "delocate")
EXPECTED = {  # entry names each sweep must hold (the brief's list; a sweep may hold more)
    "vilocal": {"full", "no_noise_layer", "no_contrastive_stage", "joint_stage"},
    "msccnet": {"full", "no_mfa", "no_mscc", "no_mfa_no_mscc"},
    "safepaint": {"full", "no_rwsa", "no_domain_loss"},
    "delocate": {"roi_masking", "random_masking", "roi_masking_meta", "random_masking_meta"},
}


def sweep_entries(method):
  return sweep.load_module(os.path.join(REPO, "configs", "sweeps", f"{method}_ablation.py")).get_sweep()


def entry_stages(method, variant, overrides):
  """[(stage name, stage config)] of the entry over configs/<method>.py:<variant>."""
  config = sweep.entry_config(sweep.base_config(os.path.join(REPO, "configs", f"{method}.py:{variant}")), overrides)
  return [(name, stage) for name, stage, _ in config_lib.stage_configs(config, "/nonexistent/run")]


def abstract_forward(method, config):
  """(param paths, output shapes) of the config's model built by `from_config` and applied once, traced only."""
  paths = {}

  def run(*inputs):
    rngs = nnx.Rngs(0)
    if method == "msccnet":
      model = msccnet_model.MSCCNet.from_config(config, rngs=rngs)
    elif method == "vilocal":
      model = vilocal_model.ViLocal.from_config(config, rngs=rngs)
    else:
      model = safepaint_model.InpaintGenerator.from_config(config, rngs=rngs)
      disc = safepaint_model.Discriminator.from_config(config, rngs=rngs)
    paths.update(dict.fromkeys("/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))))
    if method == "safepaint":
      out = model(*inputs)
      return out._asdict(), disc(out.refined)
    return model(*inputs)

  d = config.data
  if method == "msccnet":
    inputs = (jax.ShapeDtypeStruct((1, d.size, d.size, 3), jnp.float32),)
  elif method == "vilocal":
    inputs = (jax.ShapeDtypeStruct((1, d.clip_length, d.height, d.width, 3), jnp.float32),)
  else:
    inputs = (jax.ShapeDtypeStruct((1, d.size, d.size, 3), jnp.float32),
              jax.ShapeDtypeStruct((1, d.size, d.size, 1), jnp.float32))
  return paths, jax.eval_shape(run, *inputs)


def test_each_sweep_holds_the_documented_entries():
  for method in METHODS:
    names = [name for name, _ in sweep_entries(method)]
    assert len(names) == len(set(names)), method
    assert EXPECTED[method] <= set(names), method
    assert sweep_entries(method)[0][1] == {}, f"{method}: the first entry is the unablated base config"


@pytest.mark.parametrize("method", METHODS)
def test_entries_apply_over_smoke_and_demo_and_their_models_trace(method):
  """Every entry over both variants: the keys exist and the stages resolve. The models are traced over smoke only
  (the switches are the same fields in both variants; demo widths only cost tracing time), once per distinct model."""
  traced = {}
  for variant in ("smoke", "demo"):
    for name, overrides in sweep_entries(method):
      stages = entry_stages(method, variant, overrides)  # a key the config lacks raises KeyError here
      assert stages, (variant, name)
      for _, stage in stages:
        for key, value in overrides.items():
          if not key.startswith("stages.") and key != "run_stages":
            node = stage
            for part in key.split("."):
              node = node[part]
            assert node == value, (variant, name, key)
      if method == "delocate":  # no from_config here (delocate_jax is not part of this change): the task's build
        if variant == "smoke":
          for _, stage in stages:
            task = config_lib.build_task(stage)
            assert task.model_names == ("model",)
        continue
      _, stage = stages[-1]
      model_key = str(sorted(config_lib.flatten(stage.model).items()))
      if variant == "smoke" and model_key not in traced:
        traced[model_key] = abstract_forward(method, stage)
        check_model(method, variant, name, stage, *traced[model_key])
  assert traced or method == "delocate"


def check_model(method, variant, name, config, paths, out):
  where = (method, variant, name)
  if method == "msccnet":
    m, size = config.model, config.data.size
    assert out["image_logits"].shape == (1, 2), where
    assert out["mask_logits"].shape == (1, size // 8, size // 8, 2), where
    assert ("coarse_map" in out) == m.mscc, where
    assert any(p.startswith("mscc/") for p in paths) == m.mscc, where
    assert any(p.startswith(("bottleneck1/", "bottleneck_fusion/")) for p in paths) == m.mfa, where
    assert any(p.startswith("bottleneck3/") for p in paths), where
  elif method == "vilocal":
    d = config.data
    assert out.shape == (1, d.height, d.width), where
  else:
    generated, disc = out
    s = config.data.size
    assert generated["composite2"].shape == (1, s, s, 3) and disc.ndim == 3, where
    attention = any(p.startswith("fine_generator/att") for p in paths)
    assert attention == (config.model.attention != "none"), where


def test_msccnet_ablated_models_compute_what_the_config_says():
  """Real forward passes of the smoke model: without MSCC the decoder reads the aggregated features; without MFA
  the features are bottleneck3(C4)."""
  config = sweep.base_config(os.path.join(REPO, "configs", "msccnet.py:smoke"))
  config.model.update(dict(depth=26, stem_channels=8, base_channels=8, feats_channels=16, out_channels=16))
  image = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
  config.model.update(mfa=False, mscc=False)
  net = nnx.view(msccnet_model.MSCCNet.from_config(config, rngs=nnx.Rngs(0)), deterministic=True,
                 use_running_average=True)

  @nnx.jit
  def both(net, image):
    _, _, _, c4 = net.backbone_net(image)
    return net(image), net.decoder(net.bottleneck3(c4))

  out, expected = both(net, image)
  np.testing.assert_allclose(out["mask_logits"], expected, rtol=1e-5, atol=1e-5)
  assert set(out) == {"image_logits", "mask_logits"}


def documented_flags(marker: str) -> list[str]:
  """The `--config.KEY=VALUE` items of the configs/vilocal.py docstring line holding `marker`."""
  with open(os.path.join(REPO, "configs", "vilocal.py"), encoding="utf-8") as f:
    line = next(l for l in f if marker in l)
  return [t[len("--config."):] for t in shlex.split(line) if t.startswith("--config.")]


def test_vilocal_documented_no_contrastive_stage_trains_stage_two_alone_from_scratch():
  items = documented_flags("--config.run_stages=stage2")
  assert {i.split("=")[0] for i in items} == {"run_stages", "stages.stage2.freeze", "stages.stage2.init_from_stage"}
  config = config_lib.apply_overrides(sweep.base_config(os.path.join(REPO, "configs", "vilocal.py:smoke")), items)
  sweep_overrides = dict(sweep_entries("vilocal"))["no_contrastive_stage"]
  via_sweep = sweep.entry_config(sweep.base_config(os.path.join(REPO, "configs", "vilocal.py:smoke")),
                                 sweep_overrides)
  for cfg in (config, via_sweep):
    (name, stage, workdir), = config_lib.stage_configs(cfg, "/runs/x")
    assert name == "stage2" and workdir == "/runs/x/stage2" and stage.stage == 2
    assert not stage.init_from.workdir  # from scratch: nothing of a stage 1 that never ran
    assert not list(stage.freeze) and stage.loss.stage2_contrastive_weight == 0.0
  assert config_lib.flatten(stage) == config_lib.flatten(config_lib.stage_configs(config, "/runs/x")[0][1])
  # The joint stage's documented flag, on top of the same command.
  joint_items = documented_flags("--config.loss.stage2_contrastive_weight")
  assert joint_items == ["loss.stage2_contrastive_weight=1.0"]
  joint = config_lib.apply_overrides(config.copy_and_resolve_references(), joint_items)
  joint_stage = config_lib.stage_configs(joint, "/runs/x")[0][1]
  (_, joint_via_sweep), = entry_stages("vilocal", "smoke", dict(sweep_entries("vilocal"))["joint_stage"])
  assert config_lib.flatten(joint_stage) == config_lib.flatten(joint_via_sweep)

  # Nothing frozen, and the loss takes the unfrozen path (the joint one adds the contrastive term); traced only.
  d = stage.data
  batch = {"frames": jax.ShapeDtypeStruct((2, d.clip_length, d.height, d.width, 3), jnp.uint8),
           "mask": jax.ShapeDtypeStruct((2, d.height, d.width), jnp.uint8)}
  for cfg, terms in ((stage, {"pixel_acc"}), (joint_stage, {"pixel_acc", "focal_loss", "contrastive_loss"})):
    task = config_lib.build_task(cfg)
    model = nnx.eval_shape(lambda: task.build_models(nnx.Rngs(0)))["model"]
    assert not any(task.is_frozen("model", p) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    loss, aux = jax.eval_shape(lambda b: task.loss(task.build_models(nnx.Rngs(0)), b, jax.random.key(1)), batch)
    assert loss.shape == () and set(aux) == terms


def test_vilocal_joint_weight_needs_a_trainable_encoder():
  config = sweep.base_config(os.path.join(REPO, "configs", "vilocal.py:smoke"))
  config.loss.stage2_contrastive_weight = 1.0
  _, stage2 = [(n, s) for n, s, _ in config_lib.stage_configs(config, "/runs/x")][1]
  with pytest.raises(ValueError, match="trainable encoder"):
    config_lib.build_task(stage2)


def test_msccnet_and_safepaint_tasks_run_the_ablated_losses():
  """The task losses of the ablated models trace: no map term without MSCC, a zero domain term without it."""
  stage = entry_stages("msccnet", "smoke", {"model.mscc": False})[0][1]
  task = config_lib.build_task(stage)
  s = stage.data.size
  batch = {"image": jax.ShapeDtypeStruct((2, s, s, 3), jnp.uint8), "mask": jax.ShapeDtypeStruct((2, s, s), jnp.uint8),
           "label": jax.ShapeDtypeStruct((2,), jnp.int32)}
  _, terms = jax.eval_shape(lambda b: task.loss(task.build_models(nnx.Rngs(0)), b, jax.random.key(0)), batch)
  assert set(terms) == {"loss_image", "loss_mask"}

  stage = entry_stages("safepaint", "smoke", {"loss.domain": 0.0, "model.attention": "none"})[0][1]
  task = config_lib.build_task(stage)
  s = stage.data.size
  images = jnp.asarray(np.random.default_rng(0).random((2, s, s, 3)), jnp.float32)
  masks = jnp.zeros((2, s, s, 1)).at[:, 16:40, 16:40].set(1.0)
  out, terms = jax.eval_shape(lambda i, m: task.generator_terms(task.build_models(nnx.Rngs(0)), i, m), images, masks)
  assert out.z_real is None and terms["domain"].shape == ()
