"""The task contract every method implements, and the train state the engine carries.

A task owns one or more NNX models (a dict: `{"model": ...}` for a supervised method, `{"generator": ...,
"discriminator": ...}` for a GAN), one optax optimizer per trained model, its data, and these functions:

  init(rng) -> TrainState                      provided here from `build_models` / `make_optimizers`
  train_step(state, batch) -> (state, metrics)  pure; default: one gradient step on `loss(models, batch, rng)`
  eval_step(state, batch) -> clu metrics.Collection
  source(split) -> random-access records        the task's reader of `split` (a Sequence of record dicts)
  transforms(split) -> [grain transforms]       per-record augmentation ('train') or preprocessing (others)
  input_pipeline(split, process_index, process_count) -> host batches: provided here (the engine owns input)

The engine builds every pipeline from `source` and `transforms` and the config (`input_pipeline`): 'train' is
the infinite, seeded (`config.seed`), shuffled and per-process-sharded `pipeline.train_dataset`, any other split
one padded pass (`pipeline.eval_batches`, a boolean `valid` key); per-process batch
`global_batch_size // process_count`; `data.worker_count`, `data.read_threads` and `data.prefetch` (optional).
Every evaluation split's transforms end with the engine's evaluation perturbation, `config.data.perturbation`
(a `perturbations.ForensicAugment` config; unset or {}: none), whatever the task (`eval_perturbation`).
A task whose eval records differ in structure (e.g. Delocate's stage-1 fake/real pairs) returns a different
source and transforms for that split; nothing else is needed.

The NNX graph is split once (`__init__`) into a train-mode and an eval-mode graphdef per model; the state is a
plain pytree (`TrainState`) that `jax.jit` shards, donates and checkpoints. Parameters matched by
`config.freeze` (regexes on `model_name/path/to/param`) are frozen: no gradient is computed for them and the
optimizer never sees them (as the official two-stage codes pass only the trained part to their optimizer).
"""
from __future__ import annotations

import abc
import re
from typing import Any, Callable, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from common.data import perturbations, pipeline
from common.train import optim

Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue: a pytree of arrays.

  step: int32 scalar, completed optimizer steps.
  params: {model_name: nnx.State of nnx.Param} (trained and frozen).
  rest: {model_name: nnx.State} of everything else (BatchNorm statistics, RNG stream keys and counters).
  opt_state: {model_name: optax state over that model's trainable parameters}.
  """
  step: jax.Array
  params: dict[str, Any]
  rest: dict[str, Any]
  opt_state: dict[str, Any]


def _path_str(path) -> str:
  return "/".join(str(p) for p in path)


def train_view(model: nnx.Module) -> nnx.Module:
  """Dropout / DropPath active, BatchNorm on batch statistics."""
  return nnx.view(model, deterministic=False, use_running_average=False, raise_if_not_found=False)


def eval_view(model: nnx.Module) -> nnx.Module:
  return nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)


class Task(abc.ABC):
  """Base class of a method's task. Subclasses implement `build_models`, `loss` (or `train_step`),
  `eval_step`, `source` and `transforms` (the engine's `input_pipeline` builds the Grain pipelines from them);
  `predict` and `export_spec` make the task exportable."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.dtype = jnp.dtype(config.get("dtype", "float32"))  # compute dtype; parameters stay float32
    self.rng_impl = config.get("rng_impl", "threefry2x32")
    self._epoch_length = int(config.get("steps_per_epoch", 0)) or None  # resolved once, saved with checkpoints
    epochs = config.get("epochs", 0)
    self.total_steps = int(epochs * self.epoch_length() if epochs else config.total_steps)
    abstract = nnx.eval_shape(lambda: self.build_models(nnx.Rngs(0)))
    self.model_names = tuple(abstract)
    self._train_gd = {n: nnx.split(train_view(m), nnx.Param, ...)[0] for n, m in abstract.items()}
    self._eval_gd = {n: nnx.split(eval_view(m), nnx.Param, ...)[0] for n, m in abstract.items()}
    self.optimizers = self.make_optimizers()
    self._frozen = [re.compile(p) for p in config.get("freeze", ())]

  # ---------------------------------------------------------------- to implement
  @abc.abstractmethod
  def build_models(self, rngs: nnx.Rngs) -> dict[str, nnx.Module]:
    """Constructs the task's models with fresh parameters."""

  def loss(self, models: dict[str, nnx.Module], batch: Mapping[str, jax.Array],
           rng: jax.Array) -> tuple[jax.Array, Metrics]:
    """Scalar loss and scalar metrics for the default `train_step`; models are in train mode; `rng` is a key
    for losses that sample (fresh per step and micro-batch, reproducible from the seed and the step)."""
    raise NotImplementedError(f"{type(self).__name__} must implement loss() or override train_step()")

  @abc.abstractmethod
  def eval_step(self, state: TrainState, batch: Mapping[str, jax.Array]):
    """A clu `metrics.Collection` for one (padded, `valid`-masked) batch."""

  @abc.abstractmethod
  def source(self, split: str) -> Sequence[Mapping[str, Any]]:
    """The random-access records of `split` (`len` and `[i]`: dicts of numpy arrays, an optional string `id`).

    'train' is the training split, whatever the config names it; any other name is an evaluation split. Build
    (and check) the index here, once per split (e.g. `functools.cache`): `input_pipeline` calls it at once, so
    a bad split fails before the first batch is drawn."""

  def transforms(self, split: str) -> list:
    """Grain transforms applied per record, in order: the training augmentation for 'train', the evaluation
    preprocessing otherwise (`grain.transforms.Map` / `RandomMap` or plain callables). None by default.
    `RandomMap`s draw from the pipeline's seed (`config.seed` for 'train', 0 for evaluation) and the record's
    position, so the draws are reproducible."""
    del split
    return []

  def predict(self, models: dict[str, nnx.Module], inputs: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Inference outputs from raw uint8 inputs, normalised here (eval mode); used by export and predict."""
    raise NotImplementedError(f"{type(self).__name__} is not exportable: implement predict()")

  def export_spec(self) -> dict:
    """The inference contract (`common.inference.spec`): inputs {name: {shape (batch excluded), dtype uint8, ...}},
    input (an `InputSpec`'s fields: kind, trained size, symbolic or why not, ...), outputs {name: meaning}."""
    raise NotImplementedError(f"{type(self).__name__} is not exportable: implement export_spec()")

  def image_summaries(self, state: TrainState, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Images [N, H, W, C] in [0, 1] to log at each evaluation (e.g. prediction heatmaps); none by default.
    The loop calls it under `jax.jit` on the first eval batch."""
    del state, batch
    return {}

  def steps_per_epoch(self) -> int:
    """Optimizer steps per pass over the training split (needed for `config.epochs` and per-epoch schedules)."""
    raise NotImplementedError(f"{type(self).__name__} does not know its epoch length: set config.total_steps")

  def epoch_length(self) -> int:
    """`steps_per_epoch()`, computed once (reading the training split's index) unless the config has it."""
    if self._epoch_length is None:
      self._epoch_length = int(self.steps_per_epoch())
    return self._epoch_length

  def resolved_config(self) -> ml_collections.ConfigDict:
    """The config with the run length fixed (`total_steps`, `steps_per_epoch`, `epochs = 0`), as checkpoints
    store it: evaluating or exporting a run then never needs its training data."""
    config = ml_collections.ConfigDict(self.config.to_dict())
    config.total_steps = self.total_steps
    config.epochs = 0
    config.steps_per_epoch = self._epoch_length or 0
    return config

  def make_optimizers(self) -> dict[str, optax.GradientTransformation]:
    """One optimizer per model from `config.optimizer` (override for GANs with two optimizers)."""
    opt = self.config.optimizer
    per_epoch = self.epoch_length() if opt.get("per_epoch", False) or opt.get("decay_epochs", 0) else None
    return {n: optim.make_optimizer(self.config.optimizer, self.total_steps, per_epoch) for n in self.model_names}

  # ---------------------------------------------------------------- provided
  def input_pipeline(self, split: str, *, process_index: int = 0, process_count: int = 1,
                     perturbation: Mapping[str, Any] | None = None):
    """Host batches of `split` for this process, built from `transforms(split)` and `source(split)` (in that
    order: cheap config checks before the split is indexed). The loop's single entry point.

    An evaluation split's transforms end with the evaluation perturbation (`eval_perturbation`): `perturbation`,
    a `perturbations.ForensicAugment` config ({} = none), or by default `config.data.perturbation`.

    'train': an infinite `grain.IterDataset` (shuffled by `config.seed`, reshuffled every epoch, every record
    once per epoch across processes; its iterator state is checkpointed). Other splits: one finite pass whose
    last batch is padded to the static size, with a boolean `valid` key. Both yield dicts of numpy arrays with a
    leading axis of `global_batch_size // process_count`; string `id`s are dropped. `data.worker_count` (train
    only), `data.read_threads` and `data.prefetch` (read-ahead buffer; 0 or absent: 16 records for train, one
    batch for evaluation) tune throughput, never the batches.
    """
    c = self.config
    d = c.get("data") or {}
    ops = self.transforms(split)
    if split != "train":
      ops = [*ops, *self.eval_perturbation(perturbation)]
    source = self.source(split)
    batch_size = c.global_batch_size // process_count
    kw = dict(batch_size=batch_size, transforms=ops, process_index=process_index, process_count=process_count,
              read_threads=d.get("read_threads", 4), prefetch=d.get("prefetch", 0) or None)
    if split == "train":
      return pipeline.train_dataset(source, seed=c.seed, worker_count=d.get("worker_count", 0), **kw)
    return pipeline.eval_batches(source, **kw)

  def eval_perturbation(self, perturbation: Mapping[str, Any] | None = None) -> list:
    """The engine's evaluation perturbation, appended after every evaluation split's own transforms:
    `[perturbations.ForensicAugment(perturbation)]` (default: `config.data.perturbation`, when the config has it)
    or []. It degrades the record's `image` (uint8 [H, W, 3]) or `frames` (uint8 [T, H, W, 3], one level for
    the whole clip) after the task's resizing and leaves every other key (masks, labels, ROI tokens) as it is;
    random ops draw from the evaluation pipeline's fixed seed, so a perturbed evaluation is reproducible. A
    robustness sweep (`common.train.robustness`) passes one op at one level per evaluation."""
    if perturbation is None:
      perturbation = (self.config.get("data") or {}).get("perturbation")
    return perturbations.eval_transforms(perturbation)

  def key(self, seed) -> jax.Array:
    """A PRNG key of the configured implementation (`config.rng_impl`)."""
    return jax.random.key(seed, impl=self.rng_impl)

  def is_frozen(self, model_name: str, path) -> bool:
    full = f"{model_name}/{_path_str(path)}"
    return any(p.search(full) for p in self._frozen)

  def split_trainable(self, name: str, params: nnx.State) -> tuple[nnx.State, nnx.State]:
    """(trainable, frozen) parts of one model's parameters."""
    return nnx.split_state(params, lambda path, _: not self.is_frozen(name, path), ...)

  def init(self, rng: jax.Array) -> TrainState:
    """Fresh state: models from `build_models`, optimizer states over the trainable parameters."""
    models = self.build_models(nnx.Rngs(rng))
    params, rest, opt_state = {}, {}, {}
    for name, model in models.items():
      _, params[name], rest[name] = nnx.split(model, nnx.Param, ...)
      if name in self.optimizers:
        opt_state[name] = self.optimizers[name].init(self.split_trainable(name, params[name])[0])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, rest=rest, opt_state=opt_state)

  def models(self, state: TrainState, train: bool = False) -> dict[str, nnx.Module]:
    """Merged modules (eval mode by default) for use inside jit, outside differentiation."""
    gds = self._train_gd if train else self._eval_gd
    return {n: nnx.merge(gds[n], state.params[n], state.rest[n], copy=True) for n in self.model_names}

  def grads(self, state: TrainState, loss_fn: Callable, batch: Mapping[str, jax.Array],
            wrt: tuple[str, ...] | None = None) -> tuple[jax.Array, Metrics, dict, dict]:
    """Loss, metrics, gradients w.r.t. the trainable params of models `wrt`, and the updated `rest`.

    `loss_fn(models, batch, rng) -> (loss, metrics)` sees all models in train mode. With
    `config.grad_accum_steps = k > 1` the batch is cut into k micro-batches (element i of every group of k, so
    each device keeps its share), gradients and metrics are averaged, and BatchNorm statistics / RNG streams
    advance micro-batch after micro-batch.
    """
    wrt = tuple(self.optimizers) if wrt is None else wrt
    split = {n: self.split_trainable(n, state.params[n]) for n in wrt}
    trainable = {n: split[n][0] for n in wrt}

    step_rng = jax.random.fold_in(self.key(self.config.seed), state.step)

    def micro_loss(trainable, rest, micro, rng):
      params = {n: (nnx.merge_state(trainable[n], split[n][1]) if n in wrt else state.params[n])
                for n in self.model_names}
      models = {n: nnx.merge(self._train_gd[n], params[n], rest[n], copy=True) for n in self.model_names}
      loss, metrics = loss_fn(models, micro, rng)
      new_rest = {n: nnx.split(m, nnx.Param, ...)[2] for n, m in models.items()}
      return loss, (metrics, new_rest)

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)
    k = int(self.config.get("grad_accum_steps", 1))
    if k == 1:
      (loss, (metrics, rest)), grads = grad_fn(trainable, state.rest, batch, step_rng)
      return loss, metrics, grads, rest

    def cut(x):
      if x.shape[0] % k:
        raise ValueError(f"batch of {x.shape[0]} is not divisible by grad_accum_steps={k}")
      return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)

    micro_batches = jax.tree.map(cut, dict(batch))

    def body(carry, micro_and_index):
      rest, grad_sum = carry
      micro, i = micro_and_index
      (loss, (metrics, rest)), grads = grad_fn(trainable, rest, micro, jax.random.fold_in(step_rng, i))
      return (rest, jax.tree.map(jnp.add, grad_sum, grads)), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, trainable)
    (rest, grad_sum), (losses, metrics) = jax.lax.scan(body, (state.rest, zeros), (micro_batches, jnp.arange(k)))
    grads = jax.tree.map(lambda g: g / k, grad_sum)
    return losses.mean(), jax.tree.map(lambda m: m.mean(0), metrics), grads, rest

  def apply_grads(self, state: TrainState, grads: dict, rest: dict | None = None) -> TrainState:
    """One optimizer update for every model in `grads` (trainable params only); optionally new `rest`."""
    params, opt_state = dict(state.params), dict(state.opt_state)
    for name, g in grads.items():
      trainable, frozen = self.split_trainable(name, state.params[name])
      updates, opt_state[name] = self.optimizers[name].update(g, state.opt_state[name], trainable)
      params[name] = nnx.merge_state(optax.apply_updates(trainable, updates), frozen)
    return state.replace(params=params, opt_state=opt_state, rest=state.rest if rest is None else rest)

  def train_step(self, state: TrainState, batch: Mapping[str, jax.Array]) -> tuple[TrainState, Metrics]:
    """Default step: gradients of `loss` w.r.t. every optimized model, one update, step + 1."""
    loss, metrics, grads, rest = self.grads(state, self.loss, batch)
    state = self.apply_grads(state, grads, rest)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
    return state.replace(step=state.step + 1), metrics
