"""The verdict's levels and their order: the one table the verdict, the defense sweep, the
report and the release gate share (a leaf)."""

LEVELS = ("low", "medium", "high")
SEVERITY = {level: rank for rank, level in enumerate(LEVELS)}


def reaches(level: str, gate: str) -> bool:
  """Whether a verdict `level` is at least `gate` ("medium" or "high"): a release gate."""
  return SEVERITY[level] >= SEVERITY[gate]
