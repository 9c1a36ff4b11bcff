"""The workdir: one run at a time, fingerprinted stage caches, no silent blends.

A run holds an exclusive `flock` on `<workdir>/.privjax.lock` for its whole length;
a second run on the same workdir fails at once, and the kernel drops the lock when
a run dies, however it dies, so a crash never leaves it stuck. In a multi-process
run, process p > 0 locks `.privjax-p.lock`, so two jobs cannot share a workdir while
the processes of one job can; the workdir must be storage every process sees.

Each cached stage (the recognition model, features, the decoder checkpoints)
records a fingerprint of everything its result depends on (config fields, data
and model hashes). Re-running with the same inputs reuses it; different inputs are
an error naming what changed, unless `config.overwrite=True` discards the stale
stage. Results are never mixed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile

import jax
import numpy as np

from privjax import parallel
from privjax.errors import WorkdirError

LOCK_FILE = ".privjax.lock"
FINGERPRINT_FILE = "fingerprint.json"
_held: dict[str, int] = {}  # workdirs whose lock this process holds -> nesting depth


def prepare(path: str) -> str:
  """Creates `path` if needed and checks it is a writable directory; returns it absolute."""
  path = os.path.abspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f"workdir must be a directory, got an existing file: {path}")
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as e:
    raise WorkdirError(f"workdir {path} is not writable: {e.strerror or e}") from e
  return path


@contextlib.contextmanager
def locked(path: str):
  """Holds the workdir's exclusive lock (re-entrant within one process)."""
  path = prepare(path)
  if path in _held:
    _held[path] += 1
    try:
      yield path
    finally:
      _held[path] -= 1
    return
  p = jax.process_index()
  name = LOCK_FILE if p == 0 else LOCK_FILE.replace(".lock", f"-{p}.lock")
  fd = os.open(os.path.join(path, name), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
    os.close(fd)
    raise WorkdirError(
      f"another privjax run (pid {holder}) is using workdir {path}; wait for it or use "
      "another --workdir"
    ) from None
  os.ftruncate(fd, 0)
  os.pwrite(fd, str(os.getpid()).encode(), 0)
  _held[path] = 1
  try:
    yield path
  finally:
    del _held[path]
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def array_hash(*arrays) -> str:
  """sha256 of arrays' dtypes, shapes and bytes (a pytree's leaves, in order)."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(arrays):
    a = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def atomic_write(path: str, data: bytes) -> None:
  """Writes `data` to a temporary file beside `path`, then renames it over `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += _differences(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append(f"{prefix}{key}: {a!r} -> {b!r}")
  return out


def claim_stage(directory: str, fingerprint: dict, *, overwrite: bool, what: str) -> None:
  """Makes `directory` hold results of `fingerprint`: reuse, error, or discard if overwrite.

  A directory without a fingerprint but with other content (an older run) counts as
  different. Raises WorkdirError naming the first differences. Every process checks
  (and fails alike); only process 0 changes the directory, between barriers.
  """
  fingerprint = json.loads(json.dumps(fingerprint))  # normalise (tuples -> lists)
  path = os.path.join(directory, FINGERPRINT_FILE)
  if os.path.isdir(directory) and os.listdir(directory):
    try:
      with open(path) as f:
        stored = json.load(f)
    except (OSError, ValueError):
      stored = {}
    if stored == fingerprint:
      return
    if not overwrite:
      diffs = _differences(stored, fingerprint) or ["no fingerprint recorded"]
      raise WorkdirError(
        f"the workdir's {what} was made with different inputs ({'; '.join(diffs[:3])}); use "
        "another --workdir, or --config.overwrite=True to discard it"
      )
  parallel.barrier(f"claim {directory}: checked")
  if parallel.is_writer():
    if os.path.isdir(directory):
      shutil.rmtree(directory)
    os.makedirs(directory)
    atomic_write(path, json.dumps(fingerprint, indent=1, sort_keys=True).encode())
  parallel.barrier(f"claim {directory}: written")
