"""The extra per-target metrics' group of the config, `config.metrics`: how a user's entries
merge into it and its checks.

Each entry is `name: {type, high, medium}`; `type` a metric of `scores.METRICS` or a
user's "package.module:function", `high`/`medium` the gain's CI lower bound at which it
votes for that level (0: off).
"""

from __future__ import annotations

from privjax.checks import number, require
from privjax.errors import ConfigError
from privjax.scoring import scores

__all__ = ["KEYS", "check", "defaults", "entry", "merge"]

KEYS = ("type", "high", "medium")  # an entry's fields


def defaults() -> dict:
  """The default entries: none."""
  return {}


def entry(name: str, fields) -> dict:
  """`config.metrics.<name>` completed: type defaults to the name, thresholds to 0 (off)."""
  if not isinstance(fields, dict):
    raise ConfigError(f"config.metrics.{name} must be a group of settings, got {fields!r}")
  unknown = sorted(set(fields) - set(KEYS))
  if unknown:
    raise ConfigError(f"unknown config key 'metrics.{name}.{unknown[0]}'; known keys: {list(KEYS)}")
  return {
    "type": fields.get("type", name),
    "high": fields.get("high", 0.0),
    "medium": fields.get("medium", 0.0),
  }


def merge(current: dict, entries) -> dict:
  """`config.metrics` after a user's `entries`: they replace the current ones."""
  del current
  if not isinstance(entries, dict):
    raise ConfigError(f"config.metrics must be a group of metrics, got {entries!r}")
  return {name: entry(name, e) for name, e in entries.items()}


def check(group, *, image_shape=None) -> None:
  """Checks `config.metrics`; with `image_shape`, each metric traced on it
  (scores.check_metrics)."""
  for name in group:
    m = group[name]
    scores.METRICS.get(m.type, field=f"metrics.{name}.type")
    number(f"metrics.{name}.high", m.high, 0.0)
    number(f"metrics.{name}.medium", m.medium, 0.0)
    require(
      not (m.high and m.medium) or m.medium <= m.high,
      f"config.metrics.{name}.medium {m.medium} must not exceed its high {m.high}",
    )
  if image_shape is not None:
    scores.check_metrics(tuple((name, group[name].type) for name in group), image_shape)
