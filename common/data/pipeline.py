"""Grain input pipelines shared by every method.

Training: `source -> seed -> shuffle -> repeat -> [process_index::process_count] -> transforms -> batch`, then an
iterator (threads for I/O, optional worker processes for decoding). The global order is a function of the seed
only, each process takes every `process_count`-th element of that order, and every record is read exactly once
per epoch across processes. The iterator's state (`get_state` / `set_state`) is saved with each checkpoint, so
a resumed run sees exactly the batches an uninterrupted run would have seen.

Evaluation: one pass over the source, sharded by process, the last batch padded to the static batch size with
copies of its first element and a boolean `valid` key marking real examples (so every process runs the same
number of steps and jit never recompiles).

The engine calls these (`common.train.task.Task.input_pipeline`, from a task's `source(split)` and
`transforms(split)` and the config's batch, seed and `data.*` settings); tasks do not.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import grain
import numpy as np

Transform = Any  # a grain MapTransform / RandomMapTransform instance, or a plain callable(record) -> record.


def _apply(ds: grain.MapDataset, transforms: Sequence[Transform], seed: int | None) -> grain.MapDataset:
  for t in transforms:
    if isinstance(t, grain.transforms.RandomMap):
      ds = ds.random_map(t, seed=seed)
    else:
      ds = ds.map(t)
  return ds


def _without_id(record: Mapping[str, Any]) -> dict:
  """Drops the string `id` (it names files in error messages; jit cannot carry strings)."""
  return {k: v for k, v in record.items() if k != "id"}


def train_dataset(source: Sequence[Mapping[str, Any]], *, seed: int, batch_size: int,
                  transforms: Sequence[Transform] = (), process_index: int = 0, process_count: int = 1,
                  worker_count: int = 0, read_threads: int = 4, prefetch: int | None = None) -> grain.IterDataset:
  """Infinite, shuffled, per-process-sharded training batches.

  Args:
    source: a random-access source of records (dicts of numpy arrays).
    seed: drives the shuffle order and every random transform.
    batch_size: the per-process batch size (global batch / process_count).
    transforms: grain map / random-map transforms applied per record, in order.
    process_index, process_count: this process's shard of the global order.
    worker_count: grain worker processes (0: decode in the main process).
    read_threads, prefetch: reader threads and read-ahead buffer in records (None: 16); throughput only.
  Returns:
    An IterDataset whose iterator yields dicts of arrays with a leading batch axis and supports
    `get_state()` / `set_state()`. String `id`s are dropped.
  """
  if len(source) == 0:
    raise ValueError(f"training source {source!r} is empty")
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
  ds = ds[process_index::process_count]
  ds = _apply(ds, transforms, seed).map(_without_id)
  ds = ds.batch(batch_size, drop_remainder=True)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                            prefetch_buffer_size=16 if prefetch is None else prefetch))
  if worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return it


def _pad_batch(records: Sequence[Mapping[str, Any]], batch_size: int) -> dict[str, np.ndarray]:
  n = len(records)
  padded = list(records) + [records[0]] * (batch_size - n)
  batch = {k: np.stack([np.asarray(r[k]) for r in padded]) for k in records[0] if k != "id"}
  batch["valid"] = np.arange(batch_size) < n
  return batch


def eval_batches(source: Sequence[Mapping[str, Any]], *, batch_size: int, transforms: Sequence[Transform] = (),
                 process_index: int = 0, process_count: int = 1, read_threads: int = 4,
                 prefetch: int | None = None) -> Iterator[dict]:
  """One deterministic pass over `source`, padded batches with a boolean `valid` key.

  Every process yields the same number of batches (ceil(len / (process_count * batch_size))); padding examples
  copy the first real example of the batch (or of the shard) and have `valid == False`. String ids are dropped
  from batches (jit cannot carry them). An empty source is an error at call time, not at the first batch.
  `read_threads` and `prefetch` (read-ahead in records; None: one batch) change throughput, never the batches.
  """
  if len(source) == 0:
    raise ValueError(f"evaluation source {source!r} is empty")
  return _padded_pass(source, batch_size, transforms, process_index, process_count, read_threads,
                      batch_size if prefetch is None else prefetch)


def _padded_pass(source, batch_size, transforms, process_index, process_count, read_threads,
                 prefetch) -> Iterator[dict]:
  steps = -(-len(source) // (batch_size * process_count))
  ds = _apply(grain.MapDataset.source(source), transforms, seed=0)
  shard = ds[process_index::process_count]
  it = iter(shard.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch)))
  first = None
  for _ in range(steps):
    records = []
    for _ in range(batch_size):
      try:
        records.append(next(it))
      except StopIteration:
        break
    if first is None:
      first = records[0] if records else ds[0]
    if records:
      yield _pad_batch(records, batch_size)
    else:  # this process's shard is exhausted but others still have a batch: a fully padded one.
      batch = _pad_batch([first], batch_size)
      batch["valid"][:] = False
      yield batch
