"""Progress lines with an ETA for long command-line work (predict over videos, robustness sweeps)."""
from __future__ import annotations

from collections.abc import Callable
import sys
import time


def duration(seconds: float) -> str:
  """'2 h 05 min', '3 min 07 s' or '42 s'."""
  seconds = int(round(seconds))
  return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min" if seconds >= 3600 else (
      f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s")


def print_line(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


class Progress:
  """Counts units of work and reports `what: done/total units, rate, ETA` at most every `every` seconds (and when
  the last unit is done); `total` 0 means unknown (no ETA)."""

  def __init__(self, what: str, total: int, unit: str, *, every: float = 5.0,
               report: Callable[[str], None] = print_line):
    self.what, self.total, self.unit, self.every, self.report = what, total, unit, every, report
    self.done, self.start, self.last = 0, time.time(), 0.0

  def update(self, count: int = 1) -> None:
    self.done += count
    now = time.time()
    if now - self.last < self.every and self.done != self.total:
      return
    self.last = now
    elapsed = now - self.start
    rate = self.done / elapsed if elapsed > 0 else 0.0
    of = f"/{self.total}" if self.total else ""
    eta = f", ETA {duration((self.total - self.done) / rate)}" if self.total and rate > 0 else ""
    self.report(f"{self.what}: {self.done}{of} {self.unit} ({rate:.2f}/s, {duration(elapsed)}{eta})")
