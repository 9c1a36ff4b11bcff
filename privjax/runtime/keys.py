"""Stage keys: one hash of everything a stage's result depends on, derived from the objects
the stage reads, never from a list of config fields kept by hand at the call site.

A stage that stores a result (a sweep point, an attacker's reconstructions) keys it with
`of(...)` over its own settings objects. A dataclass enters with every field, so a field
added later is in the key without anyone remembering to add it; the fields that cannot
change a number (a mesh, a workdir, a timer) are named once, on the class, in
`NOT_NUMBERS`. An object with a `fingerprint()` method enters by it (a model by the hash
of its program and weights); arrays by their bytes; functions by their source.

A leaf module: it imports nothing of privjax but the workdir's array hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json

import numpy as np

from privjax.runtime.workdir import array_hash

__all__ = ["code", "fingerprint", "of", "seed"]


def code(fn) -> str:
  """A hash of a function's source (a defense's, a utility's, a user's plug-in), so that a
  result computed with other code is never restored; "" for None."""
  if fn is None:
    return ""
  try:
    text = inspect.getsource(fn)
  except (OSError, TypeError):
    text = getattr(fn, "__qualname__", repr(fn))
  return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(obj):
  """A JSON-ready stand-in for `obj` that changes whenever anything in it that can change
  a number does: dataclasses field by field (less the class's `NOT_NUMBERS`), mappings
  and sequences item by item, arrays by hash, functions by source."""
  if hasattr(obj, "fingerprint") and callable(obj.fingerprint) and not isinstance(obj, type):
    return fingerprint(obj.fingerprint())
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    skip = getattr(type(obj), "NOT_NUMBERS", frozenset())
    return {
      "__type__": type(obj).__qualname__,
      **{
        f.name: fingerprint(getattr(obj, f.name))
        for f in dataclasses.fields(obj)
        if f.name not in skip
      },
    }
  if hasattr(obj, "to_dict") and callable(obj.to_dict):  # an ml_collections ConfigDict
    return fingerprint(obj.to_dict())
  if isinstance(obj, dict):
    return {str(k): fingerprint(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [fingerprint(v) for v in obj]
  if obj is None or isinstance(obj, (bool, str)):
    return obj
  if isinstance(obj, (int, float, np.integer, np.floating, np.bool_)):
    return repr(float(obj)) if isinstance(obj, (float, np.floating)) else int(obj)
  if isinstance(obj, np.ndarray) or hasattr(obj, "__array__"):
    return {"array": array_hash(np.asarray(obj))}
  if callable(obj):
    return {"code": code(obj)}
  raise TypeError(f"privjax.runtime.keys: cannot fingerprint a {type(obj).__name__}")


def of(*parts) -> str:
  """sha256 hex of the fingerprints of `parts`."""
  blob = json.dumps([fingerprint(p) for p in parts], sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()


def seed(*parts) -> int:
  """A 31-bit integer drawn from plain JSON-ready `parts` (a sweep point's noise seed)."""
  blob = json.dumps(parts, sort_keys=True, default=str)
  return int(hashlib.sha256(blob.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF
