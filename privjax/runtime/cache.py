"""Checksummed array caches in the workdir: nothing read back from disk is trusted unchecked.

A cache entry is one .npz file (written atomically, never pickled) holding named arrays
and a sha256 of them. `load` returns None for a missing, unreadable, damaged or
non-finite entry (logged), so the caller recomputes it; it never returns bad data.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
from absl import logging

from privjax.runtime import parallel
from privjax.runtime.workdir import array_hash, atomic_write

__all__ = ["cached", "load", "save"]

_CHECKSUM = "__sha256__"
_JSON = "__json__"


def _digest(arrays: dict) -> str:
  return array_hash(*[arrays[k] for k in sorted(arrays)], np.array(sorted(arrays)))


def save(path: str, arrays: dict, info: dict | None = None) -> None:
  """Writes `arrays` (and a JSON-ready `info`) to `path` with their checksum (process 0)."""
  if not parallel.is_writer():
    return
  arrays = {k: np.asarray(v) for k, v in arrays.items()}
  if info is not None:
    arrays[_JSON] = np.frombuffer(json.dumps(info).encode(), np.uint8)
  buf = io.BytesIO()
  np.savez(buf, **arrays, **{_CHECKSUM: np.array(_digest(arrays))})
  atomic_write(path, buf.getvalue())


def load(path: str) -> tuple[dict, dict | None] | None:
  """(arrays, info) from `path`, or None if absent or damaged (then logged: recompute)."""
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
    stored = str(arrays.pop(_CHECKSUM))
    if stored != _digest(arrays):
      raise ValueError("checksum mismatch")
    info = json.loads(arrays.pop(_JSON).tobytes()) if _JSON in arrays else None
    for k, a in arrays.items():
      if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ValueError(f"non-finite values in {k}")
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    logging.warning("cache %s is damaged (%s): recomputing it", path, e)
    return None
  return arrays, info


def cached(path: str | None, compute, *, what: str = ""):
  """(arrays, info, restored): `path`'s checked entry, else `compute()`'s (arrays, info)
  saved there; with no path, computed and never saved. An exception from `compute` (a
  skipped attacker) leaves nothing behind. `what` names a restored entry in the log."""
  if path:
    found = load(path)
    if found is not None:
      if what:
        logging.info("%s restored from %s", what, path)
      return (*found, True)
  arrays, info = compute()
  if path:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save(path, arrays, info)
  return arrays, info, False
