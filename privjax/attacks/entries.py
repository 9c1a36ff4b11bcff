"""The attackers' group of the config, `config.attacks`: its default entries, how a user's
entries merge into it, its checks (each type's own, registered with it), and the keys of
an earlier layout that now live in it.

Each entry is `name: {type, settings}`; `type` is a registered name, a user's
"package.module:function" (or the function itself, which the config holds by that path),
or "off" to skip it. A user's attacker declared as a built-in is, with
`privjax.attacks.register("mlp", defaults=..., check=..., checkpoints=True)` in its own
module, gets its defaults, its checks and its capabilities when named by import path.
"""

from __future__ import annotations

import ml_collections
from absl import logging

from privjax.attacks import base
from privjax.attacks.base import OFF, default_on, with_defaults
from privjax.checks import require
from privjax.errors import ConfigError

__all__ = [
  "MOVED_GROUPS",
  "MOVED_KEYS",
  "RESERVED_NAMES",
  "check",
  "defaults",
  "merge",
  "migrated",
  "moved_key",
]

# Names of the builtin models' workdir stages, which an attacker's own would collide with.
RESERVED_NAMES = ("recognition", "evaluator")
# Keys an earlier layout had, and where they live now (the decoder's settings moved under
# its attacker entry): still read, with one warning line naming each new key.
MOVED_GROUPS = {"decoder": "attacks.decoder", "train": "attacks.decoder"}
MOVED_KEYS = {"train.val_fraction": "val_fraction"}


def defaults() -> dict:
  """The default entries: every attacker registered `default_on`, with its defaults."""
  return {name: with_defaults(name, {}) for name in default_on()}


def merge(current: dict, entries) -> dict:
  """`config.attacks` after a user's `entries`: naming an attacker changes its fields (a new
  type starts from that type's defaults), type "off" removes it, a new name adds one."""
  if not isinstance(entries, dict) or not entries:
    raise ConfigError(f"config.attacks must be a non-empty group of attackers, got {entries!r}")
  out = dict(current)
  for name, entry in entries.items():
    if not isinstance(entry, dict):
      raise ConfigError(f"config.attacks.{name} must be a group of settings, got {entry!r}")
    now = out.get(name)
    if now is not None and entry.get("type", now["type"]) == now["type"]:
      entry = {**now, **entry}
    out[name] = with_defaults(name, entry)
  return out


def check(group: ml_collections.ConfigDict) -> None:
  """Checks `config.attacks`: at least one running attacker, no reserved name, and each
  entry by its type's own checks (whitebox's init: another running attacker)."""
  require(
    isinstance(group, ml_collections.ConfigDict) and len(group) > 0,
    f"config.attacks must be a non-empty group of attackers, got {group!r}",
  )
  names = list(group)
  require(
    not set(RESERVED_NAMES) & set(names),
    "config.attacks: 'recognition' and 'evaluator' name the builtin models' workdir stages; "
    f"give the attacker another name, got {names}",
  )
  running = [n for n in names if group[n].type != OFF]
  for name in names:
    base.check(name, group[name], running)
  require(len(running) > 0, "config.attacks: every attacker is 'off'; at least one must run")


def moved_key(old: str) -> str | None:
  """The new dotted name of an old config key ("train.num_steps"), or None if not moved."""
  if old in MOVED_KEYS:
    return MOVED_KEYS[old]
  group, _, field = old.partition(".")
  return f"{MOVED_GROUPS[group]}.{field}" if group in MOVED_GROUPS and field else None


def migrated(overrides: dict) -> dict:
  """`overrides` with the old layout's keys moved to their new place (one warning line)."""
  moved, out = [], {k: v for k, v in overrides.items() if k not in MOVED_GROUPS}
  for group in MOVED_GROUPS:
    if not isinstance(overrides.get(group), dict):
      continue
    for field, value in overrides[group].items():
      new = moved_key(f"{group}.{field}")
      node = out
      *parents, leaf = new.split(".")
      for part in parents:
        node = node.setdefault(part, {})
      node.setdefault(leaf, value)  # the new key, where also given, wins
      moved.append(f"{group}.{field} -> {new}")
  if moved:
    logging.warning("deprecated config keys, read at their new place: %s", ", ".join(moved))
  return out
