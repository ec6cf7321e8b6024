"""A run directory survives misuse: the resume guard, the workdir lock, unreadable or unwritable checkpoints,
non-finite steps, a bad evaluation split, honest Best-N, and data errors that keep their type and file."""
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from common.data import pipeline
from common.data.readers.media import DataError
from common.train import checkpoint, errors, loop, workdir_lock
from common.train import config as config_lib
from tests.test_engine import REPO, _checkpoints, cli, config, losses, saved_params

FAST = dict(total_steps=6, eval_every=0, checkpoint_every=2, log_every=1)


@pytest.fixture(scope="module")
def six_steps(tmp_path_factory):
  """A finished 6-step toy run (checkpoints 2, 4, 6) to copy and misuse."""
  workdir = str(tmp_path_factory.mktemp("six"))
  loop.train_and_evaluate(config(**FAST), workdir)
  return workdir


@pytest.fixture
def run_copy(six_steps, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(six_steps, workdir)
  return workdir


# ------------------------------------------------------------------------------------------------ resume guard
@pytest.mark.parametrize("change, key, values", [
    (dict(global_batch_size=4), "global_batch_size", "8 (stored) -> 4 (now)"),
    (dict(seed=1), "seed", "0 (stored) -> 1 (now)"),
    ({"optimizer.lr": 0.1}, "optimizer.lr", "0.03 (stored) -> 0.1 (now)"),
    (dict(width=16), "width", "8 (stored) -> 16 (now)"),
])
def test_rerun_that_changes_data_model_or_optimizer_is_refused(run_copy, change, key, values):
  with pytest.raises(errors.RunError) as error:
    loop.train_and_evaluate(config(**{**FAST, "total_steps": 8}, **change), run_copy)
  message = str(error.value)
  assert f"  {key}: {values}" in message
  assert "another --workdir" in message and f"--config.allow_changes={key}" in message
  assert _checkpoints(run_copy) == [2, 4, 6]  # nothing trained, nothing lost


def test_harmless_changes_are_allowed_logged_and_kept_in_the_history(run_copy, caplog):
  caplog.set_level(logging.INFO)
  loop.train_and_evaluate(config(**{**FAST, "total_steps": 8, "log_every": 2, "eval_every": 4,
                                    "checkpoint_every": 4}), run_copy)
  assert sorted(losses(run_copy)) == [1, 2, 3, 4, 5, 6, 8]
  for key in ("total_steps: 6 -> 8", "log_every: 1 -> 2", "eval_every: 0 -> 4", "checkpoint_every: 2 -> 4"):
    assert f"rerun changes {key} (allowed)" in caplog.text
  assert sorted(os.listdir(os.path.join(run_copy, "configs"))) == ["000-step0.json", "001-step6.json"]
  second = json.load(open(os.path.join(run_copy, "configs", "001-step6.json")))
  assert second["allowed_changes"]["total_steps"] == [6, 8] and second["config"]["log_every"] == 2


def test_deliberate_override_and_shorter_run_and_other_task(run_copy):
  with pytest.raises(errors.RunError, match="  total_steps: 6 \\(stored\\) -> 4 \\(now\\)"):
    loop.train_and_evaluate(config(**{**FAST, "total_steps": 4}), run_copy)
  loop.train_and_evaluate(config(**{**FAST, "total_steps": 8, "seed": 3, "allow_changes": "seed"}), run_copy)
  assert _checkpoints(run_copy)[-1] == 8
  with pytest.raises(errors.RunError, match="holds a run of task 'tests.toy_task:ToyTask' \\(step 8\\); "
                                                  "this config is task 'tests.toy_task:ToyGanTask'"):
    loop.train_and_evaluate(config(**FAST, task="tests.toy_task:ToyGanTask"), run_copy)


def test_other_process_count_is_refused(run_copy):
  data_iter = os.path.join(run_copy, "checkpoints", "6", "data_iter")
  os.rename(os.path.join(data_iter, "process_0-of-1.json"), os.path.join(data_iter, "process_0-of-2.json"))
  with pytest.raises(errors.RunError, match="  process_count: 2 \\(stored\\) -> 1 \\(now\\)"):
    loop.train_and_evaluate(config(**{**FAST, "total_steps": 8}), run_copy)


# ---------------------------------------------------------------------------------------------------- lock
def _write_lock(workdir, host, pid, beat=0):
  with open(os.path.join(workdir, "run.lock"), "w") as f:
    json.dump({"host": host, "pid": pid, "started": time.time(), "token": 7, "beat": beat}, f)


def test_lock_held_by_a_live_process_fails_at_once_naming_it(tmp_path):
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    os.makedirs(tmp_path / "run")
    _write_lock(str(tmp_path / "run"), socket.gethostname(), sleeper.pid)
    began = time.time()
    with pytest.raises(errors.RunError, match=f"in use by host {socket.gethostname()}, pid {sleeper.pid}, "
                                                    "started "):
      loop.train_and_evaluate(config(**FAST), str(tmp_path / "run"))
    assert time.time() - began < 30
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
  finally:
    sleeper.kill()
    sleeper.wait()


def test_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
  gone = subprocess.Popen([sys.executable, "-c", "pass"])
  gone.wait()
  os.makedirs(tmp_path / "run")
  _write_lock(str(tmp_path / "run"), socket.gethostname(), gone.pid)
  loop.train_and_evaluate(config(**{**FAST, "total_steps": 2}), str(tmp_path / "run"))
  assert f"taking over the lock of a run that is gone (host {socket.gethostname()}, pid {gone.pid}" in caplog.text
  assert not os.path.exists(tmp_path / "run" / "run.lock")  # given back at the end


def test_lock_on_another_host_live_heartbeat_refused_stale_taken(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock, "STALE_S", 2.0)
  monkeypatch.setattr(workdir_lock, "HEARTBEAT_S", 0.4)
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  _write_lock(workdir, "elsewhere", 123)
  stop = threading.Event()

  def beat():
    n = 0
    while not stop.wait(0.3):
      n += 1
      _write_lock(workdir, "elsewhere", 123, beat=n)

  beating = threading.Thread(target=beat)
  beating.start()
  try:
    with pytest.raises(errors.RunError, match="in use by host elsewhere, pid 123, .*heartbeat is live"):
      workdir_lock.WorkdirLock(workdir).acquire()
  finally:
    stop.set()
    beating.join()
  lock = workdir_lock.WorkdirLock(workdir)
  lock.acquire()  # the holder stopped beating: stale after STALE_S
  assert json.load(open(os.path.join(workdir, "run.lock")))["pid"] == os.getpid()
  lock.release()
  assert not os.path.exists(os.path.join(workdir, "run.lock"))


def test_second_live_training_process_is_refused(tmp_path):
  workdir = str(tmp_path / "run")
  proc = subprocess.Popen(cli(workdir, "--config.total_steps=400", "--config.step_delay=0.02"), cwd=REPO,
                          stderr=subprocess.DEVNULL)
  try:
    end = time.time() + 240
    while not os.path.exists(os.path.join(workdir, "run.lock")) and time.time() < end:
      assert proc.poll() is None, "training exited early"
      time.sleep(0.2)
    with pytest.raises(errors.RunError, match=f"in use by host {socket.gethostname()}, pid {proc.pid}"):
      loop.train_and_evaluate(config(total_steps=400), workdir)
  finally:
    proc.kill()
    proc.wait()


# ------------------------------------------------------------------------------------------ checkpoint faults
def _largest_file(folder):
  files = [os.path.join(d, n) for d, _, names in os.walk(folder) for n in names]
  return max(files, key=os.path.getsize)


@pytest.mark.parametrize("damage", ["truncate array data", "garble metadata"])
def test_unreadable_latest_checkpoint_falls_back_to_the_one_before(run_copy, six_steps, damage, caplog):
  state_dir = os.path.join(run_copy, "checkpoints", "6", "state")
  if damage == "truncate array data":
    path = _largest_file(state_dir)
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 3)
  else:
    with open(os.path.join(state_dir, "_METADATA"), "w") as f:
      f.write('{"tree_metadata": [garbled')
  os.remove(os.path.join(run_copy, "complete.json"))  # the run must redo step 6
  with checkpoint.Run(run_copy) as reader:  # readers skip it too, and leave it in place
    assert reader.load()[2] == 4
  assert "checkpoints/6 cannot be read" in caplog.text
  loop.train_and_evaluate(config(**FAST), run_copy)
  moved = os.listdir(os.path.join(run_copy, "corrupt_checkpoints"))
  assert len(moved) == 1 and moved[0].startswith("6-")
  assert _checkpoints(run_copy) == [2, 4, 6]
  for k, v in saved_params(six_steps).items():
    np.testing.assert_array_equal(saved_params(run_copy)[k], v, err_msg=k)  # step 6 redone bit-exactly


def test_checkpoint_that_does_not_fit_the_model_is_an_error_not_skipped(run_copy):
  c = config(**FAST, width=16, allow_changes="width")
  with pytest.raises(errors.RunError, match="checkpoints/6 does not fit this run's model"):
    loop.train_and_evaluate(c, run_copy)
  assert _checkpoints(run_copy) == [2, 4, 6] and not os.path.exists(os.path.join(run_copy, "corrupt_checkpoints"))


def test_temp_folders_of_interrupted_saves_are_removed_at_start(run_copy):
  leftover = os.path.join(run_copy, "checkpoints", "8.orbax-checkpoint-tmp")
  os.makedirs(os.path.join(leftover, "state"))
  loop.train_and_evaluate(config(**{**FAST, "total_steps": 8}), run_copy)
  assert not any("tmp" in n for n in os.listdir(os.path.join(run_copy, "checkpoints")))
  assert _checkpoints(run_copy)[-1] == 8


def test_failed_save_names_step_and_path_and_keeps_earlier_checkpoints(tmp_path, monkeypatch):
  """A read-only filesystem under the checkpoint folder from step 4 on (simulated: tests run as root, for whom
  permission bits do not stop writes)."""
  original = ocp.StandardCheckpointHandler.async_save

  def read_only_from_step_4(self, directory, *args, **kwargs):
    if os.path.basename(os.path.dirname(str(directory))).startswith("4."):
      raise OSError(30, "Read-only file system", str(directory))
    return original(self, directory, *args, **kwargs)

  monkeypatch.setattr(ocp.StandardCheckpointHandler, "async_save", read_only_from_step_4)
  workdir = str(tmp_path / "run")
  with pytest.raises(errors.CheckpointError) as error:
    loop.train_and_evaluate(config(**FAST), workdir)
  assert str(error.value).startswith(f"{workdir}/checkpoints/4: saving step 4 failed (OSError")
  assert "Read-only file system" in str(error.value) and "intact: steps [2]" in str(error.value)
  monkeypatch.undo()
  with checkpoint.Run(workdir) as reader:
    assert reader.load()[2] == 2


# ----------------------------------------------------------------------------------------------- NaN guard
def _first_nan_step(c) -> int:
  task = config_lib.build_task(c)
  for step, batch in enumerate(task.input_pipeline("train"), start=1):
    if np.isnan(batch["image"]).any():
      return step


@pytest.mark.parametrize("checkpoint_every, noticed", [(4, 7), (3, 6)])
def test_first_non_finite_step_is_named_and_never_saved(tmp_path, checkpoint_every, noticed):
  """Record 2 (a NaN pixel) is first drawn at step 6; logs every 7 steps. Saving every 4, the NaN is noticed at
  the log of step 7; saving every 3, at the save of step 6 itself, which is then not written."""
  c = config(total_steps=40, eval_every=0, log_every=7, checkpoint_every=checkpoint_every,
             **{"faults.nan_record": 2})
  assert _first_nan_step(c) == 6
  workdir = str(tmp_path / "run")
  with pytest.raises(FloatingPointError, match=f"from step 6 on \\(noticed at step {noticed}\\); nothing after "
                                               f"step {checkpoint_every} was saved"):
    loop.train_and_evaluate(c, workdir)
  assert _checkpoints(workdir) == [checkpoint_every]
  assert all(np.isfinite(v).all() for v in saved_params(workdir).values())


# ------------------------------------------------------------------------------------ evaluation and Best-N
def test_bad_evaluation_split_fails_before_training(tmp_path):
  workdir = str(tmp_path / "run")
  with pytest.raises(DataError, match="missing-test-folder: missing image folder"):
    loop.train_and_evaluate(config(**FAST, **{"faults.eval_folder": str(tmp_path / "missing-test-folder")}),
                            workdir)
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_final_state_is_saved_before_the_final_evaluation(tmp_path):
  bad = tmp_path / "bad.png"
  bad.write_bytes(b"")
  workdir = str(tmp_path / "run")
  c = config(**FAST, **{"faults.bad_eval_record": 3, "faults.bad_file": str(bad)})
  with pytest.raises(DataError, match="bad.png: cannot decode image"):
    loop.train_and_evaluate(c, workdir)
  assert _checkpoints(workdir)[-1] == 6 and not os.path.exists(os.path.join(workdir, "complete.json"))
  bad.unlink()  # the file repaired: the rerun evaluates the saved model without training again
  metrics = loop.train_and_evaluate(c, workdir)
  done = json.load(open(os.path.join(workdir, "complete.json")))
  assert done["step"] == 6 and done["eval"] == metrics and np.isfinite(metrics["loss"])
  assert sorted(losses(workdir)) == [1, 2, 3, 4, 5, 6]


def test_best_n_ranks_only_steps_that_evaluated(tmp_path):
  """Eval every 3, save every 2, keep the latest 1 and the best 1: only steps 6 and 12 were both saved and
  evaluated, so the kept steps are 12 and the better of 6 and 12 (6 also stays when it was the best evaluated one
  at the last save, made before step 12's evaluation), never a step whose score is an older one's."""
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(config(total_steps=12, eval_every=3, checkpoint_every=2, keep_checkpoints=1,
                                 best_metric="eval/loss", best_mode="max"), workdir)
  ledger = {int(k): v["eval/loss"] for k, v in json.load(open(os.path.join(workdir, "eval_metrics.json"))).items()}
  assert sorted(ledger) == [3, 6, 9, 12]
  best = max((6, 12), key=ledger.get)
  assert {best, 12} <= set(_checkpoints(workdir)) <= {6, 12}


# ------------------------------------------------------------------------------------------------- data errors
def test_data_error_in_training_keeps_its_type_and_file(tmp_path):
  bad = tmp_path / "frame_0007.png"
  bad.write_bytes(b"")
  c = config(**FAST, **{"faults.bad_train_record": 3, "faults.bad_file": str(bad)})
  with pytest.raises(DataError, match="frame_0007.png: cannot decode image"):
    loop.train_and_evaluate(c, str(tmp_path / "run"))


def test_cli_prints_a_data_error_as_one_line_and_logs_the_traceback(tmp_path):
  bad = tmp_path / "frame_0007.png"
  bad.write_bytes(b"")
  workdir = str(tmp_path / "run")
  done = subprocess.run(cli(workdir, "--config.total_steps=6", "--config.faults.bad_train_record=3",
                            f"--config.faults.bad_file={bad}"), cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 1
  errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
  assert errors == [f"error: {bad}: cannot decode image (test fault)"]
  assert "Traceback" not in done.stderr
  (log,) = os.listdir(os.path.join(workdir, "logs"))
  text = open(os.path.join(workdir, "logs", log)).read()
  assert "Traceback" in text and "DataError" in text and f"(traceback: {os.path.join(workdir, 'logs', log)})" \
      in done.stderr


def test_empty_evaluation_source_is_an_error_when_opened():
  with pytest.raises(ValueError, match="evaluation source .* is empty"):
    pipeline.eval_batches([], batch_size=2)
