"""MSCCNet ablations: each entry is (name, config overrides) applied over a base config (configs/msccnet.py:*).

  python -m common.train.sweep --sweep=configs/sweeps/msccnet_ablation.py --base=configs/msccnet.py:smoke --workdir=DIR

no_mfa: the head reads only the last stage (conv3x3+BN+ReLU of C4, no C2 / C3 branches, no fusion conv).
no_mscc: the plain segmentation head (the decoder) on the aggregated features: no DCT class centers, no coarse map
and so no map loss. no_mfa_no_mscc: the decoder on the C4 projection. configs/msccnet.py's docstring has details.
"""


def get_sweep() -> list[tuple[str, dict]]:
  return [
      ("full", {}),
      ("no_mfa", {"model.mfa": False}),
      ("no_mscc", {"model.mscc": False}),
      ("no_mfa_no_mscc", {"model.mfa": False, "model.mscc": False}),
  ]
