"""What a model was trained on, for how long, and how it scored: the card an export carries and predict prints.

  {"method": "vilocal_jax", "task": config.task, "step": 1800, "total_steps": 1800,
   "training": {"root" or "prepared_dir", "methods", "split", "format"}, "demo": true,
   "evaluation": {metric: value} of the run's final evaluation (or of `step`'s), "evaluated_step": 1800,
   "summary": one line for people}

`demo` is true when the training data are the embedded demo corpus (`data.root` empty, or a preparation of the
demo corpus): such a model has seen a few synthetic forgeries of a handful of photos, and is not a detector for
real media.
"""
from __future__ import annotations

import json
import os

import ml_collections

from common.data.demo import corpus

DEMO_WARNING = ("this model was trained on the embedded demo corpus (a few synthetic forgeries of a handful of "
                "photos): its scores on real media mean nothing")
_DATA_FIELDS = ("root", "prepared_dir", "format", "methods", "manipulations", "compression", "split", "train_split")


def _read_json(path: str) -> dict:
  if not os.path.isfile(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _under_demo_corpus(path: str) -> bool:
  """Whether `path` lies in a demo corpus folder (`<cache>/demo-vN`, holding the corpus manifest)."""
  path = os.path.abspath(path)
  while path != os.path.dirname(path):
    if os.path.basename(path).startswith(corpus.VERSION.split("-")[0] + "-") and \
        os.path.isfile(os.path.join(path, corpus.MANIFEST)):
      return True
    path = os.path.dirname(path)
  return False


def trained_on_demo(data: ml_collections.ConfigDict) -> bool:
  if data.get("format", "folder") == "arrayrecord":
    sources = _read_json(os.path.join(data.prepared_dir, "manifest.json")).get("sources", {})
    return _under_demo_corpus(sources.get("root", "")) if sources.get("root") else False
  return not data.get("root", "")


def _evaluation(workdir: str, step: int) -> tuple[dict, int | None]:
  complete = _read_json(os.path.join(workdir, "complete.json"))
  if complete.get("step") == step:
    return dict(complete.get("eval", {})), step
  ledger = _read_json(os.path.join(workdir, "eval_metrics.json"))
  if str(step) in ledger:
    return dict(ledger[str(step)]), step
  return {}, None


def _summary(card: dict) -> str:
  data = card["training"]
  where = "the embedded demo corpus" if card["demo"] else (data.get("root") or data.get("prepared_dir") or "?")
  subsets = data.get("methods") or data.get("manipulations")
  line = f"{card['method']} trained on {where}" + (f" ({', '.join(map(str, subsets))})" if subsets else "")
  line += f" for {card['step']} steps"
  if card["evaluation"]:
    shown = list(card["evaluation"].items())[:4]
    line += "; its evaluation: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}"
                                             for k, v in shown)
  return line


def model_card(config: ml_collections.ConfigDict, workdir: str, step: int) -> dict:
  """The card of `workdir`'s checkpoint at `step` (trained with `config`)."""
  data = config.get("data", ml_collections.ConfigDict())
  training = {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items() if k in _DATA_FIELDS}
  evaluation, evaluated = _evaluation(workdir, step)
  card = {"method": config.task.split(".")[0], "task": config.task, "step": int(step),
          "total_steps": int(config.get("total_steps", 0) or 0), "training": training,
          "demo": trained_on_demo(data), "evaluation": evaluation, "evaluated_step": evaluated}
  card["summary"] = _summary(card)
  return card
