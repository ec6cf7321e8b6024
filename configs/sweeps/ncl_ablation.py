"""NCL-IML ablations: each entry is (name, config overrides) applied over a base config (configs/ncl.py:*).

  python -m common.train.sweep --sweep=configs/sweeps/ncl_ablation.py --base=configs/ncl.py:smoke --workdir=DIR
"""


def get_sweep() -> list[tuple[str, dict]]:
  return [
      ("full", {}),
      ("no_contrastive", {"loss.contrastive_weight": 0.0}),
      ("contour_discarded", {"ncl.contour_mode": "discard"}),
      ("contour_as_tampered", {"ncl.contour_mode": "tampered"}),
      ("single_branch", {"model.num_branches": 1}),
      ("no_pivot_consistency", {"loss.pivot_weight": 0.0}),
  ]
