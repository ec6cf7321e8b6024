"""MSCCNet configs: `paper` (the released recipe), `demo` (embedded face corpus, minutes on a CPU), `smoke` (tests).

Run: python -m msccnet_jax.main --config=configs/msccnet.py:demo --workdir=DIR

`paper` follows the only released experiment config (`configs/mscc/mscc_resnet_ff_all.py`): FF++ c40, all five
manipulation types, ~20 frames per fake video each paired with the same real frame, 512x512 input, ResNet-50
v1c at output stride 8, SGD (lr 0.009, momentum 0.9, weight decay 5e-4 on every parameter), poly decay (power
0.9, floor 1% of the lr) per iteration over 30 epochs, global batch 64, losses image CE + mask CE + coarse-map
CE with weight 1 each. The official backbone starts from ImageNet (openmmlab resnet50_v1c): convert it with
`python -m msccnet_jax.convert --backbone_pth=... --out=INIT` and pass `--config.init_from.workdir=INIT`.
Train augmentation as the official pipeline (`data.augment`): longer side rescaled to 520 x U[0.5, 2), 512
crop with the class-ratio retries, flip, photometric distortion (`data.hsv_quirk` reproduces the official HSV
conversion of BGR arrays labelled RGB; off by default), centred padding with ignored mask pixels.
Ablations (configs/sweeps/msccnet_ablation.py; the defaults are the paper's model):
  --config.model.mfa=False   no multi-level feature aggregation: the head reads only the last stage, i.e.
                             conv3x3+BN+ReLU(C4) to feats_channels (the MFA's C4 branch, `bottleneck3`), with no
                             C2 / C3 branches and no fusion conv.
  --config.model.mscc=False  no multi-spectral class centers: the plain segmentation head (the decoder: conv1x1+
                             BN+ReLU, Dropout2d, conv1x1) on the aggregated features, no DCT / class centers /
                             GCN and no coarse map, so no map loss (loss.map_weight has no effect).
  Both False: the decoder on bottleneck3(C4). The image head (pool of C4 + Linear) is the same in every variant.
Also: --config.model.spectral_k, --config.model.spectral_size='()' (basis per feature size),
--config.loss.map_weight=0 (no coarse-map supervision), --config.model.image_pool=max (image head pool).
"""
import ml_collections

from common.train.config import base_config, checked_variant


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
  variant = checked_variant(arg, "MSCCNet")
  c = base_config()
  c.task = "msccnet_jax.task:MSCCNetTask"
  c.model = ml_collections.ConfigDict(dict(
      depth=50, output_stride=8, stem_channels=64, base_channels=64, feats_channels=512, out_channels=512,
      num_classes=2, dropout=0.1,
      spectral_k=2,            # n = k**2 channel groups (the DCT itself always uses dct_k**2 = 64 frequencies)
      dct_k=8,                 # fixed in the official DCT layer
      spectral_size=(64, 64),  # the official fixed DCT buffer (input 512 at OS8); () builds it per feature size
      image_pool="avg",        # the image head's global pool: official average; "max" an ablation
      mfa=True,                # multi-level feature aggregation (C2..C4); False: C4 only (ablation, see above)
      mscc=True,               # the MSCC module; False: the decoder on the features directly (ablation)
  ))
  c.loss = ml_collections.ConfigDict(dict(image_weight=1.0, mask_weight=1.0, map_weight=1.0))
  c.data = ml_collections.ConfigDict(dict(
      root="",                 # FF++ root (original_sequences/, manipulated_sequences/, splits/); "" = demo corpus
      methods=("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter"),
      train_split="train",     # the split file(s) trained on; "train+val" joins two
      compression="c40", frames_per_video=20, crop_scale=1.3,
      mask_source="ssim",      # MSCCNet's SSIM re-annotation for every method
      face_boxes="",           # JSON of precomputed boxes {video: {frame: box}}; "" = LBP cascade detection
      verify="decode",         # index-time checks: 'header' (frame counts) or 'decode' (every frame, empty masks)
      on_error="raise",        # a bad video: 'raise', or 'skip' it when indexing (counted in the log)
      size=512,                # square input (the official val/test resize; train crops 512)
      flip=True,
      augment=True,            # the official rescale / crop / photometric / pad pipeline; False: resize + flip
      scale_range=(0.5, 2.0), cat_max_ratio=0.75, photometric=True, hsv_quirk=False,
      worker_count=0, read_threads=4, prefetch=0,
      format="folder", prepared_dir="",  # 'arrayrecord': the --out of python -m common.data.prepare
      layout="faceforensics"))  # or a cross-dataset test set: 'celeb_df' | 'dfdc' | 'dfd' (evaluation only)
  c.global_batch_size = 64
  c.reference_batch_size = 64 if variant == "paper" else 0  # the paper's batch, for --config.lr_scaling
  c.epochs = 30
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", lr=0.009, momentum=0.9, weight_decay=5e-4, schedule="poly", power=0.9, end_lr=0.009 * 0.01))
  c.eval_split = "test"
  c.best_metric = ""           # the official `epoch_best.pth` is simply the last evaluated epoch
  c.log_every = 50
  c.checkpoint_every = 2000
  c.seed = 866

  if variant in ("demo", "smoke"):
    c.rng_impl = "rbg"  # compiles several times faster on CPU than threefry
    c.data.root = ""
    c.data.methods = ()  # every method of the demo corpus
    c.data.compression = "c23"
    c.data.frames_per_video = 15
    c.data.mask_source = "auto"  # the demo's lossless mask videos (made by the same SSIM annotation)
    c.data.face_boxes = "face_boxes.json"
    c.model.spectral_size = ()
    # Resize + flip only: with the official augmentation the demo reached image_auc 0.74, pixel_f1 0.55 at step 800.
    c.data.augment = False
  if variant == "demo":
    c.data.size = 96
    # Every demo face is one person: training on 6 of the 8 segments (train + val; nothing selects on val) is
    # what lets held-out real frames score as real. Demo corpus v3, 2026-12-06, 2 quiet cores: 6.5 min,
    # eval image_auc 0.976, pixel_f1 0.86 per image (0.93 class-averaged); train only: image_auc 0.84, and
    # 2000 steps overfit (0.69).
    c.data.train_split = "train+val"
    c.model.update(dict(stem_channels=32, base_channels=16, feats_channels=64, out_channels=64))
    c.global_batch_size = 8
    c.epochs = 0
    c.total_steps = 800
    c.loss.image_weight = 2.0  # the image head lags the pixel heads when trained from scratch
    c.optimizer.update(dict(name="adamw", lr=1e-3, weight_decay=1e-4, schedule="cosine", end_lr=1e-5))
    c.log_every = 20
    c.eval_every = 200
    c.checkpoint_every = 200
  elif variant == "smoke":
    c.data.size = 64
    c.data.frames_per_video = 2
    c.model.update(dict(depth=26, stem_channels=16, base_channels=8, feats_channels=64, out_channels=64))
    c.global_batch_size = 4
    c.epochs = 0
    c.total_steps = 2
    c.log_every = 1
    c.checkpoint_every = 2
  # One evaluation set per manipulation (its fakes and the real frames): the columns of the cross-manipulation
  # matrix. Train on one (--config.data.methods='("Deepfakes",)') and evaluate each; the sweep file
  # configs/sweeps/msccnet_cross_manipulation.py runs the whole matrix (docs/protocols.md).
  methods = ("FaceSwap", "NeuralTextures") if variant in ("demo", "smoke") else c.data.methods
  c.eval_sets = ml_collections.ConfigDict({m.lower(): {"data": {"methods": (m,)}} for m in methods})
  return c
