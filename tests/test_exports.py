"""Every method's export keeps the inference contract (`common.inference`): uint8 inputs described by manifest
fields, a model card, and, for the fully convolutional ones, symbolic spatial sizes. All five exports run in one
fresh process that imports neither TensorFlow nor any method package, at two input sizes where the export is
symbolic, and give the live task's outputs."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from common import inference
from common.train import checkpoint as ckpt_lib
from common.train import config as config_lib
from common.train import export, weights
from configs import delocate, msccnet, ncl, safepaint, vilocal

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"vilocal": vilocal, "ncl": ncl, "msccnet": msccnet, "delocate": delocate, "safepaint": safepaint}
PACKAGES = ("tensorflow", "clu", "vilocal_jax", "ncl_jax", "msccnet_jax", "delocate_jax", "safepaint_jax")


def _step_zero_run(name: str, workdir: str):
  """The smoke config's final stage at its initial weights, saved as a finished step-0 run; returns the task
  and its state."""
  config = weights.final_stage_config(CONFIGS[name].get_config("smoke"))
  task = config_lib.build_task(config)
  state = jax.jit(task.init)(task.key(0))
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  ckpt.save(0, state, None, config, force=True)
  ckpt.close()
  ckpt_lib.write_completion(workdir, 0, {})
  return task, state


def _inputs(manifest: dict, rng: np.random.Generator, batch: int = 2) -> list[dict]:
  """Random uint8 inputs at the trained size and, where the export is symbolic, at one more multiple."""
  spec = inference.InputSpec.from_manifest(manifest["input"])
  sizes = [spec.size] + ([(spec.size[0] + spec.multiple, spec.size[1] + 2 * spec.multiple)] if spec.symbolic else [])
  out = []
  for h, w in sizes:
    dims = {"h": h, "w": w}
    out.append({name: rng.integers(0, 256, (batch, *(dims.get(d, d) for d in s["shape"])), np.uint8)
                for name, s in manifest["inputs"].items()})
  return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  root = tmp_path_factory.mktemp("exports")
  runs = {}
  for name in CONFIGS:
    workdir, out = str(root / name / "run"), str(root / name / "export")
    task, state = _step_zero_run(name, workdir)
    runs[name] = (task, state, export.export(workdir, out, platforms=("cpu",)), out)
  return root, runs


def test_manifests_describe_uint8_inputs_with_fields_and_carry_a_model_card(exported):
  _, runs = exported
  symbolic = {name for name, (_, _, manifest, _) in runs.items() if manifest["input"]["symbolic"]}
  assert symbolic == {"ncl", "vilocal"}  # any size (multiples of 16 / 8); the others say why not
  for name, (_, _, manifest, _) in runs.items():
    spec = inference.InputSpec.from_manifest(manifest["input"])
    assert all(s["dtype"] == "uint8" and s["range"] == [0, 255] for s in manifest["inputs"].values()), name
    assert spec.symbolic or spec.fixed_reason, name
    card = manifest["model_card"]
    assert card["step"] == 0 and card["demo"] and card["method"] == f"{name}_jax", card
    assert f"{name}_jax trained on the embedded demo corpus" in card["summary"]
  assert runs["vilocal"][2]["input"]["native"] == "tiles" and runs["vilocal"][2]["input"]["clip_length"] == 3
  assert runs["msccnet"][2]["input"]["face_crop_scale"] == 1.3


@pytest.mark.slow  # a fresh process compiles the five exports (about a minute)
def test_exports_run_without_tensorflow_or_the_method_packages_and_match_the_live_tasks(exported):
  root, runs = exported
  rng = np.random.default_rng(0)
  cases = {name: _inputs(manifest, rng) for name, (_, _, manifest, _) in runs.items()}
  for name, inputs in cases.items():
    np.savez(root / f"{name}_in.npz", **{f"{i}/{k}": v for i, case in enumerate(inputs) for k, v in case.items()})
  script = f"""
import json, sys
import numpy as np
from common.train.export import load
for name, folder in {json.dumps({name: out for name, (_, _, _, out) in runs.items()})}.items():
  fn = load(folder)
  with np.load({str(root)!r} + f"/{{name}}_in.npz") as z:
    cases = sorted({{k.split("/")[0] for k in z.files}})
    outs = {{}}
    for i in cases:
      for k, v in fn({{k.split("/")[1]: z[k] for k in z.files if k.startswith(i + "/")}}).items():
        outs[f"{{i}}/{{k}}"] = np.asarray(v)
  np.savez({str(root)!r} + f"/{{name}}_out.npz", **outs)
print("imported:", sorted(m for m in {PACKAGES!r} if m in sys.modules))
"""
  done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert done.returncode == 0, done.stderr[-3000:]
  assert "imported: []" in done.stdout, done.stdout
  for name, (task, state, _, _) in runs.items():
    with np.load(root / f"{name}_out.npz") as z:
      for i, case in enumerate(cases[name]):
        live = jax.jit(lambda state, x: task.predict(task.models(state), x))(state, case)
        for key, value in live.items():
          np.testing.assert_allclose(z[f"{i}/{key}"], np.asarray(value), rtol=1e-4, atol=1e-5,
                                     err_msg=f"{name} case {i} {key}")
  assert len(cases["ncl"]) == 2 and cases["ncl"][1]["image"].shape[1:3] != cases["ncl"][0]["image"].shape[1:3]
