"""The defense sweep: what each feature-level defense buys in privacy and costs in utility.

For each entry of config.defense.sweep and each of its strengths (a point):

1. the defense is fitted on the undefended auxiliary features (privjax/defenses/transforms.py) and
   applied, with the point's own key, to the auxiliary and the target features;
2. adaptive: the attackers of config.defense.attacks are re-fitted on the DEFENDED
   auxiliary features (they know the defense and its parameters) and attack the
   defended targets;
3. non-adaptive, for contrast: the same attackers fitted once on the undefended
   auxiliary features attack the defended targets;
4. utility (privjax/defenses/utility.py) is measured on the defended features.

The point's verdict is the adaptive attacker's: one who knows the defense may re-fit on
defended features or keep what it fitted on its undefended ones (it computed those
itself), so it is the more severe of 2 and 3 (`deciding`, with `fitted_on`); both are
reported (`refitted_deciding`, `non_adaptive_deciding`). A lookup attacker, say, can do
better with an undefended gallery than with a noisy one. The undefended features get
the same attackers once, as the curve's reference.

Each point is a stage of its own: its result is stored (checksummed) in
`<workdir>/sweep/` under a key of everything it depends on (privjax/runtime/keys.py: the whole
round, every sweep setting, the defense's entry and code, the data), so a killed sweep
resumes without redoing finished points, a changed list of defenses reuses the points it
still holds, and a changed setting never restores a stale point. The attackers'
checkpoints and reconstructions are cached per point too.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Mapping
from typing import NamedTuple

import jax
import numpy as np
from absl import logging

from privjax.defenses import entries as sweep_entries
from privjax.defenses import transforms as defenses
from privjax.defenses import utility
from privjax.errors import ConfigError, DataError, ModelError
from privjax.levels import SEVERITY
from privjax.registry import import_object, one_line
from privjax.report import readings
from privjax.runtime import cache, keys
from privjax.runtime.loop import split_validation
from privjax.scoring import risk

__all__ = ["Defender", "Settings", "best_tradeoff", "run"]

CAVEAT = (
  "A defense judged against these attackers is not proven against all attackers: a "
  "stronger or better-informed attacker may recover more from the same defended features."
)


def _attackers(result) -> dict:
  """{name: summary, level and warnings, or the reason it was skipped} of a round's Result."""
  outcomes, scores, verdicts = result.outcomes, result.scores, result.verdicts
  rows = {}
  for o in outcomes:
    if o.skipped:
      rows[o.name] = {"skipped": o.skipped}
      continue
    rows[o.name] = {
      **scores[o.name].summary(),
      "risk_level": verdicts[o.name][0],
      "risk_reasons": verdicts[o.name][1],
      "warnings": list(o.warnings),
    }
  return rows


def _strongest(rows: dict) -> dict | None:
  """The most severe attacker's numbers (risk.most_severe's order), or None if none ran."""
  ran = {n: r for n, r in rows.items() if "skipped" not in r}
  if not ran:
    return None
  name = risk.most_severe(
    {n: (r["risk_level"], r["ssim_gain_ci"][0], r["image_reid_rate"]) for n, r in ran.items()}
  )
  r = ran[name]
  return {
    "attacker": name,
    "risk_level": r["risk_level"],
    "ssim_gain": r["ssim_gain"],
    "ssim_gain_ci": r["ssim_gain_ci"],
    "image_reid_rate": r["image_reid_rate"],
    **({"identity": r["identity"]} if "identity" in r else {}),
  }


def _judge(refitted: dict, clean_fitted: dict | None) -> dict:
  """A point's verdict: the strongest attacker that knows the defense.

  Such an attacker may re-fit on defended auxiliary features (`refitted`) or keep the
  attackers it fitted on its undefended ones (`clean_fitted`, what a non-adaptive
  attacker does): the point takes the more severe of the two, and reports both.
  `clean_fitted` is None when the defense changes the features' width: then no attacker
  fitted on undefended features can read them, and only the re-fitted ones judge.
  """
  a = _strongest(refitted)
  n = None if clean_fitted is None else _strongest(clean_fitted)
  if a is None or (clean_fitted is not None and n is None):
    raise ConfigError("config.defense.attacks: no sweep attacker ran on the defended features")
  ranked = {"refitted": (a["risk_level"], a["ssim_gain_ci"][0], a["image_reid_rate"])}
  if n is not None:
    ranked["non-adaptive"] = (n["risk_level"], n["ssim_gain_ci"][0], n["image_reid_rate"])
  order = risk.most_severe(ranked)
  deciding = dict(a if order == "refitted" else n, fitted_on=order)
  # As in the audit's own verdict: below high, an attacker's warning (too little data, a
  # decoder that did not converge) means the point's level may understate the leakage.
  warned = sorted(
    {
      f"{name}: {w}"
      for rows in (refitted, clean_fitted or {})
      for name, r in rows.items()
      for w in r.get("warnings", [])
    }
  )
  return {
    "risk_level": deciding["risk_level"],
    "understated": warned if deciding["risk_level"] != "high" else [],
    "deciding": deciding,
    "refitted_deciding": a,
    "non_adaptive_deciding": n,
    "refitted": refitted,
    "non_adaptive": clean_fitted if clean_fitted is not None else WIDER,
  }


# A point's non-adaptive contrast when the defense changes the features' width.
WIDER = {"skipped": "the defense changes the features' width: no undefended fit reads them"}


class Defender(NamedTuple):
  """The defender's own split, disjoint from the targets and the attacker's auxiliary
  set: what a learning defense trains on (never the other two)."""

  features: np.ndarray  # [M, D] the audited model's features of `images`
  images: np.ndarray  # [M, H, W, C] float32 in [0, 1]
  labels: np.ndarray  # [M] int identities or classes
  name: str  # where it came from, for the report: "config.data.model_train_split 'all[:50%]'"


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the sweep reads from the config. Every field but `entries` keys every point
  (each point is keyed by its own entry)."""

  NOT_NUMBERS = frozenset({"entries"})

  entries: dict  # config.defense.sweep: name -> {type, strengths, param}
  attackers: tuple  # the sweep's attackers (settings.sweep_attackers)
  utility: str  # config.defense.utility: "package.module:function" or ""
  seed: int
  batch_size: int  # config.eval_batch_size
  bootstrap_samples: int  # resamples of the utility's CI
  thresholds: dict  # config.risk's ssim_gain and image_reid levels, for the curve


def _point(
  round_, aux, defense, *, params, key, f_aux, f_tgt, clean, stage, measure, name, batch_size
) -> dict:
  """One sweep point: the defense applied (row keys from `key`), attacked both ways, utility."""
  common = {"mesh": round_.mesh, "batch_size": batch_size, "name": name}
  d_aux = defenses.apply(defense, f_aux, jax.random.fold_in(key, 0), params, **common)
  d_tgt = defenses.apply(defense, f_tgt, jax.random.fold_in(key, 1), params, **common)
  if d_aux.shape[1] != d_tgt.shape[1]:
    raise ModelError(
      f"defense {name} gave {d_aux.shape[1]}-d auxiliary but {d_tgt.shape[1]}-d target features"
    )
  same_width = d_tgt.shape[1] == f_tgt.shape[1]
  out = _judge(
    _attackers(round_.run(aux, d_aux, d_tgt, stage=stage)),
    _attackers(round_.run(aux, f_aux, d_tgt, stage="defense-", fitted=clean))
    if same_width
    else None,
  )
  out.update(strength=float(params[defense.param]), utility=measure(d_aux, d_tgt))
  return out


class _Store:
  """Sweep points stored (checksummed) in `<workdir>/sweep/`, keyed by what they depend on."""

  def __init__(self, workdir, key: str):
    self.workdir, self._key = workdir, key  # the key of what every point shares

  def key(self, *parts) -> str:
    return keys.of(self._key, *parts)

  def get(self, key, compute):
    """(the point, whether it was restored from the workdir)."""
    path = os.path.join(self.workdir, "sweep", f"point-{key[:32]}.npz") if self.workdir else None
    _, result, restored = cache.cached(path, lambda: ({}, compute()))
    return result, restored


def run(
  round_,
  aux,
  *,
  f_aux: np.ndarray,
  f_tgt: np.ndarray,
  aux_labels,
  target_labels,
  settings: Settings,
  data_key: str,
  audit: dict,
  deciding_models_defense: bool,
  defender: Defender | None = None,
) -> dict:
  """Runs config.defense.sweep; returns the JSON-ready sweep (sweep.json).

  Args:
    round_: the audit's `attack_round.Round` with only the sweep's attackers
      (`Round.with_attackers`): each point runs it on defended features.
    aux: [N_aux, H, W, C] the auxiliary images.
    f_aux, f_tgt: the undefended auxiliary and target features.
    aux_labels, target_labels: [N_aux] and [N] int labels (one encoding), or None:
      without them only a user's utility is measured.
    settings: the sweep's settings.
    data_key: a hash of everything the points depend on besides the settings (features,
      images, labels, the evaluator's calibration).
    audit: the undefended audit's {"risk_level", "deciding_attack"} (all its attackers).
    deciding_models_defense: whether the audit's deciding attacker can attack defended
      features (the whitebox attacker cannot: it is not among the sweep's attackers).
    defender: the defender's own split, which a learning defense trains on (each of its
      points is keyed by it too); None when the audit has none.
  """
  user_fn = import_object(settings.utility, field="defense.utility") if settings.utility else None
  # Every point depends on the whole round (attackers, scoring, thresholds, metrics, the
  # evaluator), every sweep setting, the utility's code and the data: keyed by all of them.
  store = _Store(round_.workdir, keys.of(round_, settings, keys.code(user_fn), data_key))
  split = split_validation(aux.shape[0], round_.val_fraction, round_.seed)
  clean = {}  # the attackers fitted on undefended features, shared by every point

  def measure(aux_f, tgt_f):
    return utility.measure(
      aux_f,
      aux_labels,
      tgt_f,
      target_labels,
      split=split,
      user_fn=user_fn,
      mesh=round_.mesh,
      samples=settings.bootstrap_samples,
      seed=settings.seed,
      batch_size=settings.batch_size,
    )

  undefended, _ = store.get(
    store.key("undefended"), lambda: _undefended(round_, aux, f_aux, f_tgt, clean, measure)
  )
  result = _defenses(round_, aux, f_aux, f_tgt, clean, store, measure, settings, defender)
  best, line = best_tradeoff(result, undefended)
  logging.info("defense sweep: %s", line)
  return {
    "attackers": list(settings.attackers),
    "audit": audit,
    "undefended": undefended,
    "defenses": result,
    "best_tradeoff": best,
    "best_tradeoff_line": line,
    "thresholds": dict(settings.thresholds),
    "warnings": _warnings(audit, undefended, settings.attackers, deciding_models_defense),
    "caveat": CAVEAT,
  }


def _undefended(round_, aux, f_aux, f_tgt, clean, measure) -> dict:
  """The sweep's reference point: its attackers and the utility on undefended features."""
  rows = _attackers(round_.run(aux, f_aux, f_tgt, stage="defense-", fitted=clean))
  return {
    "risk_level": _strongest(rows)["risk_level"],
    "deciding": _strongest(rows),
    "attackers": rows,
    "utility": measure(f_aux, f_tgt),
  }


def _defenses(round_, aux, f_aux, f_tgt, clean, store, measure, settings, defender) -> dict:
  """Every point of every defense: {name: {type, param, about, points}} (a learning
  defense's entry adds `trained_on` and `trained_against`, and each point its `training`)."""
  total = sum(len(e["strengths"]) for e in settings.entries.values())
  result = {}
  done = 0
  for name, entry in settings.entries.items():
    defense = defenses.get(entry["type"], entry["param"], field=f"defense.sweep.{name}.type")
    if defense.train is not None and defender is None:
      raise ConfigError(needs_defender(name))
    fitted = defenses.fit(defense, f_aux) if defense.train is None else {}
    own = {k: v for k, v in entry.items() if k != "strengths"}
    points = []
    for strength in entry["strengths"]:
      done += 1
      trains = () if defense.train is None else (keys.of(*defender),)
      key = store.key(own, float(strength), defense, *trains)
      t = time.perf_counter()
      common = dict(
        key=jax.random.fold_in(
          jax.random.key(settings.seed), keys.seed(entry["type"], entry["param"], float(strength))
        ),
        f_aux=f_aux,
        f_tgt=f_tgt,
        clean=clean,
        stage=f"defense-{key[:12]}-",
        measure=measure,
        name=name,
        batch_size=settings.batch_size,
      )
      if defense.train is None:
        compute = functools.partial(
          _point,
          round_,
          aux,
          defense,
          params=dict(fitted, **{defense.param: float(strength)}),
          **common,
        )
      else:
        compute = functools.partial(
          _trained_point, round_, aux, defense, entry, float(strength), defender, **common
        )
      point, restored = store.get(key, compute)
      points.append(point)
      _log_point(done, total, name, defense, strength, point, restored, t)
    result[name] = {
      "type": entry["type"],
      "param": defense.param,
      "about": defense.about,
      "points": points,
    }
    if defense.train is not None:
      result[name].update(
        trained_on=f"{defender.name}: {defender.images.shape[0]} images",
        trained_against=sorted({p["training"].get("trained_against", "") for p in points}),
      )
  return result


def needs_defender(name: str) -> str:
  """The one line refusing a learning defense in an audit without the defender's split."""
  return (
    f"config.defense.sweep.{name} learns: it trains on the defender's own labelled split, "
    "never the targets or the attacker's auxiliary set, and this audit has none: set "
    "config.data.model_train_split (the command line) or pass defender_images and "
    "defender_labels to privjax.assess"
  )


def _trained_point(round_, aux, defense, entry, strength, defender, *, key, **common) -> dict:
  """A learning defense's point: trained on the defender's split for this strength (its key
  from the point's), then audited as every point is (`_point`)."""
  settings = sweep_entries.learned_settings(entry, defense)
  try:
    params, info = defense.train(
      features=defender.features,
      images=defender.images,
      labels=defender.labels,
      strength=strength,
      key=jax.random.fold_in(key, 2),
      settings=settings,
    )
  except (ConfigError, DataError, ModelError):
    raise
  except Exception as e:  # a user's trainer: one line naming it
    raise ModelError(
      f"defense {common['name']} failed to train on the defender's split: {one_line(e)}"
    ) from e
  if not isinstance(params, Mapping) or not isinstance(info, Mapping):
    raise ModelError(
      f"defense {common['name']}'s train must return (params, info), two dicts, got "
      f"({type(params).__name__}, {type(info).__name__})"
    )
  try:
    info = json.loads(json.dumps(dict(info)))
  except (TypeError, ValueError) as e:
    raise ModelError(
      f"defense {common['name']}'s training info must be JSON-ready (numbers, strings, "
      f"lists, dicts): {one_line(e)}"
    ) from e
  point = _point(
    round_, aux, defense, params=dict(params, **{defense.param: strength}), key=key, **common
  )
  point["training"] = info
  return point


def _log_point(done, total, name, defense, strength, point, restored, t) -> None:
  head = readings.headline(point["utility"])
  logging.info(
    "defense %d/%d: %s %s=%g: %s risk (%s, fitted on %s features), %s, %s",
    done,
    total,
    name,
    defense.param,
    strength,
    point["risk_level"],
    point["deciding"]["attacker"],
    "defended" if point["deciding"]["fitted_on"] == "refitted" else "undefended",
    "no utility measured" if head is None else f"{head[0]} {head[1]:.3f}",
    "restored from the workdir" if restored else f"{time.perf_counter() - t:.1f}s",
  )


def _warnings(audit, undefended, names, deciding_models_defense) -> list:
  """Why the sweep's verdicts may understate the audit's attackers."""
  warnings = []
  if audit["deciding_attack"] not in names:
    how = (
      "every point may understate the leakage (add it to config.defense.attacks)"
      if deciding_models_defense
      else "it does not model a defense, so the points may understate what an attacker "
      "holding the model's weights recovers"
    )
    warnings.append(
      f"the audit's deciding attacker {audit['deciding_attack']!r} ({audit['risk_level']}) is "
      f"not among the sweep's attackers {list(names)}: {how}"
    )
  if SEVERITY[audit["risk_level"]] > SEVERITY[undefended["risk_level"]]:
    warnings.append(
      f"on the undefended features the sweep's attackers reach {undefended['risk_level']}, the "
      f"audit's reach {audit['risk_level']}: the sweep's verdicts understate by at least that"
    )
  return warnings


def best_tradeoff(result: dict, undefended: dict) -> tuple[dict | None, str]:
  """The point with the highest utility whose verdict is "low", and a line saying it.

  A point whose utility's CI does not clear its chance level keeps nothing of the features'
  use, so it is no trade-off: the line then says first that no defense tried keeps utility
  and reaches low, and `best["useful"]` is False.
  """
  lows = []
  for name, entry in result.items():
    for p in entry["points"]:
      head = readings.headline(p["utility"])
      if p["risk_level"] == "low":
        measured = p["utility"].get(head[0], {}) if head else {}
        chance = measured.get("chance")
        useful = chance is None or measured["ci"][0] > chance
        lows.append(((useful, -np.inf if head is None else head[1]), name, entry, p, head))
  if not lows:
    return None, "no defense point reached 'low' risk: try stronger settings"
  (useful, value), name, entry, p, head = max(lows, key=lambda x: x[0])
  best = {
    "defense": name,
    "type": entry["type"],
    "param": entry["param"],
    "strength": p["strength"],
    "utility": None if head is None else {"name": head[0], "value": head[1]},
    "useful": useful,
  }
  setting = f"{name} with {entry['param']}={p['strength']:g}"
  caveat = (
    f"; caveat: {len(p['understated'])} attacker warning(s) at that point say the true "
    "risk may be higher (sweep.json 'understated')"
    if p.get("understated")
    else ""
  )
  if head is None:
    return best, f"{setting} reaches 'low' risk (no utility measured to compare points){caveat}"
  ref = readings.headline(undefended["utility"])
  chance = p["utility"].get(head[0], {}).get("chance")
  kept = f"{head[0]} {value:.3f}" + ("" if ref is None else f" (undefended {ref[1]:.3f}")
  if chance is not None:
    kept += f"{',' if ref is not None else ' ('} chance {chance:.3f}"
  kept += ")" if ref is not None or chance is not None else ""
  if not useful:
    return best, (
      "no defense tried keeps utility and reaches low: every 'low' point leaves its "
      f"{head[0]} at chance (the most kept: {setting}, {kept}){caveat}"
    )
  return best, f"best trade-off: {setting}: 'low' risk keeping {kept}{caveat}"
