"""Host memory: what this host has available, and a stage's need checked before it starts.

A stage that would hold more than the host has is refused in one line that names the
need, what drives it and what to lower, before any of its work is done (never an
out-of-memory kill halfway through).
"""

from __future__ import annotations

import os

__all__ = ["available", "check"]


def available() -> int:
  """Bytes of memory this host has available now (0 if unknown)."""
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return 0


def check(need: int, what: str, remedy: str, error: type[Exception]) -> None:
  """Raises `error` with one line when `need` bytes exceed what the host has available.

  Args:
    need: bytes the stage will hold at once.
    what: the stage and what its need comes from, e.g. "ridge for 810 auxiliary images".
    remedy: what to lower or switch off.
    error: the PrivjaxError class to raise.
  """
  have = available()
  if have and need > have:
    raise error(
      f"{what} needs about {need / 2**30:.1f} GiB; this host has {have / 2**30:.1f} GiB "
      f"available: {remedy}"
    )
