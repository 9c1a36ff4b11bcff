"""The verdict's levels and their order: the one table the verdict, the defense sweep, the
report and the release gate share (a leaf)."""

__all__ = ["LEVELS", "SEVERITY", "reaches"]

LEVELS = ("low", "medium", "high")  # the verdict's levels, least severe first
SEVERITY = {level: rank for rank, level in enumerate(LEVELS)}  # level -> its rank in LEVELS


def reaches(level: str, gate: str) -> bool:
  """Whether a verdict `level` is at least `gate` ("medium" or "high"): a release gate."""
  return SEVERITY[level] >= SEVERITY[gate]
