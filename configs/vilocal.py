"""ViLocal configs: `paper` (the official recipe), `demo` (embedded corpus, minutes on a CPU), `smoke` (tests).

Run: python -m vilocal_jax.main --config=configs/vilocal.py:demo --workdir=DIR
Both stages run in order (DIR/stage1, DIR/stage2); stage 2 starts from stage 1's encoder and freezes it.
Ablations (configs/sweeps/vilocal_ablation.py):
  --config.model.noise_layer=False   no HP3D noise layer (the encoder reads the frames themselves).
  no contrastive stage: stage 2 alone, from scratch, the whole model trained with the focal loss only:
    --config.run_stages=stage2 --config.stages.stage2.freeze='()' --config.stages.stage2.init_from_stage=''
    (stage 2 otherwise initialises from DIR/stage1, which this run never writes).
  one joint stage: the same single stage with the encoder's contrastive loss added to the focal loss
    (focal + loss.stage2_contrastive_weight x the stage-1 pixel InfoNCE on the same forward pass's embeddings;
    weight 1 is our choice), stage 2's schedule:
    the three flags above and --config.loss.stage2_contrastive_weight=1.0
Also --config.model.depth / widths, --config.stage2_encoder_train_mode=True (the official stage-2 quirk).
"""
import ml_collections

from common.train.config import base_config, checked_variant


def _stage(stage: int, epochs: int, lr: float, end_lr: float, decay_epochs: int, **extra) -> dict:
  """Official schedule: AdamW (wd 1e-4), cosine annealing stepped once per epoch over `decay_epochs`."""
  return dict(stage=stage, epochs=epochs,
              optimizer=dict(name="adamw", lr=lr, weight_decay=1e-4, schedule="cosine", end_lr=end_lr,
                             per_epoch=True, decay_epochs=decay_epochs),
              **extra)


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
  variant = checked_variant(arg, "ViLocal")
  c = base_config()
  c.task = "vilocal_jax.task:ViLocalTask"
  c.stage = 1
  c.stage2_encoder_train_mode = False  # True reproduces the official code (frozen encoder left in train mode)
  c.model = ml_collections.ConfigDict(dict(
      depth=(5, 8, 20, 7), widths=(32, 64, 128, 256), noise_layer=True, drop_rate=0.3, attn_drop_rate=0.2,
      drop_path_rate=0.3,
      # 'chunked': attention over query chunks, rematerialised; the 6480-token stages 3-4 at 240x432 need
      # O(N^2) ~ 0.7-1.3 GB per block per clip pair with plain 'xla' attention. 'xla' for small inputs.
      attention_impl="chunked", query_chunk=1024))
  c.loss = ml_collections.ConfigDict(dict(
      num_samples=3000, temperature=0.1, alpha=0.5, gamma=2.0,
      stage2_contrastive_weight=0.0))  # > 0 with an unfrozen stage 2: the one-joint-stage ablation (see above)
  c.data = ml_collections.ConfigDict(dict(
      root="",              # dataset root in the DAVIS / YouTube-VOS layout; "" = the embedded demo corpus
      methods=(),           # inpainting methods to train on (sub-folders of Inpainted/); () = all
      mask_ratio_bin="",    # 'small' | 'medium' | 'large': only videos of that mean mask ratio (split_files.py)
      train_split="train", clip_length=5, clip_stride=1, eval_clip_stride=1,
      height=240, width=432,  # every clip is resized to this (the official loader); eval runs at this size
      train_crop=(),          # (h, w): training clips are random crops of that size after the resize; () = none
      flip=False,             # random horizontal flips in training (the official code has none)
      verify="header",        # index-time checks: 'none', 'header' (sizes) or 'decode' (every file, empty masks)
      on_error="raise",       # a bad video: 'raise', or 'skip' it when indexing (counted in the log)
      worker_count=0, read_threads=4, prefetch=0,
      format="folder", prepared_dir=""))  # 'arrayrecord': the --out of python -m common.data.prepare
  c.global_batch_size = 2  # the official batch
  c.reference_batch_size = 2 if variant == "paper" else 0  # the paper's batch, for --config.lr_scaling
  c.eval_split = "test"
  c.best_metric = ""
  c.run_stages = "stage1,stage2"
  c.stages = ml_collections.ConfigDict({
      "stage1": _stage(1, epochs=10, lr=5e-4, end_lr=5e-6, decay_epochs=10, freeze=["model/decoder/"]),
      "stage2": _stage(2, epochs=5, lr=1e-4, end_lr=1e-6, decay_epochs=10, freeze=["model/encoder/"],
                       init_from_stage="stage1", init_from=dict(include="model/encoder/"),
                       best_metric="eval/pixel_f1"),
  })
  c.log_every = 100
  c.checkpoint_every = 1000

  if variant == "paper":
    # Trained on VI + OP (the released `train_VI_OP` checkpoint); tested on DAVIS inpainted by VI, OP and the unseen
    # CP, and on MOSE100 inpainted by E2FGVI / FuseFormer / STTN, each split into small / medium / large videos
    # by mean mask ratio. Each root holds Inpainted/<method>/, Annotations/ and ImageSets/test.txt:
    #   python -m common.train.evaluate --workdir=RUN/stage2 --set eval_roots.davis=DIR --set eval_roots.mose100=DIR
    c.data.methods = ("VI", "OP")
    c.eval_roots = ml_collections.ConfigDict({"davis": "", "mose100": ""})
    c.eval_sets = ml_collections.ConfigDict(
        {f"davis_{m.lower()}": {"data": {"root": "{davis}", "methods": (m,)}} for m in ("VI", "OP", "CP")}
        | {f"mose100_{m.lower()}_{b}": {"data": {"root": "{mose100}", "methods": (m,), "mask_ratio_bin": b}}
           for m in ("E2FGVI", "FuseFormer", "STTN") for b in ("small", "medium", "large")})
  if variant in ("demo", "smoke"):
    c.rng_impl = "rbg"  # compiles several times faster on CPU than threefry
    # The protocol's shape on the demo corpus's two inpainters: per inpainter, all test videos and the small /
    # medium ones (no demo video reaches the large bin); train on one with --config.data.methods='("telea",)'.
    c.eval_sets = ml_collections.ConfigDict(
        {m: {"data": {"methods": (m,)}} for m in ("telea", "ns")}
        | {f"{m}_{b}": {"data": {"methods": (m,), "mask_ratio_bin": b}} for m in ("telea", "ns")
           for b in ("small", "medium")})
  if variant == "demo":
    # The corpus's native 120x216 (no resampling: downscaling smears the noise residual the method reads);
    # training on random 60x108 crops (~2.5 s per stage-1 step on 2 cores) with flips, evaluation on whole frames.
    c.data.height, c.data.width = 120, 216
    c.data.train_crop, c.data.flip = (60, 108), True
    c.model.depth = (1, 1, 2, 1)
    c.model.attention_impl = "xla"
    c.model.drop_rate, c.model.attn_drop_rate, c.model.drop_path_rate = 0.1, 0.0, 0.1
    c.global_batch_size = 4
    c.log_every = 10
    c.checkpoint_every = 80
    c.stages.stage1.epochs = 3
    c.stages.stage1.optimizer.update(dict(lr=1e-3, decay_epochs=3))
    c.stages.stage2.epochs = 10                   # the decoder alone: ~0.2 s per step
    c.stages.stage2.optimizer.update(dict(lr=1e-3, decay_epochs=10))
  elif variant == "smoke":
    c.data.height, c.data.width = 32, 48
    c.data.clip_length = 3                        # the tiny demo build's videos have 4 frames
    c.model.depth = (1, 1, 1, 1)
    c.model.widths = (8, 16, 64, 64)
    c.model.attention_impl = "xla"
    c.global_batch_size = 4
    c.log_every = 1
    c.checkpoint_every = 2
    for stage in ("stage1", "stage2"):
      c.stages[stage].epochs = 0
      c.stages[stage].total_steps = 2
      c.stages[stage].optimizer.per_epoch = False
      c.stages[stage].optimizer.decay_epochs = 0
  return c
