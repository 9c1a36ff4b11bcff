"""Feature screening: corrupt feature rows found before any attacker fits, so one bad row
never decides the verdict.

A single stored auxiliary row of 1e15 dominates a per-dimension mean and standard
deviation: after standardisation every other row's signal rounds away and every
attacker learns nothing (a silent "low"). Screening measures each row on a robust scale
fitted on the auxiliary set (the median and the median absolute deviation of each
dimension, unmoved by a few corrupt rows) and flags the rows whose size on that scale is
extreme. Flagged auxiliary rows are left out of everything the attackers, the defenses
and the utility fit; flagged target rows are attacked as they are (their own
reconstructions may fail, which can only lower the numbers) and named in per_image.csv.
Both are named in one warning each.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["EXTREME", "Screened", "robust_scale", "row_sizes", "screen"]

# A row is extreme when its largest robust z-score is this many times the median row's
# (and at least MIN_EXTREME robust deviations): on real features the largest row is a few
# times the median one; a corrupt row (a unit mix-up, a memory fault, 1e6 or 1e15) is
# hundreds to 1e15 times it.
EXTREME = 25.0
MIN_EXTREME = 50.0
_MAD_TO_STD = 1.4826  # the MAD of a normal distribution times this is its std


def robust_scale(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-dimension (centre, scale) of [N, D] features that a few corrupt rows cannot move.

  The centre is the median; the scale the MAD (times 1.4826). A dimension whose MAD is
  zero (more than half its values equal, as in a sparse ReLU feature) takes the MAD of
  its values that differ from the median; a dimension with none (constant) takes the
  median scale of the others, so its units never decide (1 when all are constant).

  Returns:
    centre [D] float64, scale [D] float64 > 0.
  """
  f = np.asarray(features, np.float64)
  centre = np.median(f, axis=0)
  dev = np.abs(f - centre)
  scale = _MAD_TO_STD * np.median(dev, axis=0)
  flat = scale <= 0
  for j in np.flatnonzero(flat):
    moved = dev[:, j][dev[:, j] > 0]
    if moved.size:
      scale[j] = _MAD_TO_STD * np.median(moved)
  fallback = float(np.median(scale[scale > 0])) if np.any(scale > 0) else 1.0
  return centre, np.where(scale > 0, scale, fallback)


def row_sizes(features: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
  """[N] each row's largest |robust z-score| over its dimensions (float64)."""
  z = (np.asarray(features, np.float64) - centre) / scale
  return np.max(np.abs(z), axis=1) if z.shape[1] else np.zeros(z.shape[0])


@dataclasses.dataclass(frozen=True)
class Screened:
  """Which feature rows are extreme."""

  aux_extreme: np.ndarray  # [K_aux] int indices of the auxiliary rows left out
  target_extreme: np.ndarray  # [K_tgt] int indices of the extreme target rows
  num_aux: int
  num_targets: int
  threshold: float  # the robust z-score above which a row is extreme

  @property
  def keep(self) -> np.ndarray:
    """[N_aux] bool: the auxiliary rows every attacker fits on."""
    mask = np.ones(self.num_aux, bool)
    mask[self.aux_extreme] = False
    return mask

  def target_flags(self) -> np.ndarray:
    """[N] per_image.csv's `feature_row`: "extreme" or "ok" for each target."""
    out = np.full(self.num_targets, "ok", dtype=object)
    out[self.target_extreme] = "extreme"
    return out

  def warnings(self) -> list[str]:
    """One line per side with extreme rows: how many, which, and what was done."""
    out = []
    if len(self.aux_extreme):
      out.append(
        f"{len(self.aux_extreme)} of {self.num_aux} auxiliary feature rows are extreme "
        f"(a value over {self.threshold:.0f} robust deviations from the median; rows "
        f"{_indices(self.aux_extreme)}): left out of every attacker's, defense's and "
        "utility's fit; check how those features were stored"
      )
    if len(self.target_extreme):
      out.append(
        f"{len(self.target_extreme)} of {self.num_targets} target feature rows are extreme "
        f"(rows {_indices(self.target_extreme)}, feature_row=extreme in per_image.csv): "
        "attacked as they are; their reconstructions may fail, so the numbers may "
        "understate the risk"
      )
    return out


def _indices(idx: np.ndarray, shown: int = 10) -> str:
  head = ", ".join(str(int(i)) for i in idx[:shown])
  return head + (f", ... ({len(idx) - shown} more)" if len(idx) > shown else "")


def screen(f_aux: np.ndarray, f_tgt: np.ndarray) -> Screened:
  """Flags the extreme rows of auxiliary [N_aux, D] and target [N, D] features, on the
  robust scale of the auxiliary set.

  A row is extreme when its largest robust z-score exceeds EXTREME times the median
  auxiliary row's and MIN_EXTREME (by the median, fewer than half the rows can be).
  """
  centre, scale = robust_scale(f_aux)
  sizes_aux = row_sizes(f_aux, centre, scale)
  threshold = max(EXTREME * float(np.median(sizes_aux)) if len(sizes_aux) else 0.0, MIN_EXTREME)
  aux_extreme = np.flatnonzero(sizes_aux > threshold)
  tgt_extreme = np.flatnonzero(row_sizes(f_tgt, centre, scale) > threshold)
  return Screened(aux_extreme, tgt_extreme, len(sizes_aux), len(f_tgt), threshold)
