"""`WORKDIR/run.lock`: one live training process (or multi-host run) per run directory.

The lock file holds `{host, pid, started, token, beat}`; its holder rewrites it (`beat` + 1) every `HEARTBEAT_S`
seconds from a daemon thread, so that a holder on another host can be told alive without trusting clocks.
Taking the lock:
  * no lock: created atomically (a hard link of a fully written temporary file, which fails if one exists);
  * held on this host: a live pid is refused at once (`RunError` naming host, pid and start time); a dead pid
    (a killed run) is taken over with a warning;
  * held on another host: its heartbeat is watched for up to `STALE_S` seconds. A beat means a live holder
    (refused); none means a host that died without releasing it, and the lock is taken over with a warning.
Multi-host runs: process 0 takes the lock and broadcasts its token; every other process checks that the lock
file (on the shared filesystem) carries that token, so two runs can never interleave in one directory.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time

from common.train.errors import RunError

HEARTBEAT_S = 10.0
STALE_S = 60.0
LOCK_NAME = "run.lock"


def _read(path: str) -> dict | None:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (json.JSONDecodeError, OSError):
    return {}  # being replaced right now, or garbled: treated as a holder that has not written yet


def _describe(holder: dict) -> str:
  started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
  return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started {started}"


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # exists, owned by someone else
  return True


class WorkdirLock:
  """The lock of one run directory; `acquire()` then `release()` (or use as a context manager)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_NAME)
    self.token = 0
    self._record: dict = {}
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  # ------------------------------------------------------------------ taking and giving back
  def acquire(self, token: int | None = None) -> int:
    """Takes the lock (process 0 of a run); returns the token that the other processes check."""
    self.token = token or secrets.randbits(31) or 1
    self._record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "token": self.token,
                    "beat": 0}
    while not self._create():
      holder = _read(self.path)
      if holder is None:
        continue  # released meanwhile
      self._check_holder(holder)  # raises if alive
      logging.warning("%s: taking over the lock of a run that is gone (%s)", self.path, _describe(holder))
      self._write()
      time.sleep(0.05)
      if (_read(self.path) or {}).get("token") != self.token:
        raise RunError(f"{self.path}: another process took this run directory at the same time: "
                       f"{_describe(_read(self.path) or {})}")
      break
    self._thread = threading.Thread(target=self._heartbeat, name="workdir-lock-heartbeat", daemon=True)
    self._thread.start()
    return self.token

  def check(self, token: int) -> None:
    """On a process other than 0: the lock must be the one process 0 of this run took."""
    holder = _read(self.path) or {}
    if holder.get("token") != token:
      raise RunError(f"{self.path}: this run's process 0 holds the lock (token {token}) but the file says "
                     f"{_describe(holder) if holder else 'nothing'}: is the workdir on a filesystem shared by "
                     "every process?")

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    if (_read(self.path) or {}).get("token") == self.token:
      os.remove(self.path)

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()

  # ------------------------------------------------------------------ internals
  def _create(self) -> bool:
    """Creates the lock atomically; False if one exists."""
    tmp = f"{self.path}.{os.getpid()}.{self.token}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(self._record, f)
    try:
      os.link(tmp, self.path)
      return True
    except FileExistsError:
      return False
    finally:
      os.remove(tmp)

  def _write(self) -> None:
    tmp = f"{self.path}.{os.getpid()}.{self.token}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(self._record, f)
    os.replace(tmp, self.path)

  def _check_holder(self, holder: dict) -> None:
    """Returns if the holder is gone; raises RunError naming it if it is alive."""
    hint = (f"wait for it to finish, stop it, or use another --workdir (if it is surely gone, delete "
            f"{self.path})")
    if holder.get("host") == socket.gethostname():
      pid = holder.get("pid")
      if isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid):
        raise RunError(f"{self.path}: the run directory is in use by {_describe(holder)}: {hint}")
      return
    logging.warning("%s: held by %s; watching its heartbeat for up to %.0f s", self.path, _describe(holder),
                    STALE_S)
    end = time.monotonic() + STALE_S
    while time.monotonic() < end:
      time.sleep(min(1.0, HEARTBEAT_S / 4))
      now = _read(self.path)
      if now is None:
        return  # released
      if now != holder:
        raise RunError(f"{self.path}: the run directory is in use by {_describe(now)} (its heartbeat is "
                       f"live): {hint}")

  def _heartbeat(self) -> None:
    while not self._stop.wait(HEARTBEAT_S):
      if (_read(self.path) or {}).get("token") != self.token:
        logging.error("%s: the lock was taken by another process; this run no longer holds it", self.path)
        return
      self._record["beat"] += 1
      self._write()
