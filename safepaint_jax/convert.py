"""Official SafePaint PyTorch weights (hnucdy/SafePaint) -> our `InpaintGenerator` / `Discriminator`; and back.

  python -m safepaint_jax.convert --generator=InpaintingModel_G.pth --out=WORKDIR [--config=configs/safepaint.py:paper]
  python -m safepaint_jax.convert --to_torch --workdir=RUN [--step=N] --out=G.pth|G.npz [--out_discriminator=D.pth]

The official checkpoints are `{iteration, generator: state_dict}` and `{discriminator: state_dict}`. Every one of
the generator's 192 `state_dict` entries and the discriminator's 18 (tests/testdata/golden/safepaint_*_keys.json)
is consumed:
* Sequential indices are renamed (`encoder.{1,4,7}` -> `encoder.conv{1,2,3}`, the coarse `decoder.{0,3,7}` ->
  `deconv{1,2,3}` as the fine stage names them, `conv_block.{1,5}` -> `conv{1,2}`, `fc.{0,2}` -> `fc{1,2}`,
  the discriminator's `convK.0` -> `convK`);
* the fixed RWSA Gaussian buffers (`att*.gaussianMask.weight`) are checked against `model.gaussian_kernel()`
  (they are rebuilt, not loaded), and the discriminator's `features.0.*` aliases of `conv1.0.*` are checked to
  be the same tensors; both are then reported as ignored, with `num_batches_tracked`;
* spectral norm's `weight_orig`, `weight_u`, `weight_v` load into `SpectralNormConv.kernel / u / v`.
Any other missing or unused key, or a shape mismatch, raises.

The CLI writes WORKDIR/checkpoints/0 with `common.train.weights.to_workdir` holding the converted generator (the
discriminator, when given, is converted and checked; `to_workdir` stores one model per run directory).

  python -m safepaint_jax.convert --vgg=vgg19.pth|vgg19.npz --out=VGG_RUN [--config=configs/safepaint.py:paper]

writes the ImageNet VGG of the perceptual / style losses (a torchvision `vgg19` / `vgg16` state_dict, per
`config.loss.vgg`; `.npz` files with the same keys need no torch) as step 0 of a run, which training then reads
with --config.init_from.workdir=VGG_RUN (the paper config's `init_from.include` takes only `vgg/`).

`--to_torch` writes a run's generator (default: its newest checkpoint) to --out, and its discriminator to
--out_discriminator if given, as the official modules' plain state_dicts (`to_torch_state_dict`,
`discriminator_to_torch_state_dict`: the inverse of the loading through the same renames, with the Gaussian
buffers (the values PyTorch computes), the `features.0.*` aliases and `num_batches_tracked` (0) put back).
`load_state_dict` takes them strictly; the official `load()` reads the generator file's `['generator']` entry, so
wrap it (`torch.save({'generator': torch.load(G)}, ...)`) to use it there. A `.pth` needs the `torch` extra; an
`.npz` has the same keys and is read back without torch.
"""
from __future__ import annotations

from collections.abc import Mapping
import math
import re

from absl import flags
import numpy as np
from flax import nnx

from common.nn import torch_port
from common.nn import vgg as vgg_lib
from common.train import weights
from safepaint_jax import model as model_lib

GENERATOR_RENAME = (
    (r"^module\.", ""),
    (r"_generator\.encoder\.1\.", "_generator.encoder.conv1."),
    (r"_generator\.encoder\.4\.", "_generator.encoder.conv2."),
    (r"_generator\.encoder\.7\.", "_generator.encoder.conv3."),
    (r"^coarse_generator\.decoder\.0\.", "coarse_generator.deconv1."),
    (r"^coarse_generator\.decoder\.3\.", "coarse_generator.deconv2."),
    (r"^coarse_generator\.decoder\.7\.", "coarse_generator.deconv3."),
    (r"(^|\.middle\.\d+\.)conv_block\.1\.", r"\1conv1."),  # a ResnetBlock (alone: its keys from the start)
    (r"(^|\.middle\.\d+\.)conv_block\.5\.", r"\1conv2."),
    (r"_attention\.fc\.0\.", "_attention.fc1."),
    (r"_attention\.fc\.2\.", "_attention.fc2."),
)
DISCRIMINATOR_RENAME = ((r"^module\.", ""), (r"^conv(\d)\.0\.", r"conv\1."))
GAUSSIAN = r"(^|\.)gaussianMask\.weight$"
ALIASED, ALIAS_PREFIX = "conv1.0.", "features.0."  # the official `self.conv1 = self.features`
ALIAS = r"^(module\.)?" + re.escape(ALIAS_PREFIX)


def build_generator(config=None, rngs: nnx.Rngs | None = None, dtype=None) -> model_lib.InpaintGenerator:
  """The generator a checkpoint loads into: `InpaintGenerator.from_config` (the official sizes without a config)."""
  return model_lib.InpaintGenerator.from_config(config, dtype=dtype, rngs=rngs or nnx.Rngs(0))


def build_discriminator(config=None, rngs: nnx.Rngs | None = None, dtype=None) -> model_lib.Discriminator:
  return model_lib.Discriminator.from_config(config, dtype=dtype, rngs=rngs or nnx.Rngs(0))


def check_gaussian_buffers(state_dict: Mapping[str, np.ndarray]) -> list[str]:
  """The RWSA smoothing buffers of `state_dict`; raises unless each equals `gaussian_kernel()`."""
  keys = [k for k in state_dict if re.search(GAUSSIAN, k)]
  expected = model_lib.gaussian_kernel()
  for k in keys:
    value = np.asarray(state_dict[k], np.float32)
    if value.shape != (1, 1, 5, 5) or not np.allclose(value[0, 0], expected, rtol=1e-6, atol=1e-8):
      raise ValueError(f"{k}: not the official 5x5 RWSA smoothing kernel (shape {value.shape})")
  return keys


def check_aliases(state_dict: Mapping[str, np.ndarray]) -> list[str]:
  """The discriminator's `features.0.*` entries; raises unless each equals its `conv1.0.*` original."""
  keys = [k for k in state_dict if re.search(ALIAS, k)]
  for k in keys:
    original = k.replace(ALIAS_PREFIX, ALIASED, 1)
    if original not in state_dict or not np.array_equal(np.asarray(state_dict[k]), np.asarray(state_dict[original])):
      raise ValueError(f"{k}: expected an alias of {original} (the official `self.conv1 = self.features`)")
  return keys


def from_torch_state_dict(state_dict: Mapping[str, np.ndarray], config=None
                          ) -> tuple[model_lib.InpaintGenerator, torch_port.LoadReport]:
  """Our generator with the weights of an official `InpaintGenerator` `state_dict` (numpy, PyTorch layouts)."""
  state_dict = torch_port.unwrap_checkpoint(state_dict)
  state_dict = state_dict.get("generator", state_dict)
  if config is not None and config.model.get("attention", "rwsa") != "rwsa":
    raise ValueError(f"config.model.attention={config.model.attention!r} (an ablation), but official SafePaint "
                     "checkpoints are of the generator with RWSA")
  check_gaussian_buffers(state_dict)
  return torch_port.init_from_torch(lambda: build_generator(config), state_dict, rename=GENERATOR_RENAME,
                                    ignore=torch_port.DEFAULT_IGNORE + (GAUSSIAN,))


def discriminator_from_torch_state_dict(state_dict: Mapping[str, np.ndarray], config=None
                                        ) -> tuple[model_lib.Discriminator, torch_port.LoadReport]:
  """Our discriminator with the weights of an official `Discriminator` `state_dict`."""
  state_dict = torch_port.unwrap_checkpoint(state_dict)
  state_dict = state_dict.get("discriminator", state_dict)
  check_aliases(state_dict)
  return torch_port.init_from_torch(lambda: build_discriminator(config), state_dict, rename=DISCRIMINATOR_RENAME,
                                    ignore=torch_port.DEFAULT_IGNORE + (ALIAS,))


def official_gaussian_buffer() -> np.ndarray:
  """[1, 1, 5, 5] float32: `GaussianSmoothing(1, 5, 1)`'s buffer as PyTorch computes it (exp correctly rounded to
  float32, times the float32 1/sqrt(2 pi), outer product, normalised in float32), which the written checkpoints
  carry. The model keeps `model.gaussian_kernel()` (numpy's float32 exp: some entries 1 ulp off): the demo figures
  rest on it, and the GAN's trajectory amplifies that ulp (demo PSNR 21.81 -> 22.78 dB with this buffer, measured
  2026-12-08)."""
  t = np.arange(5, dtype=np.float64)
  g = np.float32(1 / math.sqrt(2 * math.pi)) * np.exp(-((t - 2) / 2) ** 2).astype(np.float32)
  kernel = np.outer(g, g)
  return (kernel / kernel.sum(dtype=np.float32))[None, None]


def to_torch_state_dict(generator: model_lib.InpaintGenerator) -> dict[str, np.ndarray]:
  """`{key: array}` as the official `InpaintGenerator().state_dict()` names them, in PyTorch layouts, with the RWSA
  Gaussian buffers and `num_batches_tracked` (0): the inverse of `from_torch_state_dict`."""
  buffers = {f"{prefix}gaussianMask.weight": official_gaussian_buffer()
             for prefix in torch_port.submodules(generator, model_lib.RWSA)}
  return torch_port.to_torch_state_dict(generator, rename=GENERATOR_RENAME, buffers=buffers)


def discriminator_to_torch_state_dict(discriminator: model_lib.Discriminator) -> dict[str, np.ndarray]:
  """`{key: array}` as the official `Discriminator().state_dict()` names them (the `features.0.*` aliases
  included): the inverse of `discriminator_from_torch_state_dict`."""
  state_dict = torch_port.to_torch_state_dict(discriminator, rename=DISCRIMINATOR_RENAME)
  aliases = {ALIAS_PREFIX + k.removeprefix(ALIASED): v for k, v in state_dict.items() if k.startswith(ALIASED)}
  return {**state_dict, **aliases}


def _load_raw(path: str) -> dict:
  """A .pth as loaded (not unwrapped: the official files nest under 'generator' / 'discriminator')."""
  try:
    import torch
  except ImportError as e:
    raise ImportError("reading a .pth needs PyTorch: pip install -e '.[torch]'") from e
  checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  inner = checkpoint.get("generator", checkpoint.get("discriminator", checkpoint))
  return {k: v.detach().cpu().numpy() for k, v in torch_port.unwrap_checkpoint(inner).items()}


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string("generator", "", "Official InpaintingModel_G.pth.", flag_values=flag_values)
  flags.DEFINE_string("vgg", "", "torchvision vgg19 / vgg16 state_dict (.pth, or .npz with the same keys).",
                      flag_values=flag_values)
  flags.DEFINE_string("discriminator", "", "Official InpaintingModel_D.pth (optional).", flag_values=flag_values)
  flags.DEFINE_string("out_discriminator", "", "With --to_torch: the discriminator's file (optional).",
                      flag_values=flag_values)
  torch_port.define_converter_flags(flag_values, "configs/safepaint.py:paper", out="the generator's file")


def main(argv) -> None:
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if torch_port.to_torch_requested(f, forward=("generator", "vgg", "discriminator")):
    outputs = {"generator": (f.out, to_torch_state_dict)}
    if f.out_discriminator:
      outputs["discriminator"] = (f.out_discriminator, discriminator_to_torch_state_dict)
    torch_port.write_run_models(f.workdir, f.step, outputs)
    return
  if f.out_discriminator:
    raise ValueError("--out_discriminator goes with --to_torch")
  if bool(f.vgg) == bool(f.generator):
    raise ValueError("give exactly one of --generator and --vgg")
  if f.vgg:
    module = vgg_lib.load(f.vgg, f.config.loss.vgg)
    print(f"wrote step 0 to {weights.to_workdir(module, f.config, f.out, model_name='vgg')}")
    return
  generator, report = from_torch_state_dict(_load_raw(f.generator), f.config)
  print(f"{f.generator}: {report}")
  if f.discriminator:
    _, d_report = discriminator_from_torch_state_dict(_load_raw(f.discriminator), f.config)
    print(f"{f.discriminator}: {d_report} (checked; not written: the run directory holds the generator)")
  print(f"wrote step 0 to {weights.to_workdir(generator, f.config, f.out, model_name='generator')}")


if __name__ == "__main__":
  define_flags()
  from common.train import tool
  tool.run_tool(main)
