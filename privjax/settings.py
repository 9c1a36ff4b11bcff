"""What each stage and plug-in family reads of the config: the one module that reads the
config tree and hands each its own settings.

`FAMILIES` are the plug-in families' groups of the tree, each built, merged and checked
by its family's own rules (privjax/config.py calls them, knowing none by name);
The functions build each stage's settings
from a resolved config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import ml_collections

from privjax import attacks
from privjax.attacks import entries as attack_entries
from privjax.defenses import entries as sweep_entries
from privjax.defenses import sweep as sweep_lib
from privjax.errors import ConfigError
from privjax.scoring import entries as metric_entries
from privjax.scoring import scores
from privjax.stages import judge as judge_lib

__all__ = [
  "FAMILIES",
  "Family",
  "check_sweep",
  "entry_groups",
  "judge",
  "metric_thresholds",
  "moved_key",
  "running_attackers",
  "scoring",
  "set_entry",
  "sweep",
  "sweep_attackers",
]


@dataclasses.dataclass(frozen=True)
class Family:
  """A plug-in family's group of the config tree, as privjax/config.py builds, merges and
  checks it."""

  path: str  # the group's dotted place in the tree: "attacks", "defense.sweep"
  defaults: Callable[[], dict]  # () -> its default entries
  merge: Callable[[dict, object], dict]  # (its entries, a user's group) -> its entries
  check: Callable  # (config, feature_dim, image_shape) -> None; raises ConfigError
  # An earlier layout's keys: the overrides with them at their new place, and the new
  # dotted name of one (None: not moved).
  migrated: Callable[[dict], dict] = lambda overrides: overrides
  moved_key: Callable[[str], str | None] = lambda old: None


def running_attackers(c: ml_collections.ConfigDict) -> dict[str, bool]:
  """{each running attacker of config.attacks: whether it can attack defended features}."""
  return {
    n: attacks.capabilities(c.attacks[n].type).models_defense
    for n in c.attacks
    if c.attacks[n].type != attacks.OFF
  }


def sweep_attackers(c: ml_collections.ConfigDict) -> list[str]:
  """The attackers of the defense sweep: config.defense.attacks, or when empty every running
  attacker that can attack defended features."""
  return sweep_entries.attackers(c.defense, running_attackers(c))


def check_sweep(c: ml_collections.ConfigDict, dim: int | None = None) -> None:
  """Checks config.defense (`dim`: the feature width once known, for its bounds)."""
  sweep_entries.check(c.defense, running_attackers(c), dim)


# The plug-in families' groups by their dotted place in the tree: each built, merged and
# checked by its family's rules (privjax/config.py calls them, knowing none by name).
FAMILIES = {
  f.path: f
  for f in (
    Family(
      "attacks",
      attack_entries.defaults,
      attack_entries.merge,
      lambda c, dim, shape: attack_entries.check(c.attacks),
      attack_entries.migrated,
      attack_entries.moved_key,
    ),
    Family(
      "metrics",
      metric_entries.defaults,
      metric_entries.merge,
      lambda c, dim, shape: metric_entries.check(c.metrics, image_shape=shape),
    ),
    Family(
      "defense.sweep",
      sweep_entries.defaults,
      sweep_entries.merge,
      lambda c, dim, shape: check_sweep(c, dim),
    ),
  )
}


def scoring(c: ml_collections.ConfigDict) -> scores.Settings:
  """The scoring stage's settings (its ssim, reid, metrics groups, the bootstrap, the seed
  and the evaluation batch)."""
  return scores.Settings(
    filter_size=c.ssim.filter_size,
    filter_sigma=c.ssim.filter_sigma,
    batch_size=c.eval_batch_size,
    bootstrap_samples=c.bootstrap_samples,
    seed=c.seed,
    exact_max_targets=c.reid.exact_max_targets,
    shortlist=c.reid.shortlist,
    baseline_samples=c.reid.baseline_samples,
    metrics=tuple((name, c.metrics[name].type) for name in c.metrics),
  )


def metric_thresholds(c: ml_collections.ConfigDict) -> tuple:
  """(name, high, medium) of each metric of config.metrics: its votes in the verdict."""
  return tuple((name, c.metrics[name].high, c.metrics[name].medium) for name in c.metrics)


def judge(c: ml_collections.ConfigDict) -> judge_lib.Settings:
  """The evaluator stage's settings."""
  return judge_lib.Settings(
    tuple(c.identity.fmrs),
    c.eval_batch_size,
    c.bootstrap_samples,
    c.seed,
    c.purity_tolerance,
  )


def sweep(c: ml_collections.ConfigDict) -> sweep_lib.Settings:
  """The defense sweep's settings, its attackers among them (`sweep_attackers`)."""
  return sweep_lib.Settings(
    entries={n: c.defense.sweep[n].to_dict() for n in c.defense.sweep},
    attackers=tuple(sweep_attackers(c)),
    utility=c.defense.utility,
    seed=c.seed,
    batch_size=c.eval_batch_size,
    bootstrap_samples=c.bootstrap_samples,
    thresholds={
      k: c.risk[k]
      for k in ("medium_ssim_gain", "high_ssim_gain", "medium_image_reid", "high_image_reid")
    },
  )


def set_entry(config: ml_collections.ConfigDict, group: str, name: str, fields: dict) -> None:
  """Adds or changes entry `name` of a plug-in family's group (`group`: "attacks",
  "metrics", "defense.sweep") in `config` (unlocked) by the family's own rules: `fields`
  over the entry's current ones while its type stays or turns "off" (a new type starts
  afresh), then
  completed as the family completes an entry (an attacker with its type's declared
  defaults, a user's one registered or not). What the command line's
  `--config.attacks.mlp.type=mymod:mlp --config.attacks.mlp.hidden=256` does.

  Raises:
    ConfigError: one line, for a group the config lacks or a bad entry (an unknown key of
      its type, a type that does not import).
  """
  node = config
  for i, part in enumerate(group.split(".")):
    if part not in node:
      raise ConfigError(
        f"unknown config key '{'.'.join(group.split('.')[: i + 1])}'; known keys: {sorted(node)}"
      )
    node = node[part]
  current = node.get(name)
  if current is not None:
    kind = current.get("type", name)
    if fields.get("type", kind) in (kind, "off"):
      fields = {**current.to_dict(), **fields}
  entry = FAMILIES[group].merge({}, {name: fields})[name]
  node[name] = ml_collections.ConfigDict(entry)


def entry_groups() -> tuple[str, ...]:
  """The dotted names of the plug-in families' groups ("attacks", "metrics", ...)."""
  return tuple(FAMILIES)


def moved_key(old: str) -> str | None:
  """The new dotted name of an old config key ("train.num_steps"), or None if not moved."""
  return next((new for f in FAMILIES.values() if (new := f.moved_key(old))), None)
