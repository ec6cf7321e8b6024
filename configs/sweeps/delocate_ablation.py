"""Delocate ablations: each entry is (name, config overrides) applied over a base config (configs/delocate.py:*).

  python -m common.train.sweep --sweep=configs/sweeps/delocate_ablation.py --base=configs/delocate.py:smoke --workdir=DIR

Masking of the stage-1 MAE: ROI-first (the default) or random only (`masking.min_coverage=1.1`: no token counts as
an ROI, configs/delocate.py); stage-2 meta-learning (first-order MLDG, `meta.enabled`) off (the default) or on.
"""

RANDOM_MASKING = {"masking.min_coverage": 1.1}
META = {"meta.enabled": True}


def get_sweep() -> list[tuple[str, dict]]:
  return [
      ("roi_masking", {}),
      ("random_masking", dict(RANDOM_MASKING)),
      ("roi_masking_meta", dict(META)),
      ("random_masking_meta", {**RANDOM_MASKING, **META}),
  ]
