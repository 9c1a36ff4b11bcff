"""Config value checks shared by every stage and plug-in: one-line `ConfigError`s.

A leaf module: it imports no stage and no plug-in, so the config module, the attackers,
the defenses and a user's plug-in can all use it without importing one another.
"""

from __future__ import annotations

from privjax.errors import ConfigError

__all__ = ["number", "numbers", "positive_int", "require"]


def require(cond: bool, message: str) -> None:
  """Raises ConfigError(message) unless `cond`."""
  if not cond:
    raise ConfigError(message)


def positive_int(name: str, value, *, zero_ok: bool = False) -> None:
  """Checks config.`name` is an integer > 0 (or >= 0 with zero_ok)."""
  require(
    isinstance(value, int)
    and not isinstance(value, bool)
    and (value > 0 or zero_ok and value == 0),
    f"config.{name} must be a {'non-negative' if zero_ok else 'positive'} integer, got {value!r}",
  )


def number(name: str, value, low=None, high=None) -> None:
  """Checks config.`name` is a number in [low, high] (either bound optional)."""
  ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  if ok and low is not None:
    ok = value >= low
  if ok and high is not None:
    ok = value <= high
  bounds = ""
  if low is not None and high is not None:
    bounds = f" in [{low}, {high}]"
  elif low is not None:
    bounds = f" >= {low}"
  elif high is not None:
    bounds = f" <= {high}"
  require(ok, f"config.{name} must be a number{bounds}, got {value!r}")


def numbers(name: str, values, low=None, high=None) -> None:
  """Checks config.`name` is a non-empty list or tuple of numbers in [low, high]."""
  require(
    isinstance(values, (list, tuple)) and len(values) > 0,
    f"config.{name} must be a non-empty list of numbers, got {values!r}",
  )
  for i, v in enumerate(values):
    number(f"{name}[{i}]", v, low, high)
