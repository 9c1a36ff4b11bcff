"""Getting data in: the sources (digits, TFDS, folders, .npz), face alignment, role splits.

Rule: a data module imports only `privjax.runtime`, the spine leaves (errors, registry,
checks) and other data modules: it knows no model, attacker or score. The names below load
on first use, so importing one module (`privjax.data.images`) loads only what it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
  from privjax.data.images import to_unit_float
  from privjax.data.splits import load_digits

# Each lazy name: the module it comes from.
_LAZY = {"load_digits": "privjax.data.splits", "to_unit_float": "privjax.data.images"}

__all__ = ["load_digits", "to_unit_float"]


def __getattr__(name: str):
  """Loads a lazy name's module on first use (PEP 562)."""
  if name not in _LAZY:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(importlib.import_module(_LAZY[name]), name)
  globals()[name] = value
  return value
