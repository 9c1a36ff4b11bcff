"""The defense sweep's group of the config, `config.defense`: how a user's sweep entries
merge into `config.defense.sweep`, the sweep's attackers, and the group's checks.

Each entry is `name: {type, strengths, param}`, plus, for a defense that learns (the
`learned` kind), the further settings it declares with their defaults. The attackers are
named here, never imported: what the sweep needs of them is handed in as `running`, {each
running attacker of config.attacks: whether it can attack defended features}.
"""

from __future__ import annotations

import ml_collections

from privjax.checks import require
from privjax.defenses import transforms as defenses
from privjax.errors import ConfigError
from privjax.registry import import_object

__all__ = ["ABOUT", "KEYS", "attackers", "check", "defaults", "entry", "learned_settings", "merge"]

KEYS = ("type", "strengths", "param")  # an entry's fields
# What each field of an entry means (--print_config shows it).
ABOUT = {
  "type": f"the defense: one of {defenses.builtin_names()} or 'package.module:function'",
  "strengths": "the values of its strength parameter to sweep",
  "param": "the keyword its strengths go to (the built-ins' own: sigma, bits, k)",
}


def defaults() -> dict:
  """The default entries: none (no sweep)."""
  return {}


def _declared(kind) -> defenses.Defense | None:
  """The registered defense `kind` names, or None (a bad type is check's to name)."""
  if not isinstance(kind, str) or not kind:
    return None
  try:
    return defenses.get(kind)
  except ConfigError:
    return None


def entry(name: str, fields) -> dict:
  """`config.defense.sweep.<name>` completed: type defaults to the name, param to the
  defense's own strength keyword (a user defense's: "strength"), and a learning defense's
  further settings to their declared defaults."""
  if not isinstance(fields, dict):
    raise ConfigError(f"config.defense.sweep.{name} must be a group of settings, got {fields!r}")
  kind = fields.get("type", name)
  declared = _declared(kind)
  extra = dict((declared.defaults if declared else None) or {})
  known = [*KEYS, *extra]
  unknown = sorted(set(fields) - set(known))
  if unknown:
    raise ConfigError(
      f"unknown config key 'defense.sweep.{name}.{unknown[0]}'; known keys: {known}"
    )
  param = fields.get("param") or ""
  if isinstance(kind, str) and kind in defenses.builtin_names():
    param = defenses.get(kind).param
  return {
    "type": kind,
    "strengths": fields.get("strengths", ()),
    "param": param or "strength",
    **{k: fields.get(k, v) for k, v in extra.items()},
  }


def learned_settings(e, defense: defenses.Defense) -> dict:
  """A learning defense's further settings from its entry `e` (a dict or ConfigDict)."""
  return {k: e[k] if k in e else v for k, v in (defense.defaults or {}).items()}


def merge(current: dict, entries) -> dict:
  """`config.defense.sweep` after a user's `entries`: they replace the current ones."""
  del current
  if not isinstance(entries, dict):
    raise ConfigError(f"config.defense.sweep must be a group of defenses, got {entries!r}")
  return {name: entry(name, e) for name, e in entries.items()}


def attackers(d: ml_collections.ConfigDict, running: dict) -> list[str]:
  """The sweep's attackers: config.defense.attacks, or when empty every running attacker
  that can attack defended features (not the whitebox type: it differentiates through the
  model, which a defended feature no longer has)."""
  if len(d.attacks):
    return list(d.attacks)
  return [name for name, models_defense in running.items() if models_defense]


def check(d: ml_collections.ConfigDict, running: dict, dim: int | None = None) -> None:
  """Checks config.defense (`dim`: the feature width once known, for the strengths' bounds)."""
  for name in d.sweep:
    e = d.sweep[name]
    require(
      isinstance(e.type, str) and e.type != "",
      f"config.defense.sweep.{name}.type must be a non-empty string, got {e.type!r}",
    )
    defense = defenses.get(e.type, e.param, field=f"defense.sweep.{name}.type")
    require(
      isinstance(e.strengths, (list, tuple)) and len(e.strengths) > 0,
      f"config.defense.sweep.{name}.strengths must be a non-empty list "
      f"({defense.about}), got {e.strengths!r}",
    )
    for i, s in enumerate(e.strengths):
      defenses.check_strength(name, defense, i, s, dim)
    if defense.check_settings is not None:
      defense.check_settings(name, learned_settings(e, defense))
    require(
      len(set(e.strengths)) == len(e.strengths),
      f"config.defense.sweep.{name}.strengths must not repeat a value, got {tuple(e.strengths)}",
    )
  require(
    isinstance(d.attacks, (list, tuple)),
    f"config.defense.attacks must be a list of names in config.attacks, got {d.attacks!r}",
  )
  require(
    not len(d.sweep) or attackers(d, running),
    "config.defense.attacks: no attacker to run at the sweep's points (the whitebox "
    "attacker does not model a defense); name one of config.attacks",
  )
  for name in d.attacks:
    require(
      name in running,
      f"config.defense.attacks: {name!r} is not a running attacker of config.attacks "
      f"{list(running)}",
    )
  require(isinstance(d.utility, str), f"config.defense.utility must be a string, got {d.utility!r}")
  if d.utility:
    import_object(d.utility, field="defense.utility")
