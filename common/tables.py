"""One table writer for the experiment tools (evaluation, sweeps, robustness): a markdown and a CSV file."""
from __future__ import annotations

import csv
import math
import os
from typing import Sequence


def _cell(value) -> str:
  if isinstance(value, float):
    return "nan" if math.isnan(value) else f"{value:.4f}"
  return str(value)


def write(rows: Sequence[dict], columns: Sequence[str], stem: str) -> tuple[str, str]:
  """Writes `stem`.md and `stem`.csv: one line per row, `columns` in order (a missing value is NaN; the markdown
  shows floats to 4 decimals, the CSV at full precision). Returns (markdown path, CSV path)."""
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  values = [[row.get(c, float("nan")) for c in columns] for row in rows]
  md, csv_path = f"{stem}.md", f"{stem}.csv"
  with open(md, "w", encoding="utf-8") as f:
    f.write("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
    for line in values:
      f.write("| " + " | ".join(_cell(v) for v in line) + " |\n")
  with open(csv_path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    writer.writerows(values)
  return md, csv_path
