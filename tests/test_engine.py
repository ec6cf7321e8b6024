"""The training engine on the toy task: loss falls, mesh equivalence, exact resume after SIGKILL, SIGTERM saves,
restore onto another mesh, export round trip, two-stage init_from with freezing, a GAN step with two optimizers,
gradient accumulation, non-finite loss. Two `jax.distributed` processes: tests/test_rehearsal.py."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from common.train import checkpoint, evaluate, export, loop
from common.train import config as config_lib
from tests import toy_task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(arg=None, **overrides):
  c = toy_task.get_config(arg)
  for k, v in overrides.items():
    target = c
    *parents, leaf = k.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = v
  return c


def losses(workdir, key="train/loss"):
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      if key in rec:
        out[rec["step"]] = rec[key]
  return out


def saved_params(workdir, step=None):
  with checkpoint.Run(workdir) as run_dir:
    raw = run_dir.checkpoints.restore_raw(run_dir.latest_step() if step is None else step)
  return checkpoint.flat_keys(raw["params"])


def assert_stage_two_kept_frozen_and_trained(workdir, frozen: str, trained: str) -> None:
  """A two-stage run: stage 2's parameters under `frozen` equal stage 1's, and some under `trained` changed."""
  s1 = saved_params(os.path.join(workdir, "stage1"))
  s2 = saved_params(os.path.join(workdir, "stage2"))
  kept = [k for k in s1 if k.startswith(frozen)]
  changed = [k for k in s1 if k.startswith(trained)]
  assert kept and changed
  for k in kept:
    np.testing.assert_array_equal(s2[k], s1[k], err_msg=k)
  assert any(not np.allclose(s2[k], s1[k]) for k in changed)


def rel_err(a, b):
  return max(np.linalg.norm(np.asarray(a[k]) - np.asarray(b[k])) / max(np.linalg.norm(np.asarray(b[k])), 1e-12)
             for k in b)


def cli(workdir, *flags, config_file="tests/toy_task.py"):
  return [sys.executable, "-m", "common.train.cli", f"--config={config_file}", f"--workdir={workdir}", *flags]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  """An uninterrupted 30-step run on the 4-device mesh (the reference for resume tests)."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  metrics = loop.train_and_evaluate(config(total_steps=30), workdir)
  return workdir, metrics


def test_loss_falls_and_everything_is_logged(reference_run):
  workdir, metrics = reference_run
  train = losses(workdir)
  assert sorted(train) == list(range(1, 31))
  assert np.mean([train[s] for s in (28, 29, 30)]) < 0.7 * np.mean([train[s] for s in (1, 2, 3)])
  assert losses(workdir, "eval/loss")[30] == pytest.approx(metrics["loss"])
  assert metrics["loss"] < 0.6
  (history,) = os.listdir(os.path.join(workdir, "configs"))
  assert history == "000-step0.json"
  with open(os.path.join(workdir, "configs", history)) as f:
    start = json.load(f)
  assert start["config"]["total_steps"] == 30 and start["process_count"] == 1 and start["code"]["commit"]
  assert json.load(open(os.path.join(workdir, "complete.json")))["step"] == 30
  import tensorflow as tf  # the loop's writers imported it already
  tags = {v.tag for name in os.listdir(os.path.join(workdir, "tensorboard"))
          for event in tf.compat.v1.train.summary_iterator(os.path.join(workdir, "tensorboard", name))
          for v in event.summary.value}
  assert {"train/loss", "eval/loss", "test/heatmap"} <= tags, tags  # the jitted image summaries are written


@pytest.mark.parametrize("mesh", [dict(data=4, fsdp=1), dict(data=2, fsdp=2)])
def test_sharded_training_matches_one_device(tmp_path, mesh):
  common = dict(total_steps=6, width=16, fsdp_min_size=0, block_every_step=True, eval_every=0)
  loop.train_and_evaluate(config(**common, **{"mesh.data": 1, "mesh.fsdp": 1}), str(tmp_path / "one"))
  loop.train_and_evaluate(config(**common, **{"mesh.data": mesh["data"], "mesh.fsdp": mesh["fsdp"]}),
                          str(tmp_path / "many"))
  one, many = saved_params(str(tmp_path / "one")), saved_params(str(tmp_path / "many"))
  assert rel_err(many, one) < 1e-5
  assert losses(str(tmp_path / "many")) == pytest.approx(losses(str(tmp_path / "one")), rel=1e-5)


def test_fsdp_actually_shards_parameters():
  from common.train import mesh as mesh_lib
  task = config_lib.build_task(config(width=16))
  abstract = jax.eval_shape(task.init, task.key(0))
  sh = mesh_lib.state_shardings(mesh_lib.make_mesh(2, 2), abstract, [(".*", "fsdp")], fsdp_min_size=0)
  assert sh.params["model"]["conv1"]["kernel"].spec == jax.P(None, None, None, "fsdp")
  mu = jax.tree.leaves(sh.opt_state["model"])
  assert any(s.spec == jax.P(None, None, None, "fsdp") for s in mu)


def test_checkpoint_from_four_devices_evaluates_on_one(reference_run):
  workdir, metrics = reference_run
  one = loop.evaluate_checkpoint(config(total_steps=30, **{"mesh.data": 1}), workdir)
  assert one["loss"] == pytest.approx(metrics["loss"], rel=1e-5)


def test_evaluate_command_reads_the_run_and_writes_one_table_per_split(reference_run, tmp_path):
  """`python -m common.train.evaluate` on the 4-device run, on 1 device and two splits: the run's final loss; the
  run directory is not written to. Bad input is one line."""
  workdir, metrics = reference_run
  before = sorted(os.listdir(workdir))
  run = lambda *args: subprocess.run([sys.executable, "-m", "common.train.evaluate", *args], capture_output=True,
                                     text=True, cwd=REPO, timeout=300)
  done = run(f"--workdir={workdir}", f"--out={tmp_path}", "--splits=test,val", "--set=mesh.data=1")
  assert done.returncode == 0, done.stderr[-2000:]
  with open(tmp_path / "evaluation.json") as f:
    summary = json.load(f)
  assert summary["step"] == 30 and summary["overrides"] == ["mesh.data=1"]
  assert sorted(summary["sets"]) == ["test", "val"]
  assert summary["sets"]["test"]["loss"] == pytest.approx(metrics["loss"], rel=1e-5)
  assert (tmp_path / "val.md").read_text().splitlines()[2].startswith("| val | 30 | ")
  assert (tmp_path / "test.csv").read_text().splitlines()[0] == "set,step,loss"
  assert "| test | 30 | " in done.stdout and "| val | 30 | " in done.stdout and sorted(os.listdir(workdir)) == before
  os.makedirs(tmp_path / "two_stage" / "stage1" / "checkpoints")
  bad = run(f"--workdir={tmp_path / 'two_stage'}")
  stage = tmp_path / "two_stage" / "stage1"
  assert bad.returncode == 1 and f"a multi-stage run; pass the stage to evaluate: {stage}\n" in bad.stderr
  bad = run(f"--workdir={tmp_path / 'nowhere'}")
  assert bad.returncode == 1 and f"error: {tmp_path / 'nowhere'}: no checkpoints/ folder" in bad.stderr
  bad = run(f"--workdir={workdir}", f"--out={tmp_path}", "--set=nosuch.key=1")
  assert bad.returncode == 1 and "error: --set 'nosuch.key=1': the config has no field 'nosuch'\n" in bad.stderr
  assert sorted(os.listdir(workdir)) == before and os.listdir(tmp_path / "logs")  # the traceback: beside the tables


def test_evaluation_sets_apart_from_the_training_data(reference_run, tmp_path):
  """config.eval_sets: each set is the config with the set's fields in place, evaluated on its own reader."""
  from common.data.readers.media import DataError
  workdir, _ = reference_run
  sets = {"small": {"eval_size": 8}, "moved": {"eval_split": "val", "faults": {"eval_folder": "/nowhere/eval"}}}
  overrides = ["mesh.data=1", f"eval_sets={sets!r}"]
  summary = evaluate.evaluate_run(workdir, str(tmp_path), overrides=overrides, eval_sets=["small"])
  alone = loop.evaluate_checkpoint(config(total_steps=30, eval_size=8, **{"mesh.data": 1}), workdir)
  assert list(summary["sets"]) == ["small"] and summary["sets"]["small"]["loss"] == pytest.approx(alone["loss"],
                                                                                                  rel=1e-6)
  assert (tmp_path / "evaluation.md").read_text().splitlines()[2].startswith("| small | 30 | ")
  with pytest.raises(DataError, match="nowhere"):  # every set by default: the second one's reader is really used
    evaluate.evaluate_run(workdir, str(tmp_path), overrides=overrides)
  with pytest.raises(ValueError, match=r"eval_sets.typo.data.root: the config has no field 'root'"):
    evaluate.evaluate_run(workdir, str(tmp_path), overrides=["eval_sets={'typo': {'data': {'root': 'x'}}}"])


def test_evaluation_set_may_name_a_field_a_run_stored_before_it_existed():
  """A run stored before `data.layout` existed, read back through `upgrade` (as every stored config is), takes an
  evaluation set that sets it; a field no config has is still refused."""
  stored = config_lib.apply_overrides(ml_collections.ConfigDict({"data": {"root": ""}, "eval_sets": {}}), [
      "eval_sets={'celeb': {'data': {'layout': 'celeb_df', 'root': '/celeb'}}, 'typo': {'data': {'layot': 'x'}}}"])
  with pytest.raises(ValueError, match=r"eval_sets.celeb.data.layout: the config has no field 'layout'"):
    config_lib.eval_set_config(stored, "celeb")
  stored = config_lib.upgrade(stored)
  assert config_lib.eval_set_config(stored, "celeb").data.layout == "celeb_df"
  with pytest.raises(ValueError, match=r"eval_sets.typo.data.layot: the config has no field 'layot'"):
    config_lib.eval_set_config(stored, "typo")


def test_evaluation_sets_read_named_roots():
  """A set's "{name}" string is `eval_roots.name`: one --set points every set of a dataset at it."""
  c = ml_collections.ConfigDict({"data": {"root": "", "methods": ()}, "eval_roots": {"mose": ""}, "eval_sets": {
      "mose_sttn": {"data": {"root": "{mose}", "methods": ("STTN",)}}, "odd": {"data": {"root": "{davis}"}}}})
  with pytest.raises(ValueError, match=r"eval_roots.mose: empty; the set 'mose_sttn' reads it"):
    config_lib.eval_set_config(c, "mose_sttn")
  c = config_lib.apply_overrides(c, ["eval_roots.mose=/data/MOSE100"])
  assert config_lib.eval_set_config(c, "mose_sttn").data.to_dict() == {"root": "/data/MOSE100", "methods": ("STTN",)}
  with pytest.raises(ValueError, match=r"eval_sets.odd.data.root: \{davis\} names no eval_roots entry"):
    config_lib.eval_set_config(c, "odd")


def test_a_run_stored_under_old_field_names_reads_under_the_new_ones():
  """`config.upgrade` (applied to every stored config read back): `data.flip` for the flips, NCL's loss weights
  under `loss`, and the fields a run predates at the values it had implicitly (the evaluation tools read
  `eval_sets`: a run stored before it existed was refused with AttributeError); the resume guard sees no change."""
  stored = ml_collections.ConfigDict({"data": {"hflip": False, "size": 64}, "eval_split": "test",
                                      "ncl": {"patch_size": 8, "seg_weight": 1.0, "pivot_weight": 0.5}})
  now = ml_collections.ConfigDict({"data": {"flip": False, "size": 64}, "eval_split": "test", "ncl": {"patch_size": 8},
                                   "loss": {"seg_weight": 1.0, "pivot_weight": 0.5}})
  upgraded = config_lib.upgrade(stored)
  assert upgraded.data.flip is False and "hflip" not in upgraded.data and upgraded.ncl.to_dict() == {"patch_size": 8}
  assert upgraded.loss.to_dict() == {"seg_weight": 1.0, "pivot_weight": 0.5}
  assert upgraded.eval_sets.to_dict() == {} and upgraded.data.format == "folder" and "optimizer" not in upgraded
  assert evaluate.targets(upgraded) == [(upgraded, {"test": "test"})]
  assert config_lib.refused_changes(upgraded, now) == ({}, {})
  vilocal = config_lib.upgrade(ml_collections.ConfigDict({"data": {"train_flip": True}}))
  assert vilocal.data.flip is True and "train_flip" not in vilocal.data


def test_sweep_trains_each_entry_resumes_and_marks_the_best_value(tmp_path):
  """`common.train.sweep` on the toy task: one run per entry, every metric a column, the lowest loss bold."""
  from common.train import sweep
  sweep_file = tmp_path / "toy_sweep.py"
  sweep_file.write_text('def get_sweep():\n  return [("base", {}), ("tiny_lr", {"optimizer.lr": 1e-5})]\n')
  rows = sweep.run_sweep(str(sweep_file), config(total_steps=10), str(tmp_path / "sweep"))
  assert [name for name, _ in rows] == ["base", "tiny_lr"] and rows[0][1]["loss"] != rows[1][1]["loss"]
  md = (tmp_path / "sweep" / "sweep.md").read_text().splitlines()
  lower = min((0, 1), key=lambda i: rows[i][1]["loss"])
  assert md[0] == "| run | loss |" and "**" in md[2 + lower] and "**" not in md[3 - lower]
  assert (tmp_path / "sweep" / "sweep.csv").read_text().splitlines()[0] == "run,loss"
  assert sweep.run_sweep(str(sweep_file), config(total_steps=10), str(tmp_path / "sweep"), only=("base",)) == rows[:1]
  bad = subprocess.run([sys.executable, "-m", "common.train.sweep", f"--sweep={sweep_file}",
                        "--base=tests/toy_task.py:", f"--workdir={tmp_path / 'sweep'}", "--only=nope"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
  assert bad.returncode == 1 and "error: --only names ['nope'] are not in" in bad.stderr


def _wait_for(predicate, proc, timeout=240):
  end = time.time() + timeout
  while time.time() < end:
    if predicate():
      return
    if proc.poll() is not None:
      raise AssertionError(f"training exited early with {proc.returncode}: {_tail(proc)}")
    time.sleep(0.2)
  proc.kill()
  raise AssertionError("timed out waiting for the training subprocess")


def spawn(args, log_path, env=None):
  """Starts a training subprocess whose stderr goes to a file (an unread pipe can fill up and stall it)."""
  proc = subprocess.Popen(args, cwd=REPO, env=env, stderr=open(log_path, "w"), text=True)
  proc.log_path = log_path
  return proc


def _tail(proc, n=3000):
  with open(proc.log_path) as f:
    return f.read()[-n:]


def _logged_steps(workdir):
  try:
    return max(losses(workdir), default=0)
  except (FileNotFoundError, json.JSONDecodeError):
    return 0


def _checkpoints(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_with_identical_losses(reference_run, tmp_path):
  ref = losses(reference_run[0])
  workdir = str(tmp_path / "killed")
  flags = ["--config.total_steps=30", "--config.step_delay=0.02"]
  proc = spawn(cli(workdir, *flags), tmp_path / "killed.log")
  _wait_for(lambda: _checkpoints(workdir) and _checkpoints(workdir)[-1] >= 10 and _logged_steps(workdir) >= 12,
            proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = _logged_steps(workdir)
  assert killed_at < 30
  done = subprocess.run(cli(workdir, *flags), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "resumed from" in done.stderr
  resumed = losses(workdir)
  assert sorted(resumed) == list(range(1, 31))
  assert resumed == ref  # bit-exact, every step, before and after the kill


SLOW_SAVES = """
import sys, time
import orbax.checkpoint as ocp

class _SlowCommit:
  def result(self, timeout=None):
    time.sleep(5)

_save = ocp.StandardCheckpointHandler.async_save

async def _slow_save(self, *args, **kwargs):
  return list(await _save(self, *args, **kwargs) or []) + [_SlowCommit()]

ocp.StandardCheckpointHandler.async_save = _slow_save
from common.train import cli
sys.argv = ["train"] + sys.argv[1:]
cli.run()
"""


@pytest.mark.slow
def test_sigkill_during_an_asynchronous_save_then_rerun_resumes_exactly(reference_run, tmp_path):
  """Each save takes 5 s more in the killed process; it is killed while step 10's save is being written."""
  ref = losses(reference_run[0])
  workdir = str(tmp_path / "killed")
  flags = ["--config.total_steps=30", "--config.step_delay=0.02"]
  proc = spawn([sys.executable, "-c", SLOW_SAVES, "--config=tests/toy_task.py", f"--workdir={workdir}", *flags],
               tmp_path / "killed.log")
  in_flight = os.path.join(workdir, "checkpoints", "10.orbax-checkpoint-tmp")
  _wait_for(lambda: os.path.isdir(in_flight), proc)
  time.sleep(1)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert os.path.isdir(in_flight) and _checkpoints(workdir) == [5]
  done = subprocess.run(cli(workdir, *flags), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "resumed from" in done.stderr and "at step 5" in done.stderr
  assert not [n for n in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in n]
  assert losses(workdir) == ref


@pytest.mark.slow
def test_sigterm_saves_current_step_and_exits_cleanly(reference_run, tmp_path):
  workdir = str(tmp_path / "term")
  flags = ["--config.total_steps=30", "--config.step_delay=0.02", "--config.checkpoint_every=1000"]
  proc = spawn(cli(workdir, *flags), tmp_path / "term.log")
  _wait_for(lambda: _logged_steps(workdir) >= 7, proc)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0, _tail(proc)
  stopped_at = _logged_steps(workdir)
  assert stopped_at < 30
  assert _checkpoints(workdir)[-1] == stopped_at
  done = subprocess.run(cli(workdir, *flags), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert losses(workdir) == losses(reference_run[0])


def test_export_loads_in_fresh_process_and_matches_live_model(reference_run, tmp_path):
  workdir, _ = reference_run
  out = str(tmp_path / "export")
  manifest = export.export(workdir, out)
  assert manifest["task"] == "tests.toy_task:ToyTask" and manifest["step"] == 30
  assert manifest["model_card"]["step"] == 30 and manifest["model_card"]["evaluation"]  # the run's final evaluation
  x = np.random.default_rng(0).integers(0, 256, (5, 12, 20, 3), np.uint8)  # not the trained 8 x 8: symbolic H, W
  np.save(tmp_path / "x.npy", x)
  script = ("import sys, numpy as np; from common.train.export import load; "
            f"fn = load({out!r}); np.save({str(tmp_path / 'y.npy')!r}, "
            f"np.asarray(fn({{'image': np.load({str(tmp_path / 'x.npy')!r})}})['probs'])); "
            "print('imported:', sorted(m for m in ('tensorflow', 'tests.toy_task', 'clu') if m in sys.modules))")
  done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "imported: []" in done.stdout  # neither TensorFlow nor the task's code: jax and numpy only
  with checkpoint.Run(workdir) as run_dir:
    task, state, step = run_dir.load()
  assert step == 30
  live = task.predict(task.models(state), {"image": x})["probs"]
  np.testing.assert_allclose(np.load(tmp_path / "y.npy"), np.asarray(live), rtol=1e-5, atol=1e-6)
  batch_of_two = export.load(out)({"image": x[:2, :8, :8]})["probs"]  # batch and spatial dimensions are symbolic
  assert batch_of_two.shape == (2, 8, 8)


def test_stage_two_initialises_from_stage_one_with_frozen_part(tmp_path):
  c = config(total_steps=5, eval_every=0)
  with c.unlocked():
    c.run_stages = "stage1,stage2"
    c.stages = {"stage1": {}, "stage2": {"init_from_stage": "stage1", "freeze": ["model/conv1"],
                                        "init_from": {"include": "params/|rest/"}}}
  metrics = loop.run(c, str(tmp_path))
  stage1, stage2 = str(tmp_path / "stage1"), str(tmp_path / "stage2")
  p1, p2 = saved_params(stage1), saved_params(stage2)
  np.testing.assert_array_equal(p2["model/conv1/kernel"], p1["model/conv1/kernel"])
  assert not np.allclose(p2["model/conv2/kernel"], p1["model/conv2/kernel"])
  assert loop.run(c, str(tmp_path)) == pytest.approx(metrics)  # rerun: both stages complete, evaluation only
  assert sorted(losses(stage2)) == [1, 2, 3, 4, 5]
  with pytest.raises(ValueError, match="no parameter matched"):
    loop.train_and_evaluate(config(total_steps=1, **{"init_from.workdir": stage1, "init_from.include": "nothing"}),
                            str(tmp_path / "bad"))


def test_gan_task_updates_both_models_and_resumes(tmp_path):
  workdir = str(tmp_path / "gan")
  c = config(task="tests.toy_task:ToyGanTask", total_steps=4, eval_every=0, checkpoint_every=2)
  loop.train_and_evaluate(c, workdir)
  c.total_steps = 6
  loop.train_and_evaluate(c, workdir)
  assert sorted(losses(workdir)) == list(range(1, 7))
  p4, p6 = saved_params(workdir, 4), saved_params(workdir, 6)
  for name in ("generator/conv1/kernel", "discriminator/conv1/kernel"):
    assert not np.allclose(p4[name], p6[name])


def test_gradient_accumulation_matches_full_batch(tmp_path):
  common = dict(total_steps=3, use_bn=False, dropout=0.0, eval_every=0)
  loop.train_and_evaluate(config(**common), str(tmp_path / "full"))
  loop.train_and_evaluate(config(**common, grad_accum_steps=2), str(tmp_path / "accum"))
  assert rel_err(saved_params(str(tmp_path / "accum")), saved_params(str(tmp_path / "full"))) < 1e-5


def test_bfloat16_compute_keeps_float32_parameters(tmp_path):
  workdir = str(tmp_path / "bf16")
  metrics = loop.train_and_evaluate(config(total_steps=20, dtype="bfloat16", eval_every=0), workdir)
  params = saved_params(workdir)
  assert all(v.dtype == np.float32 for v in params.values())
  train = losses(workdir)
  assert train[20] < 0.8 * train[1] and np.isfinite(metrics["loss"])
  events = os.listdir(os.path.join(workdir, "tensorboard"))
  assert events and os.path.getsize(os.path.join(workdir, "tensorboard", events[0])) > 0
