"""Writes tests/testdata/lpips_fid_golden.npz: LPIPS (alex, vgg) and pytorch-fid InceptionV3 outputs on seeded weights.

Not run by the test suite: it needs PyTorch, torchvision, `lpips` and `pytorch-fid` (in a separate environment, e.g.
`python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch torchvision lpips pytorch-fid scipy`), and no
network: the backbones are built without ImageNet weights (`pnet_rand=True`) and the Inception state dict is handed
to pytorch-fid's own `fid_inception_v3()` in place of its download.

  /tmp/torchenv/bin/python tests/testdata/generate_lpips_fid_golden.py

Every backbone / Inception parameter and buffer is drawn from `np.random.default_rng(SEED[net])` in `state_dict`
order by `seeded_weights.seeded_value` (the JAX test's rule too), so the golden file stores only the key names, shapes,
inputs and outputs. The LPIPS linear heads are the lpips package's pretrained v0.1 heads, stored in the golden file
(a few kB).
"""
import os
import sys

import numpy as np
import torch
import torchvision

import lpips
from pytorch_fid import fid_score
from pytorch_fid import inception as fid_inception

from seeded_weights import SEED, seeded_value  # this folder's, first on sys.path when run as a script

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lpips_fid_golden.npz")


def seeded_state_dict(template: dict, seed: int, prefix: str = "") -> dict:
  rng = np.random.default_rng(seed)
  out = {}
  for key, value in template.items():
    if not key.startswith(prefix):
      continue
    if key.endswith("num_batches_tracked"):
      out[key] = torch.zeros_like(value)
      continue
    out[key] = torch.from_numpy(seeded_value(rng, key, value.shape))
  return out


def lpips_golden(net: str, golden: dict) -> None:
  tv = torchvision.models.alexnet(weights=None) if net == "alex" else torchvision.models.vgg16(weights=None)
  backbone = seeded_state_dict(tv.state_dict(), SEED[net], prefix="features.")
  model = lpips.LPIPS(net=net, pnet_rand=True, pretrained=True, verbose=False).eval()
  # lpips' slices keep torchvision's indices: features.N <-> net.sliceK.N
  target = {}
  for name in model.net.state_dict():
    index = name.split(".", 1)[1]  # sliceK.N.weight -> N.weight
    target[name] = backbone[f"features.{index}"]
  model.net.load_state_dict(target, strict=True)
  rng = np.random.default_rng(100 + SEED[net])
  # inputs in [-1, 1] on a 1/127.5 grid: stored as uint8 (x = u / 127.5 - 1 is exact enough in float32)
  xu = rng.integers(0, 256, (2, 3, 64, 64), dtype=np.uint8)
  yu = np.clip(xu + rng.normal(0, 40, xu.shape), 0, 255).astype(np.uint8)
  x, y = (xu.astype(np.float32) / np.float32(127.5) - 1), (yu.astype(np.float32) / np.float32(127.5) - 1)
  with torch.no_grad():
    total, per_layer = model(torch.from_numpy(x), torch.from_numpy(y), retPerLayer=True)
    u8 = rng.integers(0, 256, (2, 48, 40, 3), dtype=np.uint8)
    v8 = rng.integers(0, 256, (2, 48, 40, 3), dtype=np.uint8)
    to01 = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    total_u8 = model(to01(u8), to01(v8), normalize=True)
  heads = {k: v.numpy() for k, v in model.state_dict().items() if k.startswith("lin") and not k.startswith("lins.")}
  golden[f"{net}_keys"] = np.array(list(backbone))
  golden[f"{net}_shapes"] = np.array([np.pad(v.shape, (0, 4 - v.ndim)) for v in backbone.values()], np.int64)
  golden.update({f"{net}_{k}": v for k, v in heads.items()})
  golden[f"{net}_xu"], golden[f"{net}_yu"] = xu.transpose(0, 2, 3, 1), yu.transpose(0, 2, 3, 1)  # NHWC
  golden[f"{net}_lpips"] = total.numpy().reshape(-1)
  golden[f"{net}_lpips_layers"] = np.stack([r.numpy().reshape(-1) for r in per_layer])  # [5, B]
  golden[f"{net}_u8_a"], golden[f"{net}_u8_b"] = u8, v8
  golden[f"{net}_lpips_u8"] = total_u8.numpy().reshape(-1)


def inception_golden(golden: dict) -> None:
  # The architecture exactly as pytorch_fid.inception.fid_inception_v3() builds it, only to read its keys/shapes.
  template = fid_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
  template.Mixed_5b = fid_inception.FIDInceptionA(192, pool_features=32)
  template.Mixed_5c = fid_inception.FIDInceptionA(256, pool_features=64)
  template.Mixed_5d = fid_inception.FIDInceptionA(288, pool_features=64)
  template.Mixed_6b = fid_inception.FIDInceptionC(768, channels_7x7=128)
  template.Mixed_6c = fid_inception.FIDInceptionC(768, channels_7x7=160)
  template.Mixed_6d = fid_inception.FIDInceptionC(768, channels_7x7=160)
  template.Mixed_6e = fid_inception.FIDInceptionC(768, channels_7x7=192)
  template.Mixed_7b = fid_inception.FIDInceptionE_1(1280)
  template.Mixed_7c = fid_inception.FIDInceptionE_2(2048)
  state_dict = seeded_state_dict(template.state_dict(), SEED["inception"])
  # pytorch-fid's own constructor, with our state dict in place of the download (strict load_state_dict).
  fid_inception.load_state_dict_from_url = lambda *args, **kwargs: state_dict
  model = fid_inception.InceptionV3([3]).eval()
  rng = np.random.default_rng(103)
  # inputs in [0, 1] on a 1/255 grid, stored as uint8
  images_u8 = rng.integers(0, 256, (3, 3, 75, 75), dtype=np.uint8)
  images_u8[1] = np.clip(images_u8[0] * 0.5 + 64 + rng.normal(0, 10, images_u8[0].shape), 0, 255).astype(np.uint8)
  big_u8 = rng.integers(0, 256, (1, 3, 304, 300), dtype=np.uint8)  # shrinking resize (no antialiasing)
  images, big = images_u8.astype(np.float32) / 255, big_u8.astype(np.float32) / 255
  with torch.no_grad():
    features = model(torch.from_numpy(images))[0].reshape(3, -1).numpy()
    features_big = model(torch.from_numpy(big))[0].reshape(1, -1).numpy()
  assert np.isfinite(features).all() and 1e-3 < np.abs(features).mean() < 1e3, np.abs(features).mean()
  kept = [k for k in state_dict if not k.endswith("num_batches_tracked")]
  golden["inception_keys"] = np.array(kept)
  golden["inception_shapes"] = np.array([np.pad(state_dict[k].shape, (0, 4 - state_dict[k].ndim)) for k in kept],
                                        np.int64)
  golden["inception_xu"] = images_u8.transpose(0, 2, 3, 1)
  golden["inception_features"] = features
  golden["inception_xu_big"] = big_u8.transpose(0, 2, 3, 1)
  golden["inception_features_big"] = features_big
  # A Fréchet distance between two small feature sets (16-d, 40 and 50 samples), and one with a singular product.
  a = rng.standard_normal((40, 16))
  b = 0.8 * rng.standard_normal((50, 16)) @ rng.uniform(0.5, 1.5, (16, 16)) / 4 + 0.3
  golden["fid_a"], golden["fid_b"] = a, b
  mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
  mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
  golden["fid"] = np.float64(fid_score.calculate_frechet_distance(mu1, s1, mu2, s2))


def main() -> None:
  torch.manual_seed(0)
  golden = {}
  for net in ("alex", "vgg"):
    lpips_golden(net, golden)
  inception_golden(golden)
  golden["versions"] = np.array([f"torch {torch.__version__}", f"torchvision {torchvision.__version__}",
                                 f"lpips {getattr(lpips, '__version__', '?')}", f"python {sys.version.split()[0]}"])
  np.savez_compressed(OUT, **golden)
  print(f"wrote {OUT} ({os.path.getsize(OUT) / 1e3:.0f} kB)")
  for k, v in golden.items():
    if k.endswith(("lpips", "lpips_u8", "fid")):
      print(k, v)


if __name__ == "__main__":
  main()
