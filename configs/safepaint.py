"""SafePaint configs: `paper` (the official recipe), `demo` (embedded corpus, < 20 minutes on 2 CPU cores), `smoke`.

Run: python -m safepaint_jax.main --config=configs/safepaint.py:demo --workdir=DIR

paper: 256x256, batch 4, Adam 2e-4 betas (0.5, 0.999) for both models, no schedule, official loss weights (L1 1,
  perceptual 0.1, style 250, adversarial 0.1 nsgan, domain 0.01 x (1, 1) in the official degenerate-triplet form),
  the full generator (width 64, 8 residual blocks per stage) and discriminator. Perceptual / style use an
  ImageNet VGG19 (the official `src/loss.py`: relu1_1..relu5_1 and relu2_2, relu3_4, relu4_4, relu5_2, inputs in
  [0, 1] without normalisation), which is never downloaded: convert a torchvision `vgg19` state_dict once
  (`python -m safepaint_jax.convert --vgg=vgg19.pth --out=VGG_RUN`) and pass --config.init_from.workdir=VGG_RUN.
  VGG16 works too (--config.loss.vgg=vgg16 with relu3_3 / relu4_3 as style layers). Training images and masks are
  folders (`data.train_images`, `data.train_masks`; masks: white = hole, e.g. the NVIDIA irregular-mask set);
  `data.generate_masks=True` draws free-form masks on the fly in uniformly chosen hole-ratio bins instead.
  `update_mode='combined'` reproduces the official single backward pass (see safepaint_jax/task.py).
demo: the embedded corpus's inpainting part (240 train / 60 test real pictures with free-form masks in six
  hole-ratio bins) at 64x64, generator width 16 with 2 residual blocks per stage, extractor width 16,
  discriminator width 32, batch 4, Adam 2e-4 (0.5, 0.999), 500 steps. **Perceptual and style losses are off** (weights 0, no
  VGG built): ImageNet VGG weights cannot be downloaded here and a randomly initialised VGG would be a different
  loss; the demo trains with the hole-normalised L1, adversarial and domain terms at their official weights.
smoke: the same at 64x64 with width 8, one residual block, a few steps (tests).
Ablations (configs/sweeps/safepaint_ablation.py; the defaults are the paper's model). The paper's ablation table
could not be read (spec: body not retrievable), so these are our definitions:
  --config.model.attention=none    no RWSA: the fine stage without its three attention blocks (its layout is then
                                   the coarse stage's, with the 20-channel input), as "w/o RWSA" removes the module.
  --config.model.attention=global  RWSA without the region-wise separation: the same blocks and parameters, the
                                   hole / background gates set to 1, i.e. every position gets
                                   fuser([A_bg(F) + Block(A_spl(F)) + A_mix(F), F]) and the mask is not read.
  --config.loss.domain=0           no region-wise domain loss (the three foreground codes are then not computed,
                                   so the extractor is trained only through the background style code it feeds the
                                   fine stage, and its BatchNorm statistics come from that pass alone).
"""
import ml_collections

from common.train.config import base_config, checked_variant

PERCEPTUAL_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
STYLE_LAYERS = ("relu2_2", "relu3_4", "relu4_4", "relu5_2")


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
  variant = checked_variant(arg, "SafePaint")
  c = base_config()
  c.task = "safepaint_jax.task:SafePaintTask"
  c.seed = 10  # the official seed
  c.update_mode = "alternating"  # 'combined': the official single backward pass over G + D losses
  c.model = ml_collections.ConfigDict(dict(
      width=64, residual_blocks=8, style_dim=16, extractor_width=64, attention_reduction=16, disc_width=64,
      attention="rwsa"))  # the fine stage's attention: 'rwsa' (paper) | 'global' | 'none' (ablations, see above)
  c.loss = ml_collections.ConfigDict(dict(
      l1=1.0, perceptual=0.1, style=250.0, adversarial=0.1, gan="nsgan",
      domain=0.01, domain_real=1.0, domain_background=1.0, domain_mode="official", domain_margin=0.1,
      vgg="vgg19", perceptual_layers=PERCEPTUAL_LAYERS, style_layers=STYLE_LAYERS))
  c.data = ml_collections.ConfigDict(dict(
      size=256,
      train_images="", train_masks="",  # folders; "" = the embedded demo corpus
      test_images="", test_masks="",
      generate_masks=False,             # True: free-form masks drawn on the fly instead of train_masks files
      mask_threshold=0,                 # resized mask > threshold (0-255) is a hole; 0 = official
      verify="none",                    # index-time checks of the files: 'none', 'header' or 'decode'
      on_error="raise",                 # a bad file: 'raise', or 'skip' it when listing (counted in the log)
      flip=True, worker_count=0, read_threads=4, prefetch=0,
      format="folder", prepared_dir=""))  # 'arrayrecord': the --out of python -m common.data.prepare
  c.optimizer = ml_collections.ConfigDict(dict(name="adam", lr=2e-4, b1=0.5, b2=0.999, schedule="constant"))
  c.global_batch_size = 4
  c.reference_batch_size = 4 if variant == "paper" else 0  # the paper's batch, for --config.lr_scaling
  c.total_steps = 1_000_000  # official MAX_ITERS
  c.log_every = 10
  c.checkpoint_every = 1000
  c.eval_split = "test"
  c.init_from.include = "vgg/"  # a converted VGG run (safepaint_jax.convert --vgg) provides only the VGG
  # Perceptual quality in `python -m safepaint_jax.evaluate` (never downloaded; "" = that metric is left out):
  # LPIPS per hole-ratio bin from a torchvision alexnet / vgg16 state_dict (.pth or .npz) and the lpips package's
  # v0.1 heads (or lpips_heads_weights), FID over the split from pytorch-fid's pt_inception-2015-12-05-6726825d.pth.
  c.quality = ml_collections.ConfigDict(dict(
      lpips_net="alex", lpips_backbone_weights="", lpips_heads_weights="", fid_weights="", fid_batch_size=8,
      fid_method="sqrtm"))  # 'svd': the same FID with the trace term from the data (fast when images < 2048)

  if variant == "paper":
    # Test sets (python -m common.train.evaluate --workdir=RUN): the usual trio of the inpainting literature (the
    # paper's own choice is unconfirmed), each the set's test images with one hole-mask set, from eval_roots.
    sets = ("celeba_hq", "places2", "paris")
    c.eval_roots = ml_collections.ConfigDict({**{name: "" for name in sets}, "masks": ""})
    c.eval_sets = ml_collections.ConfigDict(
        {name: {"data": {"test_images": f"{{{name}}}", "test_masks": "{masks}"}} for name in sets})
  if variant in ("demo", "smoke"):
    c.rng_impl = "rbg"
    c.loss.perceptual = c.loss.style = 0.0
    c.data.size = 64
    c.data.mask_threshold = 127  # 256 -> 64 masks: '> 0' would grow the holes out of their ratio bins
  if variant == "demo":
    # ~12 GFLOP per step (width 32 is ~4x that: 2-4 s per step on 2 busy cores, too slow for 20 minutes).
    c.model.update(dict(width=16, residual_blocks=2, extractor_width=16, disc_width=32))
    c.total_steps = 500
    c.log_every = 25
    c.checkpoint_every = 250
  elif variant == "smoke":
    c.model.update(dict(width=8, residual_blocks=1, extractor_width=8, attention_reduction=4, disc_width=8))
    c.total_steps = 4
    c.log_every = 1
    c.checkpoint_every = 2
    c.block_every_step = True
  return c
