"""SafePaint as an engine task: the two-stage generator with its extractor, the PatchGAN, and a frozen VGG for the
perceptual / style terms when their weights are nonzero.

Generator loss (weights in `config.loss`, official values in the paper config):
  l1 * (hole_l1(O1) + hole_l1(O2)) + perceptual * (P(O1, I) + P(O2, I)) + style * (S(O1*M, I*M) + S(O2*M, I*M))
  + adversarial * BCE(D(O2), real) + domain(z_real, z_refined, z_background)
Discriminator loss: (BCE(D(I), real) + BCE(D(stop_grad O2), fake)) / 2.

`config.update_mode = 'alternating'` (default): one generator update, then one discriminator update on the same
(detached) O2, both inside one train step. `'combined'` is the official single backward pass: the sum of the
domain, generator and discriminator losses differentiated w.r.t. both models at once and both optimizers stepped,
so D also receives the gradient of the generator's adversarial term (0.1 * BCE(D(O2), real): D is pushed to
call that fake real) and every D call is a train-mode call (three spectral-norm power iterations per step).

Evaluation on the test split (image i with mask i): per-image PSNR, SSIM and L1 of the final composite C2 (and
PSNR of the stage-1 composite C1), overall and per hole-ratio bin (`common.data.masks.HOLE_RATIO_BINS`).
Inputs: uint8 RGB -> [0, 1] (no normalisation, as the official code); masks uint8 {0, 1}, 1 = hole.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import optax
from clu import metrics as clu_metrics

from common import image_quality, inference
from common.data import masks as mask_lib
from common.data import prepared, transforms
from common.losses import gan, perceptual
from common.nn import vgg as vgg_lib
from common.train import optim
from common.train.task import Task
from safepaint_jax import data, losses
from safepaint_jax import model as model_lib

UPDATES = ("alternating", "combined")


def bin_name(low: float, high: float) -> str:
  return f"{round(low * 100)}_{round(high * 100)}"


def _masked_average(value_key: str, mask_key: str):
  """A clu Average of model output `value_key` over the examples where `mask_key` is True."""

  @flax.struct.dataclass
  class MaskedAverage(clu_metrics.Average):

    @classmethod
    def from_model_output(cls, **outputs):
      return super().from_model_output(outputs[value_key], mask=outputs[mask_key])

  return MaskedAverage


def _eval_metrics_class():
  fields = {}
  for name in ("psnr", "ssim", "l1", "psnr_stage1"):
    fields[name] = _masked_average(name, "valid")
  for low, high in mask_lib.HOLE_RATIO_BINS:
    b = bin_name(low, high)
    for name in ("psnr", "ssim", "l1"):
      fields[f"{name}_hole_{b}"] = _masked_average(name, f"bin_{b}")
  return flax.struct.dataclass(type("EvalMetrics", (clu_metrics.Collection,), {"__annotations__": fields}))


EvalMetrics = _eval_metrics_class()


def to_float(batch) -> tuple[jax.Array, jax.Array]:
  """(images [B, H, W, 3] in [0, 1], masks [B, H, W, 1]) from uint8 batch entries."""
  return batch["image"].astype(jnp.float32) / 255.0, batch["mask"].astype(jnp.float32)[..., None]


class SafePaintTask(Task):

  def __init__(self, config):
    if config.update_mode not in UPDATES:
      raise ValueError(f"config.update_mode={config.update_mode!r}; expected one of {UPDATES}")
    if int(config.get("grad_accum_steps", 1)) != 1:
      raise ValueError("SafePaint: grad_accum_steps must be 1 (the discriminator step reuses the generator's O2)")
    if config.data.size < model_lib.StyleEncoder.MIN_SIZE:
      raise ValueError(f"data.size={config.data.size}: SafePaint's style encoder (five unpadded stride-2 "
                       f"convolutions) needs images of at least {model_lib.StyleEncoder.MIN_SIZE} px")
    super().__init__(config)

  @property
  def uses_vgg(self) -> bool:
    return self.config.loss.perceptual > 0 or self.config.loss.style > 0

  def build_models(self, rngs):
    c = self.config
    models = {"generator": model_lib.InpaintGenerator.from_config(c, dtype=self.dtype, rngs=rngs),
              "discriminator": model_lib.Discriminator.from_config(c, dtype=self.dtype, rngs=rngs)}
    if self.uses_vgg:
      models["vgg"] = vgg_lib.VGG(c.loss.vgg, dtype=self.dtype, rngs=rngs)
    return models

  def make_optimizers(self):
    """Adam for the generator (with its extractor) and for the discriminator; the VGG is never trained."""
    return {n: optim.make_optimizer(self.config.optimizer, self.total_steps) for n in ("generator", "discriminator")}

  # ------------------------------------------------------------------ data
  def _folder(self, split: str, kind: str) -> str:
    path = self.config.data[f"{split}_{kind}"]
    return path if path or (kind == "masks" and split == "train" and self.config.data.generate_masks) else (
        data.demo_folder(split, kind))

  @functools.cache  # one index per split: `input_pipeline` builds it (and raises DataError) when called
  def source(self, split: str) -> data.ImageSource:
    """The images of `split`; with their masks (image i, mask i mod #masks) except in training."""
    d = self.config.data
    if prepared.use_prepared(d):
      return prepared.PreparedRecords(prepared.dataset_dir(d, "inpainting_images", size=d.size,
                                                           mask_threshold=d.mask_threshold), split,
                                      with_masks=split != "train")
    masks = "" if split == "train" else self._folder(split, "masks")
    return data.ImageSource(self._folder(split, "images"), d.size, masks, d.mask_threshold, verify=d.verify,
                            on_error=d.on_error)

  def transforms(self, split: str) -> list:
    """Training: a random hole mask per image (`data.RandomMask`: a mask file, or a generated free-form mask with
    `data.generate_masks`), then flips. Evaluation: none (test masks come with the source). Making the training
    transforms first checks that the perceptual / style losses have their VGG weights."""
    c, d = self.config, self.config.data
    if split != "train":
      return []
    if self.uses_vgg and not c.init_from.get("workdir"):
      raise ValueError("the perceptual / style losses need ImageNet VGG weights: convert a torchvision "
                       f"{c.loss.vgg} state_dict with `python -m safepaint_jax.convert --vgg=FILE --out=VGG_RUN` "
                       "and pass --config.init_from.workdir=VGG_RUN (or set loss.perceptual = loss.style = 0)")
    ops = [data.RandomMask(d.size, "" if d.generate_masks else self._folder("train", "masks"),
                           threshold=d.mask_threshold, verify=d.verify, on_error=d.on_error)]
    return ops + ([transforms.RandomHorizontalFlip()] if d.flip else [])

  # ------------------------------------------------------------------ losses
  def generator_terms(self, models, images, masks):
    """(generator outputs, unweighted generator terms without the adversarial one)."""
    L = self.config.loss
    # loss.domain = 0 (the no-domain-loss ablation) skips the three foreground codes, which only feed that term
    out = models["generator"](images.astype(self.dtype), masks.astype(self.dtype), codes=bool(L.domain))
    terms = {"l1": losses.hole_l1(out.coarse, images, masks) + losses.hole_l1(out.refined, images, masks),
             "domain": losses.domain_loss(out.z_real, out.z_refined, out.z_background, weight=L.domain,
                                          real_weight=L.domain_real, background_weight=L.domain_background,
                                          mode=L.domain_mode, margin=L.domain_margin) if L.domain
                       else jnp.zeros((), jnp.float32)}
    if self.uses_vgg:
      vgg = lambda x: models["vgg"](x.astype(self.dtype), tuple(L.perceptual_layers) + tuple(L.style_layers))
      f_real, f_real_hole = vgg(images), vgg(images * masks)
      terms["perceptual"] = sum(perceptual.perceptual_loss(vgg(o), f_real, L.perceptual_layers)
                                for o in (out.coarse, out.refined))
      terms["style"] = sum(perceptual.style_loss(vgg(o * masks), f_real_hole, L.style_layers)
                           for o in (out.coarse, out.refined))
    return out, terms

  def generator_total(self, terms, adversarial):
    L = self.config.loss
    total = L.l1 * terms["l1"] + terms["domain"] + L.adversarial * adversarial
    if self.uses_vgg:
      total += L.perceptual * terms["perceptual"] + L.style * terms["style"]
    return total

  def train_step(self, state, batch):
    images, masks = to_float(batch)
    kind = self.config.loss.gan

    if self.config.update_mode == "combined":
      def official_loss(models, batch, rng):
        out, terms = self.generator_terms(models, images, masks)
        d = models["discriminator"]
        d_loss = gan.discriminator_loss(d(images), d(jax.lax.stop_gradient(out.refined)), kind)
        adversarial = gan.generator_term(d(out.refined), kind)
        g_loss = self.generator_total(terms, adversarial)
        return g_loss + d_loss, dict(terms, adversarial=adversarial, g_loss=g_loss, d_loss=d_loss)

      loss, metrics, grads, rest = self.grads(state, official_loss, batch, wrt=("generator", "discriminator"))
      state = self.apply_grads(state, grads, rest)
    else:
      def g_loss_fn(models, batch, rng):
        out, terms = self.generator_terms(models, images, masks)
        adversarial = gan.generator_term(models["discriminator"](out.refined), kind)
        return self.generator_total(terms, adversarial), dict(terms, adversarial=adversarial, fake=out.refined)

      def d_loss_fn(models, batch, rng):
        d = models["discriminator"]
        return gan.discriminator_loss(d(images), d(jax.lax.stop_gradient(fake)), kind), {}

      g_loss, metrics, g_grads, rest = self.grads(state, g_loss_fn, batch, wrt=("generator",))
      fake = metrics.pop("fake")
      state = self.apply_grads(state, g_grads, rest)
      d_loss, _, d_grads, rest = self.grads(state, d_loss_fn, batch, wrt=("discriminator",))
      state = self.apply_grads(state, d_grads, rest)
      loss, grads = g_loss + d_loss, {**g_grads, **d_grads}
      metrics = dict(metrics, g_loss=g_loss, d_loss=d_loss)
    metrics = dict(metrics, loss=loss, generator_grad_norm=optax.tree.norm(grads["generator"]),
                   discriminator_grad_norm=optax.tree.norm(grads["discriminator"]))
    return state.replace(step=state.step + 1), metrics

  # ------------------------------------------------------------------ eval
  def inpaint(self, models, images, masks):
    out = models["generator"](images.astype(self.dtype), masks.astype(self.dtype), codes=False)
    return jnp.clip(out.composite2.astype(jnp.float32), 0, 1), jnp.clip(out.composite1.astype(jnp.float32), 0, 1)

  def eval_step(self, state, batch):
    images, masks = to_float(batch)
    final, stage1 = self.inpaint(self.models(state), images, masks)
    ratio = masks.mean((1, 2, 3))
    outputs = dict(psnr=image_quality.psnr(final, images), ssim=image_quality.ssim(final, images),
                   l1=image_quality.l1(final, images), psnr_stage1=image_quality.psnr(stage1, images),
                   valid=batch["valid"])
    for low, high in mask_lib.HOLE_RATIO_BINS:
      outputs[f"bin_{bin_name(low, high)}"] = batch["valid"] & (ratio >= low) & (ratio < high)
    return EvalMetrics.single_from_model_output(**outputs)

  def image_summaries(self, state, batch):
    images, masks = to_float(batch)
    images, masks = images[:2], masks[:2]
    final, stage1 = self.inpaint(self.models(state), images, masks)
    return {"input": images * (1 - masks) + masks, "stage1": stage1, "inpainted": final, "target": images}

  # ------------------------------------------------------------------ export
  def predict(self, models, inputs):
    masks = (inputs["mask"] > 0).astype(jnp.float32)[..., None]
    final, stage1 = self.inpaint(models, inputs["image"].astype(jnp.float32) / 255.0, masks)
    return {"inpainted": final, "stage1": stage1}

  def export_spec(self):
    s = self.config.data.size
    shape = inference.InputSpec(
        kind="inpaint", size=(s, s), resize="bicubic", square_crop=True,
        fixed_reason="region-wise separated attention pools the hole mask with strides computed from a concrete "
                     "feature size")
    return inference.spec({"image": {"shape": [s, s, 3], "layout": "HWC"},
                           "mask": {"shape": [s, s], "layout": "HW", "meaning": "hole where > 0"}}, shape,
                          {"inpainted": f"the composite I*(1-M) + O2*M in [0, 1], [B, {s}, {s}, 3]",
                           "stage1": f"the stage-1 composite I*(1-M) + O1*M in [0, 1], [B, {s}, {s}, 3]"})
