"""SafePaint tools on tiny models: predict writes truncated PNGs, the arena judges three inpainters with a
served detector (the engine's toy segmentation task trained for two steps) and writes its table and plot."""
import csv
import os

import numpy as np
import pytest
from PIL import Image

from common.train import loop, serving, weights
from configs import safepaint as safepaint_configs
from safepaint_jax import arena, convert, predict
from tests import toy_task
from tests.test_safepaint_model import jit_build, rbg
from tests.test_safepaint_task import write_folders


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("tools")
  images, masks = write_folders(str(root / "data"), n=4)
  config = safepaint_configs.get_config("smoke")
  inpainter = str(root / "safepaint")
  weights.to_workdir(jit_build(lambda: convert.build_generator(config, rbg())), config, inpainter,
                     model_name="generator")
  detector = str(root / "toy")
  toy = toy_task.get_config()
  toy.update(dict(total_steps=2, eval_every=0, checkpoint_every=2))
  loop.train_and_evaluate(toy, detector)
  return dict(images=images, masks=masks, inpainter=inpainter, detector=detector, root=root)


@pytest.mark.slow  # the shared setup trains a toy detector and writes a SafePaint run: ~45 s, then ~10 s
def test_predict_writes_composites_that_keep_the_known_pixels(setup, tmp_path):
  served = serving.load_workdir(setup["inpainter"])
  written = predict.predict_files(served, setup["images"], setup["masks"], str(tmp_path))
  assert len(written) == 4 and all(os.path.isfile(p) for p in written)
  out = np.asarray(Image.open(written[0]))
  mask = predict.data.read_hole_mask(os.path.join(setup["masks"], "000.png"), 64)
  image = predict.data.square_resize(np.asarray(Image.open(os.path.join(setup["images"], "000.png"))), 64)
  assert out.shape == (64, 64, 3)
  np.testing.assert_allclose(out[mask == 0], image[mask == 0], atol=1)  # truncation: at most one level lower
  assert os.path.isfile(written[0].replace("_inpainted", "_stage1"))


@pytest.mark.slow  # ~30 s after the shared setup (three inpainters through a served detector)
def test_arena_writes_table_and_plot_for_every_inpainter(setup, tmp_path):
  rows = arena.run_arena(setup["inpainter"], {"toy": setup["detector"]}, str(tmp_path), images=setup["images"],
                         masks=setup["masks"], limit=3)
  assert [r["inpainter"] for r in rows] == list(arena.INPAINTERS)
  for r in rows:
    assert 0 <= r["pixel_f1"] <= 1 and 0 <= r["pixel_auc"] <= 1 and r["images"] == 3
    assert np.isfinite(r["psnr"]) and 0 < r["ssim"] <= 1
  telea = next(r for r in rows if r["inpainter"] == "telea")
  untrained = next(r for r in rows if r["inpainter"] == "safepaint")
  assert telea["psnr"] > untrained["psnr"]  # smooth images: Telea is nearly exact, an untrained generator is not
  with open(tmp_path / "arena.csv") as f:
    assert len(list(csv.DictReader(f))) == 3
  assert "| toy | telea |" in (tmp_path / "arena.md").read_text()
  assert (tmp_path / "arena.png").stat().st_size > 1000


def test_detector_normalisation_is_read_from_manifests_or_forced():
  assert arena.detect_normalisation("RGB /255, ImageNet mean (0.485, 0.456, 0.406) and std") == "imagenet"
  assert arena.detect_normalisation("RGB frames scaled to [0, 1] (no mean/std)") == "unit"
  assert arena.detect_normalisation("values 0-255 (the model subtracts the ImageNet mean)") == "255"
  with pytest.raises(ValueError, match="@imagenet"):
    arena.detect_normalisation("whatever")
  assert arena.parse_detectors(["a=/x@unit", "b=/y"]) == {"a": "/x@unit", "b": "/y"}
  with pytest.raises(ValueError, match="name=path"):
    arena.parse_detectors(["/just/a/path"])
