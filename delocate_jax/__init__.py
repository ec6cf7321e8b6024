"""Delocate: deepfake detection and localization from masked-ROI recovery discrepancy (Hu et al., IJCAI 2024).

No official code is public and only the abstract-level description is confirmed (specs/msccnet_delocate.md §2):
(1) recovering: a masked autoencoder trained on real faces only, masking randomly chosen regions of interest,
so that it recovers real faces well and manipulated ones poorly; (2) localization: the recovery output and the
ground-truth forgery mask together supervise localization; a classification head; cross-domain evaluation;
"meta-learning" (from secondary summaries). Everything else is a choice made here, each a config field
(configs/delocate.py), with its default and reason:

Recovering (stage 1, `model.mae`, `masking`, `loss.norm_pix`)
  * MAE ViT-B/16 at 224 (encoder 768x12, decoder 512x8, MLP 4, LayerNorm eps 1e-6, sin-cos positions):
    the standard MAE, the most likely backbone; trained from scratch (no MAE weights are loaded).
  * ROIs `masking`: eyes, nose, mouth, cheeks (6 ellipses) from landmarks when a record has them, else from the
    aligned 1.3x face-crop geometry (FF++ crops carry no landmarks; `delocate_jax.face_regions`). Each ROI picked
    with `roi_prob` 0.5 (at least one per face), all its tokens masked (`min_coverage` 0: any overlap), then
    random patches up to `mask_ratio` 0.75 (MAE's ratio; a fixed count keeps shapes static).
  * Loss: MSE on the masked patches' pixels, `norm_pix` False: the recovery must be an image (norm-pix
    predictions cannot be mapped back to pixels without the unknown patch statistics).
  * Whole-face recovery (eval and stage 2): one MAE pass per ROI plus `residual_groups` 2 passes over the other
    tokens, each topped up to the training mask ratio, each token taken from the pass that targets it: every
    region is in-painted from context, as in training.

Localization (stage 2, `model.localizer`, `loss`, `meta`, `video_aggregation`)
  * Input concat(face, recovery, |face - recovery|) (9 channels, normalised), the issue's reading of "the
    recovery supervises localization"; the MAE is frozen (`freeze`) and in eval mode: stage 1 defines "real".
  * Encoder-decoder: a ViT-S-like encoder (384x6, patch 16) trained from scratch (its input is not RGB), a
    progressive x2 bilinear + conv decoder to full resolution with a full-resolution skip of the input (the
    pixel discrepancy reaches the mask directly); class head on the class token. No "mapping module" (its
    design is unknown).
  * Loss: `cls_weight` BCE + `mask_bce_weight` BCE + `mask_dice_weight` Dice, 1 each (the spec's provisional
    loss); real faces supervised with all-zero masks.
  * `meta.enabled` False: the regime is unconfirmed. When on, a first-order MLDG step (meta-test domain = one
    training manipulation per step plus half the real faces; `inner_lr` 1e-3, `test_weight` 1).
  * Video score: mean of frame scores (`video_aggregation` 'mean' | 'max').

Data and training (`data`, `stages`)
  * FF++ c23, the four manipulations with masks (FaceShifter has none), official mask videos, 20 frames per
    video, 1.3x crops, 224x224; `data.cross_methods` evaluated without training (cross-manipulation); the
    cross-dataset sets (Celeb-DF v2, DFDC, DFD) are `eval_sets` read by `common.data.readers.face_videos`
    (frame and video metrics only: they have no pixel masks).
  * AdamW (betas 0.9/0.95, weight decay 0.05, cosine with 5% warmup): MAE's recipe; stage 1 lr 1.5e-4 x B/256,
    stage 2 lr 1e-4; step counts are placeholders (unknown).
"""
