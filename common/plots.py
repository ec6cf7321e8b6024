"""The experiment tools' figures (robustness curves, sweep bars): one PNG each, drawn with matplotlib (Agg).

Figures are built with `matplotlib.figure.Figure` (no pyplot state, no GUI backend), so tools may draw from any
thread. Predicted masks and heatmap overlays are `common.visualize`'s.
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
HIGHLIGHT, PLAIN = "#d62728", "#9fb7d0"


def _figure(panels: int, width: float, height: float, max_columns: int):
  from matplotlib.figure import Figure
  columns = max(1, min(panels, max_columns))
  rows = max(1, math.ceil(panels / columns))
  fig = Figure(figsize=(width * columns, height * rows))
  axes = fig.subplots(rows, columns, squeeze=False).ravel()
  for ax in axes[panels:]:
    ax.set_visible(False)
  return fig, axes


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return path


def _unit_range(values) -> bool:
  finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
  return bool(finite) and 0.0 <= min(finite) and max(finite) <= 1.0


def line_panels(panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]], path: str, *,
                ylabel: str, xlabel: Mapping[str, str] | str = "level",
                references: Mapping[str, float] | None = None, title: str = "", max_columns: int = 5) -> str:
  """One panel per key of `panels` ({panel: {line label: (xs, ys)}}), one line per label, in a stable colour per
  label across panels; `references` ({line label: y}, e.g. the clean score) are dashed horizontal lines in the
  label's colour. A panel whose xs run downwards (e.g. JPEG quality 100 -> 50) has its x axis reversed, so the
  strongest level is always on the right. y spans [0, 1] when every value lies there. Returns `path` (a PNG)."""
  labels = list(dict.fromkeys(label for lines in panels.values() for label in lines))
  color = {label: COLORS[i % len(COLORS)] for i, label in enumerate(labels)}
  fig, axes = _figure(len(panels), 4.0, 3.2, max_columns)
  for ax, (name, lines) in zip(axes, panels.items()):
    for label, (xs, ys) in lines.items():
      ax.plot(list(xs), list(ys), marker="o", color=color[label], label=label)
      if references and label in references:
        ax.axhline(references[label], color=color[label], linestyle="--", linewidth=1)
    xs = [x for xs, _ in lines.values() for x in xs]
    if len(xs) > 1 and xs[0] > xs[-1]:
      ax.invert_xaxis()
    values = [y for _, ys in lines.values() for y in ys] + list((references or {}).values())
    if _unit_range(values):
      ax.set_ylim(0.0, 1.0)
    ax.set_title(name)
    ax.set_xlabel(xlabel if isinstance(xlabel, str) else xlabel.get(name, "level"))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if lines:
      ax.legend(fontsize=7)
  if title or references:
    fig.suptitle(" ".join(filter(None, [title, "(dashed: clean)" if references else ""])), fontsize=9)
  return _save(fig, path)


def bar_panels(panels: Mapping[str, Mapping[str, float]], path: str, *, best: Mapping[str, str] | None = None,
               title: str = "", max_columns: int = 4) -> str:
  """One bar panel per key of `panels` ({panel: {bar label: value}}); in each panel that `best` names ('max' or
  'min') the best finite bar(s) are drawn in the highlight colour and the others plain. Returns `path`."""
  fig, axes = _figure(len(panels), max(3.0, 0.5 * max((len(b) for b in panels.values()), default=1) + 1.5), 3.2,
                      max_columns)
  for ax, (name, bars) in zip(axes, panels.items()):
    labels, values = list(bars), [float(v) for v in bars.values()]
    finite = [v for v in values if math.isfinite(v)]
    target = None
    if best and name in best and finite:
      target = max(finite) if best[name] == "max" else min(finite)
    ax.bar(range(len(values)), [v if math.isfinite(v) else 0.0 for v in values],
           color=[HIGHLIGHT if target is not None and v == target else PLAIN for v in values])
    crowded = sum(len(label) for label in labels) > 24
    ax.set_xticks(range(len(labels)), labels, rotation=35 if crowded else 0, ha="right" if crowded else "center",
                  fontsize=8)
    ax.set_title(name + (f" ({'higher' if best[name] == 'max' else 'lower'} is better)" if best and name in best
                         else ""), fontsize=9)
    ax.grid(axis="y", alpha=0.3)
  if title:
    fig.suptitle(title, fontsize=9)
  return _save(fig, path)
