"""Reading a report's JSON-ready numbers: pure look-ups in its dict, with no JAX.

The page, the plots and the command line's summary line read a report's summary (or a
report.json) through these, so presenting a report never imports the computing modules
(privjax.scoring.identity, privjax.defenses.utility), which import JAX.
"""

from __future__ import annotations

import math

__all__ = ["at_fmr", "headline"]


def at_fmr(summary: dict, fmr: float) -> dict | None:
  """The row of `summary["fmrs"]` (or of a calibration's "thresholds") at `fmr`."""
  rows = summary.get("fmrs", summary.get("thresholds", []))
  return next((r for r in rows if math.isclose(r["fmr"], fmr)), None)


def headline(measured: dict) -> tuple[str, float] | None:
  """(name, value) of the utility the curve and the best trade-off use: the first measured
  utility (`privjax.defenses.utility.measure` writes them in their declared headline order: k-NN
  rank-1, then the linear probe), else the user's first number; None when nothing was
  measured."""
  name = next((n for n in measured if n != "user"), None)
  if name is not None:
    return name, measured[name]["rate"]
  if measured.get("user"):
    return next(iter(measured["user"].items()))
  return None
