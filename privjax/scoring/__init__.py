"""Judging: image metrics, one attacker's scores, the evaluator's arithmetic, the verdict.

Rule: a scoring module imports only `privjax.runtime`, the spine leaves and other scoring
modules: it knows no model, attacker or stage.

`score` (privjax.scoring.api) scores reconstructions against their originals in a few
lines, with plain arrays and a `jax.random` key.

The names below load on first use, so importing one module (`privjax.scoring.metrics`)
loads only what it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
  from privjax.scoring.api import ImageScores, score
  from privjax.scoring.scores import METRICS

# Each lazy name: the module it comes from.
_LAZY = {
  "METRICS": "privjax.scoring.scores",
  "ImageScores": "privjax.scoring.api",
  "score": "privjax.scoring.api",
}

__all__ = ["METRICS", "ImageScores", "score"]


def __getattr__(name: str):
  """Loads a lazy name's module on first use (PEP 562)."""
  if name not in _LAZY:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(importlib.import_module(_LAZY[name]), name)
  globals()[name] = value
  return value
