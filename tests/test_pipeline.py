"""Grain pipelines: per-process sharding reads each record once per epoch, iterator state restores exactly,
evaluation batches are padded and masked; the engine builds a task's pipelines from its `source` / `transforms`."""
import grain
import numpy as np
import pytest
from flax import nnx

from common.data import pipeline
from common.train import config as config_lib
from common.train import task as task_lib


class IndexSource:

  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return {"index": np.int64(i), "id": f"record-{i}"}

  def __repr__(self):
    return f"IndexSource({self.n})"


@pytest.mark.parametrize("n", [24, 25])
def test_two_processes_read_every_record_once_per_epoch(n):
  per_process_batch, processes = 3, 2
  seen = []
  for p in range(processes):
    it = iter(pipeline.train_dataset(IndexSource(n), seed=7, batch_size=per_process_batch, process_index=p,
                                     process_count=processes))
    records = np.concatenate([next(it)["index"] for _ in range(4 * n // (per_process_batch * processes) + 2)])
    seen.append(records)
  # Interleave the two shards back into the global order: element j of process p is global element 2j + p.
  steps = min(len(s) for s in seen)
  global_order = np.stack([s[:steps] for s in seen], axis=1).reshape(-1)
  for epoch in range(len(global_order) // n):
    assert sorted(global_order[epoch * n:(epoch + 1) * n]) == list(range(n))
  first, second = global_order[:n], global_order[n:2 * n]
  assert not np.array_equal(first, second)  # reshuffled every epoch


def test_restored_iterator_continues_with_the_same_batches():
  ds = pipeline.train_dataset(IndexSource(10), seed=3, batch_size=4)
  it = iter(ds)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it)["index"] for _ in range(5)]
  restored = iter(pipeline.train_dataset(IndexSource(10), seed=3, batch_size=4))
  restored.set_state(state)
  np.testing.assert_array_equal([next(restored)["index"] for _ in range(5)], expected)
  other_seed = iter(pipeline.train_dataset(IndexSource(10), seed=4, batch_size=4))
  assert not np.array_equal(next(other_seed)["index"], next(iter(ds))["index"])


def test_eval_batches_pad_the_last_batch_and_every_process_runs_the_same_steps():
  shards = [list(pipeline.eval_batches(IndexSource(7), batch_size=2, process_index=p, process_count=2))
            for p in range(2)]
  assert [len(s) for s in shards] == [2, 2]
  valid = np.concatenate([b["index"][b["valid"]] for s in shards for b in s])
  assert sorted(valid) == list(range(7))
  assert all("id" not in b and b["index"].shape == (2,) for s in shards for b in s)


def test_empty_sources_are_errors():
  with pytest.raises(ValueError, match="empty"):
    pipeline.train_dataset(IndexSource(0), seed=0, batch_size=1)
  with pytest.raises(ValueError, match="empty"):
    list(pipeline.eval_batches(IndexSource(0), batch_size=1))


def test_worker_processes_give_the_same_batches_and_restore():
  ds = lambda workers: pipeline.train_dataset(IndexSource(12), seed=5, batch_size=3, worker_count=workers)
  inline = iter(ds(0))
  expected = [next(inline)["index"] for _ in range(6)]
  workers = iter(ds(2))
  got = [next(workers)["index"] for _ in range(3)]
  state = workers.get_state()
  got += [next(workers)["index"] for _ in range(3)]
  np.testing.assert_array_equal(got, expected)
  restored = iter(ds(2))
  restored.set_state(state)
  np.testing.assert_array_equal([next(restored)["index"] for _ in range(3)], expected[3:])


class Noise(grain.transforms.RandomMap):

  def random_map(self, record, rng):
    return dict(record, noise=rng.integers(1 << 30))


class Double(grain.transforms.Map):

  def map(self, record):
    return dict(record, index=record["index"] * 2)


class SourceOnlyTask(task_lib.Task):
  """A task that says only what its data are: the engine makes its pipelines."""

  def build_models(self, rngs):
    return {"model": nnx.Linear(1, 1, rngs=rngs)}

  def eval_step(self, state, batch):
    raise NotImplementedError

  def source(self, split):
    return IndexSource(12 if split == "train" else 7)

  def transforms(self, split):
    return [Noise()] if split == "train" else [Double()]


def test_a_task_with_only_source_and_transforms_gets_train_and_eval_pipelines():
  config = config_lib.base_config()
  config.update(dict(seed=3, global_batch_size=4, total_steps=1))
  task = SourceOnlyTask(config)
  # Training: per-process batch = global // processes, the seed's order and draws, every record once per epoch.
  per_process = [iter(task.input_pipeline("train", process_index=p, process_count=2)) for p in range(2)]
  epoch = [next(it) for it in per_process for _ in range(3)]
  assert all(b["index"].shape == (2,) and "id" not in b for b in epoch)
  assert sorted(np.concatenate([b["index"] for b in epoch])) == list(range(12))
  direct = iter(pipeline.train_dataset(IndexSource(12), seed=3, batch_size=2, transforms=[Noise()],
                                       process_index=1, process_count=2))
  for got in epoch[3:]:
    want = next(direct)
    np.testing.assert_array_equal(got["index"], want["index"])
    np.testing.assert_array_equal(got["noise"], want["noise"])
  # Evaluation: one pass per process, the same number of steps, the last batch padded and marked invalid.
  shards = [list(task.input_pipeline("test", process_index=p, process_count=2)) for p in range(2)]
  assert [len(s) for s in shards] == [2, 2]
  assert all(b["index"].shape == (2,) and b["valid"].dtype == bool for s in shards for b in s)
  last = shards[1][-1]  # process 1 reads records 1, 3, 5: its second batch is record 5 and a padding copy
  np.testing.assert_array_equal(last["valid"], [True, False])
  np.testing.assert_array_equal(last["index"], [10, 10])
  valid = np.concatenate([b["index"][b["valid"]] for s in shards for b in s])
  assert sorted(valid) == [2 * i for i in range(7)]
