"""SafePaint tools on tiny models: predict writes truncated PNGs, the arena judges three inpainters with a
served detector (the engine's toy segmentation task trained for two steps) and writes its table and plot."""
import csv
import os
import shutil

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
  assert served.input.kind == "inpaint" and served.input.square_crop and served.inputs["mask"]["dtype"] == "uint8"
  (tmp_path / "masks").mkdir()
  bad = tmp_path / "images"
  bad.mkdir()
  for name in sorted(os.listdir(setup["images"])):
    shutil.copy(os.path.join(setup["images"], name), bad / name)
  (bad / "zz_broken.png").write_bytes(b"not a png")
  rows = predict.predict_files(served, str(bad), setup["masks"], str(tmp_path / "out"))
  assert len(rows) == 5 and [bool(r["error"]) for r in rows] == [False] * 4 + [True]  # the broken one is a row
  written = sorted(str(tmp_path / "out" / n) for n in os.listdir(tmp_path / "out") if n.endswith("_inpainted.png"))
  assert len(written) == 4
  out = np.asarray(Image.open(written[0]))
  mask = predict.data.read_hole_mask(os.path.join(setup["masks"], "000.png"), 64)
  image = predict.data.square_resize(np.asarray(Image.open(os.path.join(setup["images"], "000.png"))), 64)
  assert out.shape == (64, 64, 3) and rows[0]["hole_share"] == pytest.approx(mask.mean())
  np.testing.assert_allclose(out[mask == 0], image[mask == 0], atol=1)  # truncation: at most one level lower
  assert os.path.isfile(written[0].replace("_inpainted", "_stage1"))
  assert (tmp_path / "out" / "inpainted.csv").is_file()


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


def test_detectors_are_named_paths():
  assert arena.parse_detectors(["a=/x", "b=/y"]) == {"a": "/x", "b": "/y"}
  with pytest.raises(ValueError, match="name=path"):
    arena.parse_detectors(["/just/a/path"])
