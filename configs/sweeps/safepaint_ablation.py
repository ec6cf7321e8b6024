"""SafePaint ablations: each entry is (name, config overrides) applied over a base config (configs/safepaint.py:*).

  python -m common.train.sweep --sweep=configs/sweeps/safepaint_ablation.py --base=configs/safepaint.py:smoke --workdir=DIR

no_rwsa: the fine stage without its RWSA blocks. unseparated_attention: the RWSA blocks with the region-wise
separation removed (hole / background gates 1 everywhere). no_domain_loss: loss.domain = 0. The paper's own
ablation table could not be read; configs/safepaint.py's docstring defines each variant.
"""


def get_sweep() -> list[tuple[str, dict]]:
  return [
      ("full", {}),
      ("no_rwsa", {"model.attention": "none"}),
      ("unseparated_attention", {"model.attention": "global"}),
      ("no_domain_loss", {"loss.domain": 0.0}),
  ]
