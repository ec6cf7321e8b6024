"""Grain pipelines: per-process sharding reads each record once per epoch, iterator state restores exactly,
evaluation batches are padded and masked."""
import numpy as np
import pytest

from common.data import pipeline


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
