"""ViLocal ablations: each entry is (name, config overrides) applied over a base config (configs/vilocal.py:*).

  python -m common.train.sweep --sweep=configs/sweeps/vilocal_ablation.py --base=configs/vilocal.py:smoke --workdir=DIR

full: both stages (contrastive encoder, then the decoder on the frozen encoder). no_noise_layer: the same without
the HP3D layer. no_contrastive_stage: stage 2 alone from scratch, the whole model trained with the focal loss
(no stage-1 initialisation, nothing frozen). joint_stage: that single stage with the stage-1 pixel InfoNCE added
to the focal loss (weight 1) on the same forward pass's embeddings. Both single-stage entries use stage 2's
schedule, so they differ only in the contrastive term.
"""

SINGLE_STAGE = {"run_stages": "stage2", "stages.stage2.freeze": (), "stages.stage2.init_from_stage": ""}


def get_sweep() -> list[tuple[str, dict]]:
  return [
      ("full", {}),
      ("no_noise_layer", {"model.noise_layer": False}),
      ("no_contrastive_stage", dict(SINGLE_STAGE)),
      ("joint_stage", {**SINGLE_STAGE, "loss.stage2_contrastive_weight": 1.0}),
  ]
