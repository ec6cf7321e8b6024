"""SafePaint's quality evaluation with LPIPS per hole-ratio bin and FID (seeded random LPIPS / Inception weights in
.npz files, the smoke config's untrained generator): the columns appear with weights and are left out without."""
import logging
import math

import numpy as np
import pytest

from common.data import masks as mask_lib
from configs import safepaint as safepaint_configs
from safepaint_jax import evaluate
from safepaint_jax.task import bin_name
from tests.test_lpips_fid import GOLDEN, heads, seeded_state_dict
from tests.test_safepaint_task import write_folders


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("quality")
  images, masks = write_folders(str(root / "data"), n=4)
  with np.load(GOLDEN, allow_pickle=False) as f:
    golden = dict(f)
  files = {"lpips_backbone_weights": str(root / "alexnet.npz"), "lpips_heads_weights": str(root / "heads.npz"),
           "fid_weights": str(root / "pt_inception.npz")}
  np.savez(files["lpips_backbone_weights"], **seeded_state_dict(golden, "alex"))
  np.savez(files["lpips_heads_weights"], **heads(golden, "alex"))
  np.savez(files["fid_weights"], **seeded_state_dict(golden, "inception"))
  config = safepaint_configs.get_config("smoke")
  config.data.update(dict(test_images=images, test_masks=masks, train_images=images, train_masks=masks))
  return config, files


@pytest.mark.slow  # Inception at 299x299 on 8 images and the smoke task's compilations: ~40 s of CPU
def test_untrained_quality_reports_lpips_per_bin_and_fid(setup):
  config, files = setup
  config = config.copy_and_resolve_references()
  config.quality.update(files)
  config.quality.fid_batch_size = 8  # 4 originals + 4 composites: one Inception call
  config.quality.fid_method = "svd"  # sqrtm of a 2048x2048 product: a minute of CPU
  models = evaluate.PerceptualModels(evaluate.quality_settings(config))
  results = evaluate.untrained_metrics(config, models)
  assert results["fid_images"] == 4 and np.isfinite(results["fid"]) and results["fid"] >= -1e-6
  assert 0 < results["lpips"] < 1
  per_bin = [results[f"lpips_hole_{bin_name(lo, hi)}"] for lo, hi in mask_lib.HOLE_RATIO_BINS]
  assert sum(not math.isnan(v) for v in per_bin) >= 2  # four images drawn in four bins (resizing may move one)
  text = evaluate.table({"untrained": results, "again": results})
  assert "PSNR / SSIM / L1 / LPIPS" in text and "4 images each" in text and "strongly biased" in text
  assert min(v for v in per_bin if not math.isnan(v)) <= results["lpips"] <= max(v for v in per_bin
                                                                                  if not math.isnan(v))


def test_without_weight_files_the_columns_are_left_out_with_one_log_line(setup, caplog):
  config, _ = setup
  with caplog.at_level(logging.INFO):
    models = evaluate.PerceptualModels(evaluate.quality_settings(config))
  assert not models.enabled
  lines = [r.getMessage() for r in caplog.records if "left out of the quality table" in r.getMessage()]
  assert len(lines) == 1 and "quality.lpips_backbone_weights" in lines[0] and "quality.fid_weights" in lines[0]
  # A stored config from before `quality` existed gets the defaults; flags override.
  del config.quality
  q = evaluate.quality_settings(config, fid_weights="/x.npz", lpips_net="")
  assert q["fid_weights"] == "/x.npz" and q["lpips_net"] == "alex"
  text = evaluate.table({"a": {"psnr": 20.0, "ssim": 0.5, "l1": 0.1, "psnr_stage1": 19.0,
                               **{f"{m}_hole_{bin_name(lo, hi)}": 0.0 for m in ("psnr", "ssim", "l1")
                                  for lo, hi in mask_lib.HOLE_RATIO_BINS}}})
  assert "LPIPS" not in text and "FID" not in text


def test_missing_weight_file_names_the_config_key(setup, tmp_path):
  config, _ = setup
  q = evaluate.quality_settings(config, fid_weights=str(tmp_path / "nowhere.pth"))
  with pytest.raises(FileNotFoundError, match="quality.fid_weights"):
    evaluate.PerceptualModels(q)
