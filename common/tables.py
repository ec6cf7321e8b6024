"""One table writer for the experiment tools (evaluation, sweeps, robustness): a markdown and a CSV file."""
from __future__ import annotations

import csv
import math
import os
from typing import Mapping, Sequence


def _cell(value) -> str:
  if isinstance(value, float):
    return "nan" if math.isnan(value) else f"{value:.4f}"
  return str(value)


def _best_rows(values: list[list], columns: Sequence[str], best: Mapping[str, str]) -> dict[int, set[int]]:
  """{column index: row indices holding its best finite value}, for the columns `best` names ('max' | 'min')."""
  marked = {}
  for j, column in enumerate(columns):
    if column not in best:
      continue
    finite = [(v[j], i) for i, v in enumerate(values) if isinstance(v[j], (int, float)) and math.isfinite(v[j])]
    if finite:
      target = (max if best[column] == "max" else min)(v for v, _ in finite)
      marked[j] = {i for v, i in finite if v == target}
  return marked


def write(rows: Sequence[dict], columns: Sequence[str], stem: str,
          best: Mapping[str, str] | None = None) -> tuple[str, str]:
  """Writes `stem`.md and `stem`.csv: one line per row, `columns` in order (a missing value is NaN; the markdown
  shows floats to 4 decimals, the CSV at full precision). `best` (column -> 'max' | 'min') bolds each such column's
  best value in the markdown. Returns (markdown path, CSV path)."""
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  values = [[row.get(c, float("nan")) for c in columns] for row in rows]
  marked = _best_rows(values, columns, best or {})
  md, csv_path = f"{stem}.md", f"{stem}.csv"
  with open(md, "w", encoding="utf-8") as f:
    f.write("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
    for i, line in enumerate(values):
      cells = [f"**{_cell(v)}**" if i in marked.get(j, ()) else _cell(v) for j, v in enumerate(line)]
      f.write("| " + " | ".join(cells) + " |\n")
  with open(csv_path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    writer.writerows(values)
  return md, csv_path
