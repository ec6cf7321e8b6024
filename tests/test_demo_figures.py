"""benchmarks.demo_figures: per-seed metrics, their spread and the provenance (commit, libraries, corpus digest,
CPU, harness step time), on finished runs and on a stand-in trainer run as a subprocess."""
import json
import os
import sys

import pytest

from benchmarks import demo_figures
from common.data import demo
from common.data.demo import corpus as demo_corpus


def _manifest(folder, files, libraries):
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "manifest.json"), "w") as f:
    json.dump({"version": "demo-v3", "scale": "tiny", "seed": 0, "num_files": len(files),
               "generator_libraries": libraries, "files": files}, f)
  return folder


def _finished_run(out, seed, evals, stage=""):
  """A seed folder as the tool leaves it: run.json plus the run's metrics.jsonl."""
  workdir = os.path.join(out, f"seed_{seed}")
  os.makedirs(os.path.join(workdir, stage), exist_ok=True)
  with open(os.path.join(workdir, "run.json"), "w") as f:
    json.dump({"seed": seed, "command": "python -m ...", "wall_s": 100.0 + seed}, f)
  with open(os.path.join(workdir, stage, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": 10, "steps_per_sec": 2.0}) + "\n")
    f.write(json.dumps({"step": 10, "train/loss": 1.0}) + "\n")
    for step, metrics in evals.items():
      f.write(json.dumps({"step": step, **{f"eval/{k}": v for k, v in metrics.items()}}) + "\n")


def test_corpus_file_digest_ignores_the_recorded_library_versions(tmp_path):
  files = {"a.png": {"bytes": 3, "sha256": "00"}, "b/c.mp4": {"bytes": 5, "sha256": "11"}}
  one = demo_figures.corpus_digest(_manifest(str(tmp_path / "one"), files, {"opencv": "4.10.0"}))
  two = demo_figures.corpus_digest(_manifest(str(tmp_path / "two"), files, {"opencv": "5.1.0"}))
  other = demo_figures.corpus_digest(_manifest(str(tmp_path / "three"), {**files, "a.png": {"bytes": 3,
                                                                                             "sha256": "ff"}}, {}))
  assert one["manifest_sha256"] != two["manifest_sha256"]
  assert one["files_sha256"] == two["files_sha256"] != other["files_sha256"]
  assert one["generator_libraries"] == {"opencv": "4.10.0"} and one["num_files"] == 2


def test_a_stale_corpus_differs_from_a_fresh_build(tmp_path):
  corpus = str(tmp_path / "corpus")
  demo.build(corpus, seed=0, scale="tiny")
  check = demo_figures.verify_corpus(corpus)
  assert check["checked"] and check["identical"] and check["differing_files"] == 0
  manifest = demo.load_manifest(corpus)
  name = sorted(manifest["files"])[0]
  manifest["files"][name]["sha256"] = "0" * 64  # as a cache built by older generator code would record
  with open(os.path.join(corpus, "manifest.json"), "w") as f:
    json.dump(manifest, f)
  check = demo_figures.verify_corpus(corpus)
  assert not check["identical"] and check["differing_files"] == 1 and check["examples"] == [name]


def test_corpus_is_found_above_a_data_root_override(tmp_path):
  corpus = _manifest(str(tmp_path / "corpus"), {}, {})
  os.makedirs(os.path.join(corpus, "faces"))
  assert demo_figures.find_corpus([f"--config.data.root={corpus}/faces"], None) == corpus
  assert demo_figures.find_corpus([], "/explicit") == "/explicit"


def test_default_seeds_start_with_the_configs_own():
  assert demo_figures.default_seeds(866) == [866, 1, 2]
  assert demo_figures.default_seeds(0) == [0, 1, 2]
  assert demo_figures.default_seeds(2) == [2, 1, 0]


def test_finished_runs_give_per_seed_figures_spread_and_provenance(tmp_path):
  out = str(tmp_path / "figures")
  corpus = _manifest(str(tmp_path / "corpus"), {"x": {"bytes": 1, "sha256": "00"}}, {"opencv": "5.1.0"})
  for seed, f1 in ((0, 0.5), (1, 0.7), (2, 0.9)):
    _finished_run(out, seed, {400: {"pixel_f1": f1 / 2, "image_auc": 0.9}, 800: {"pixel_f1": f1, "image_auc": 0.9}})
  figures = demo_figures.main(["--method=msccnet", f"--out={out}", "--seeds=0,1,2", "--step_time_steps=0",
                               f"--corpus={corpus}", "--no-verify_corpus"])
  with open(os.path.join(out, "figures.json")) as f:
    assert json.load(f)["seeds"] == [0, 1, 2]
  final = figures["summary"]["800"]["pixel_f1"]
  assert final["n"] == 3 and final["mean"] == pytest.approx(0.7) and final["std"] == pytest.approx(0.2)
  assert (final["min"], final["max"]) == (0.5, 0.9)
  assert figures["summary"]["400"]["pixel_f1"]["mean"] == pytest.approx(0.35)
  assert [r["final_step"] for r in figures["runs"]] == [800] * 3
  assert figures["runs"][1]["wall_s"] == 101.0 and figures["runs"][1]["train_steps_per_s_median"] == 2.0
  prov = figures["provenance"]
  assert len(prov["git"]["commit"]) == 40 and isinstance(prov["git"]["dirty"], bool)
  assert isinstance(prov["git"]["dirty_paths"], list) and prov["libraries"]["python"]
  assert {"jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy", "scikit-image", "scikit-video",
          "imageio"} <= set(prov["libraries"])
  assert prov["corpus"]["generator_libraries"] == {"opencv": "5.1.0"}
  assert prov["cpu"]["model"] and prov["cpu"]["usable_cpus"] >= 1
  text = open(os.path.join(out, "figures.md")).read()
  assert "| pixel_f1 | 0.500 | 0.700 | 0.900 | 0.700 | 0.200 | 0.500-0.900 |" in text
  assert prov["corpus"]["manifest_sha256"] in text and prov["git"]["commit"] in text


def test_stages_are_read_from_their_folders(tmp_path):
  _finished_run(str(tmp_path), 0, {400: {"pixel_f1": 0.4}}, stage="stage2")
  evals, rates = demo_figures.read_metrics(str(tmp_path / "seed_0"))
  assert evals == {400: {"stage2:pixel_f1": 0.4}} and rates == []


def test_unknown_arguments_are_refused(tmp_path):
  with pytest.raises(SystemExit):
    demo_figures.main(["--method=msccnet", f"--out={tmp_path}", "--seed=3"])
  with pytest.raises(SystemExit):
    demo_figures.main(["--method=msccnet", f"--out={tmp_path}", "--config.seed=3"])


def test_seeds_run_as_subprocesses_resume_and_are_reused(tmp_path, monkeypatch):
  """The per-seed path as a user drives it, with a stand-in trainer (the real commands are tested per method):
  a failed seed names its log, an interrupted one is resumed and says so, a finished one is not run again."""
  trainer = tmp_path / "trainer.py"
  trainer.write_text(
      "import json, os, sys\n"
      "workdir, seed = sys.argv[1], int(sys.argv[2])\n"
      "if seed == 13: sys.exit('boom')\n"
      "with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:\n"
      "  f.write(json.dumps({'step': 2, 'steps_per_sec': 4.0}) + '\\n')\n"
      "  f.write(json.dumps({'step': 2, 'eval/image_auc': 0.5 + seed / 10}) + '\\n')\n")
  monkeypatch.setattr(demo_figures, "train_command",
                      lambda method, variant, workdir, seed, passthrough: [sys.executable, str(trainer), workdir,
                                                                           str(seed)])
  out = str(tmp_path / "figures")
  with pytest.raises(RuntimeError, match=r"seed 13: the run failed \(exit 1\); see .*seed_13/log\.txt"):
    demo_figures.run_seed("msccnet", "smoke", out, 13, [])
  assert "boom" in open(os.path.join(out, "seed_13", "log.txt")).read()
  os.makedirs(os.path.join(out, "seed_1"))
  open(os.path.join(out, "seed_1", "checkpoints"), "w").close()  # an interrupted earlier invocation
  first = demo_figures.run_seed("msccnet", "smoke", out, 1, [])
  assert first["resumed"] and first["final"] == {"image_auc": pytest.approx(0.6)} and first["wall_s"] > 0
  assert first["train_steps_per_s_median"] == 4.0
  again = demo_figures.run_seed("msccnet", "smoke", out, 1, [])
  assert again["wall_s"] == first["wall_s"]  # reused: the trainer would have appended a second eval line
  with open(os.path.join(out, "seed_1", "metrics.jsonl")) as f:
    assert len(f.readlines()) == 2
  fresh = demo_figures.run_seed("msccnet", "smoke", out, 2, [])
  assert not fresh["resumed"] and fresh["final"]["image_auc"] == pytest.approx(0.7)


def test_train_command_is_the_readme_command():
  command = demo_figures.train_command("ncl", "demo", "/w/seed_1", 1, ["--config.data.root=/c"])
  assert command[1:] == ["-m", "ncl_jax.main", "--config=configs/ncl.py:demo", "--workdir=/w/seed_1",
                         "--config.seed=1", "--config.data.root=/c"]


def test_a_cache_built_with_other_libraries_is_named_in_a_warning(tmp_path, monkeypatch):
  def fake_parts(out_dir, seed, scale):
    with open(os.path.join(out_dir, "data.txt"), "w") as f:
      f.write("x")
    return {}

  monkeypatch.setattr(demo_corpus, "_build_parts", fake_parts)
  warnings = []
  monkeypatch.setattr(demo_corpus.logging, "warning", lambda *args: warnings.append(args))
  path = demo.ensure_demo_corpus(str(tmp_path))
  assert demo.ensure_demo_corpus(str(tmp_path)) == path and not warnings
  manifest = demo.load_manifest(path)
  manifest["generator_libraries"]["opencv"] = "4.10.0"
  with open(os.path.join(path, "manifest.json"), "w") as f:
    json.dump(manifest, f)
  assert demo.ensure_demo_corpus(str(tmp_path)) == path
  assert len(warnings) == 1 and warnings[0][2]["opencv"] == "4.10.0"


def test_a_failed_harness_is_recorded_and_the_runs_go_on():
  record = demo_figures.harness_step_time("msccnet", "smoke", 1, ["--config.no_such_block.key=1"])
  assert "--set no_such_block.key=1" in record["command"] and "no_such_block" in record["error"]
  assert "step_s_median" not in record
