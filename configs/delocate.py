"""Delocate configs: `paper` (FF++ c23, ViT-B MAE), `demo` (embedded face corpus, both stages in minutes on a CPU),
`smoke` (tests). The design choices and their reasons are in delocate_jax/__init__.py.

Run: python -m delocate_jax.main --config=configs/delocate.py:demo --workdir=DIR
Both stages run in order (DIR/stage1, DIR/stage2); stage 2 starts from stage 1's MAE and freezes it.
Cross-manipulation: --config.data.methods='("NeuralTextures",)' --config.data.cross_methods='("FaceSwap",)'
(the demo trains on FaceSwap and evaluates NeuralTextures as the unseen manipulation, `eval/cross_*`).
Ablations: random masking only: --config.masking.min_coverage=1.1 (no token counts as ROI);
--config.loss.mask_dice_weight=0;
--config.meta.enabled=True (first-order MLDG).
"""
import ml_collections

from common.train.config import base_config, checked_variant

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")


def _stage(stage: int, steps: int, lr: float, **extra) -> dict:
  return dict(stage=stage, total_steps=steps,
              optimizer=dict(name="adamw", lr=lr, b1=0.9, b2=0.95, weight_decay=0.05, schedule="cosine",
                             end_lr=lr * 0.01, warmup_steps=max(steps // 20, 1)),
              **extra)


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
  variant = checked_variant(arg, "Delocate")
  c = base_config()
  c.task = "delocate_jax.task:DelocateTask"
  c.stage = 1
  c.model = ml_collections.ConfigDict(dict(
      patch=16,
      # MAE ViT-B/16 (the standard MAE configuration).
      mae=dict(dim=768, depth=12, num_heads=12, decoder_dim=512, decoder_depth=8, decoder_heads=16, mlp_ratio=4.0),
      localizer=dict(dim=384, depth=6, num_heads=6, decoder_channels=(256, 128, 64, 32), skip_channels=16,
                     drop_path=0.1),
  ))
  c.masking = ml_collections.ConfigDict(dict(
      mask_ratio=0.75,      # MAE's ratio; ROI tokens first, random patches fill up to it
      roi_prob=0.5,         # chance of each of the 6 ROIs being masked (at least one per face)
      min_coverage=0.0,     # a token is in an ROI if any of its pixels is
      residual_groups=2,    # recovery passes over the tokens outside every ROI
  ))
  c.loss = ml_collections.ConfigDict(dict(norm_pix=False, cls_weight=1.0, mask_bce_weight=1.0, mask_dice_weight=1.0))
  c.meta = ml_collections.ConfigDict(dict(enabled=False, inner_lr=1e-3, test_weight=1.0))
  c.video_aggregation = "mean"
  c.data = ml_collections.ConfigDict(dict(
      root="",                  # FF++ root (original_sequences/, manipulated_sequences/, splits/); "" = demo corpus
      methods=FFPP_METHODS,     # manipulations trained on (stage 2) and evaluated in-domain; () = all but cross
      cross_methods=(),         # manipulations only evaluated (cross-manipulation), `eval/cross_*`
      compression="c23", frames_per_video=20, crop_scale=1.3,
      mask_source="official",   # FF++ mask videos (every method here has them; FaceShifter has none)
      face_boxes="",            # JSON of precomputed boxes {video: {frame: box}}; "" = LBP cascade detection
      verify="decode",          # index-time checks: 'header' (frame counts) or 'decode' (every frame, empty masks)
      on_error="raise",         # a bad video: 'raise', or 'skip' it when indexing (counted in the log)
      size=224, flip=True, worker_count=0, read_threads=4, prefetch=0,
      format="folder", prepared_dir="",  # 'arrayrecord': the --out of python -m common.data.prepare
      layout="faceforensics",   # or a cross-dataset test set: 'celeb_df' | 'dfdc' | 'dfd' (evaluation only)
  ))
  # The paper's test sets (python -m common.train.evaluate --workdir=RUN/stage2): FF++ (the trained split) and the
  # cross-dataset sets in their published layouts, read from eval_roots (--set eval_roots.celeb_df_v2=DIR ...;
  # docs/protocols.md). The demo and smoke configs read the demo corpus's tiny copies of the layouts instead.
  layouts = {"celeb_df_v2": "celeb_df", "dfdc": "dfdc", "dfd": "dfd"}
  c.eval_roots = ml_collections.ConfigDict({name: "" for name in layouts})
  c.eval_sets = ml_collections.ConfigDict(
      {"ffpp": {}} | {name: {"data": {"layout": layout, "root": f"{{{name}}}"}} for name, layout in layouts.items()})
  c.global_batch_size = 64
  c.reference_batch_size = 64 if variant == "paper" else 0  # the paper's batch, for --config.lr_scaling
  c.eval_split = "test"
  c.run_stages = "stage1,stage2"
  c.stages = ml_collections.ConfigDict({
      "stage1": _stage(1, steps=100_000, lr=1.5e-4 * 64 / 256, freeze=["model/localizer/"]),
      "stage2": _stage(2, steps=30_000, lr=1e-4, freeze=["model/mae/"], init_from_stage="stage1",
                       init_from=dict(workdir="", include="model/mae/"), best_metric="eval/video_auc"),
  })
  c.log_every = 100
  c.checkpoint_every = 2000

  if variant in ("demo", "smoke"):
    c.rng_impl = "rbg"  # compiles several times faster on CPU than threefry
    c.eval_roots = ml_collections.ConfigDict()
    for name in layouts:
      c.eval_sets[name].data.root = ""  # the demo corpus's copy of the layout
    c.data.root = ""
    c.data.methods = ("FaceSwap",)
    c.data.cross_methods = ("NeuralTextures",)
    c.data.frames_per_video = 15
    c.data.mask_source = "auto"  # the demo's lossless mask videos (made by the SSIM annotation)
    c.data.face_boxes = "face_boxes.json"
    c.model.localizer.drop_path = 0.0
  if variant == "demo":
    c.data.size = 64
    c.model.patch = 8
    c.model.mae = dict(dim=128, depth=4, num_heads=4, decoder_dim=96, decoder_depth=2, decoder_heads=4,
                       mlp_ratio=4.0)
    c.model.localizer.update(dict(dim=96, depth=3, num_heads=4, decoder_channels=(64, 32, 16), skip_channels=16))
    c.global_batch_size = 16
    c.log_every = 25
    c.checkpoint_every = 250
    # 4000 MAE steps: the recovery ratio (fake-region error / the same pixels of the real crop) was 0.93 after
    # 1000 steps (cosine over 1000) and 1.03 / 1.03 / 1.07 / 1.08 at steps 1000-4000 of this schedule.
    c.stages.stage1.update(_stage(1, steps=4000, lr=1e-3, freeze=["model/localizer/"]))
    c.stages.stage1.eval_every = 1000
    c.stages.stage2.update(_stage(2, steps=400, lr=5e-4))
    c.stages.stage2.eval_every = 200
  elif variant == "smoke":
    c.data.size = 32
    c.data.frames_per_video = 2
    c.model.patch = 8
    c.model.mae = dict(dim=32, depth=1, num_heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2, mlp_ratio=2.0)
    c.model.localizer.update(dict(dim=32, depth=1, num_heads=2, decoder_channels=(16, 8, 8), skip_channels=8))
    c.global_batch_size = 4
    c.log_every = 1
    c.checkpoint_every = 2
    c.stages.stage1.update(_stage(1, steps=2, lr=1e-3, freeze=["model/localizer/"]))
    c.stages.stage2.update(_stage(2, steps=2, lr=1e-3))
  return c
