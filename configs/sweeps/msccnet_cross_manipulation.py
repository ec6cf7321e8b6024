"""MSCCNet's cross-manipulation matrix: one run per manipulation, trained on its fakes (and the real frames) alone,
each evaluated on every manipulation's test set (the config's `eval_sets`, one per manipulation).

  python -m common.train.sweep --sweep=configs/sweeps/msccnet_cross_manipulation.py \\
      --base=configs/msccnet.py:paper --workdir=DIR --eval_sets --metrics=image_auc,pixel_f1_class_avg

DIR/sweep.md: a row per training manipulation (`train_<method>`), a column `<test set>/<metric>` per test
manipulation; the diagonal is in-domain. Over `:paper` (FF++ c40; add --set data.compression=c23 for c23) the five
FF++ manipulations, over `:demo` / `:smoke` the demo corpus's two.
"""


def get_sweep(config) -> list[tuple[str, dict]]:
  methods = [tuple(spec.data.methods)[0] for spec in config.eval_sets.values()]
  return [(f"train_{m.lower()}", {"data.methods": (m,)}) for m in methods]
