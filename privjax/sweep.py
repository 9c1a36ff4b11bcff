"""The defense sweep: what each feature-level defense buys in privacy and costs in utility.

For each entry of config.defense.sweep and each of its strengths (a point):

1. the defense is fitted on the undefended auxiliary features (privjax/defenses.py) and
   applied, with the point's own key, to the auxiliary and the target features;
2. adaptive: the attackers of config.defense.attacks are re-fitted on the DEFENDED
   auxiliary features (they know the defense and its parameters) and attack the
   defended targets;
3. non-adaptive, for contrast: the same attackers fitted once on the undefended
   auxiliary features attack the defended targets;
4. utility (privjax/utility.py) is measured on the defended features.

The point's verdict is the adaptive attacker's: one who knows the defense may re-fit on
defended features or keep what it fitted on its undefended ones (it computed those
itself), so it is the more severe of 2 and 3 (`deciding`, with `fitted_on`); both are
reported (`refitted_deciding`, `non_adaptive_deciding`). A lookup attacker, say, can do
better with an undefended gallery than with a noisy one. The undefended features get
the same attackers once, as the curve's reference.

Each point is a stage of its own: its result is stored (checksummed) in
`<workdir>/sweep/` under a key of everything it depends on, so a killed sweep resumes
without redoing finished points and a changed list of defenses reuses the points it
still holds. The attackers' checkpoints and reconstructions are cached per point too.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import time

import jax
import numpy as np
from absl import logging

from privjax import cache, defenses, risk, utility
from privjax import config as config_lib
from privjax.embedding import import_object
from privjax.errors import ConfigError, ModelError

CAVEAT = (
  "A defense judged against these attackers is not proven against all attackers: a "
  "stronger or better-informed attacker may recover more from the same defended features."
)
_SEVERITY = {"low": 0, "medium": 1, "high": 2}


def _code(fn) -> str:
  """A hash of a function's source (a defense's, a utility's), so that a point computed
  with other code is never restored; "" when there is none to read."""
  if fn is None:
    return ""
  try:
    text = inspect.getsource(fn)
  except (OSError, TypeError):
    text = getattr(fn, "__qualname__", repr(fn))
  return hashlib.sha256(text.encode()).hexdigest()


def _stable_int(*parts) -> int:
  digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
  return int(digest[:8], 16) & 0x7FFFFFFF


def _attackers(outcomes, scores, verdicts) -> dict:
  """{name: summary, level and warnings, or the reason it was skipped}."""
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


def _judge(refitted: dict, clean_fitted: dict) -> dict:
  """A point's verdict: the strongest attacker that knows the defense.

  Such an attacker may re-fit on defended auxiliary features (`refitted`) or keep the
  attackers it fitted on its undefended ones (`clean_fitted`, what a non-adaptive
  attacker does): the point takes the more severe of the two, and reports both.
  """
  a, n = _strongest(refitted), _strongest(clean_fitted)
  if a is None or n is None:
    raise ConfigError("config.defense.attacks: no sweep attacker ran on the defended features")
  order = risk.most_severe(
    {
      "refitted": (a["risk_level"], a["ssim_gain_ci"][0], a["image_reid_rate"]),
      "non-adaptive": (n["risk_level"], n["ssim_gain_ci"][0], n["image_reid_rate"]),
    }
  )
  deciding = dict(a if order == "refitted" else n, fitted_on=order)
  # As in the audit's own verdict: below high, an attacker's warning (too little data, a
  # decoder that did not converge) means the point's level may understate the leakage.
  warned = sorted(
    {
      f"{name}: {w}"
      for rows in (refitted, clean_fitted)
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
    "non_adaptive": clean_fitted,
  }


def _point(
  attack, defense, *, params, key, f_aux, f_tgt, clean, stage, measure, name, mesh, batch_size
) -> dict:
  """One sweep point: the defense applied (row keys from `key`), attacked both ways, utility."""
  common = {"mesh": mesh, "batch_size": batch_size, "name": name}
  d_aux = defenses.apply(defense, f_aux, jax.random.fold_in(key, 0), params, **common)
  d_tgt = defenses.apply(defense, f_tgt, jax.random.fold_in(key, 1), params, **common)
  if d_aux.shape[1] != d_tgt.shape[1]:
    raise ModelError(
      f"defense {name} gave {d_aux.shape[1]}-d auxiliary but {d_tgt.shape[1]}-d target features"
    )
  out = _judge(
    _attackers(*attack(d_aux, d_tgt, stage=stage)),
    _attackers(*attack(f_aux, d_tgt, stage="defense-", fitted=clean)),
  )
  out.update(strength=float(params[defense.param]), utility=measure(d_aux, d_tgt))
  return out


def run(
  attack,
  *,
  f_aux: np.ndarray,
  f_tgt: np.ndarray,
  aux_labels,
  target_labels,
  split,
  cfg,
  mesh,
  workdir: str | None,
  data_key: str,
  audit: dict,
) -> dict:
  """Runs config.defense.sweep; returns the JSON-ready sweep (sweep.json).

  Args:
    attack: `attack(f_aux, f_tgt, *, stage, fitted=None) -> (outcomes, scores, verdicts)`:
      the sweep's attackers (config.defense.attacks) fitted on `f_aux` against the
      targets' features `f_tgt`; `stage` keeps a point's checkpoints and caches apart;
      `fitted` a dict that keeps fitted attackers across calls (the non-adaptive ones).
    f_aux, f_tgt: the undefended auxiliary and target features.
    aux_labels, target_labels: [N_aux] and [N] int labels (one encoding), or None:
      without them only a user's utility is measured.
    split: (train, val) indices of the auxiliary set (the linear probe's penalty choice).
    cfg: the audit config.
    mesh: the data mesh.
    workdir: where the points are stored, or None.
    data_key: a hash of everything the points depend on besides the config (features,
      images, labels, the evaluator's calibration).
    audit: the undefended audit's {"risk_level", "deciding_attack"} (all its attackers).
  """
  d = cfg.defense
  names = config_lib.sweep_attackers(cfg)
  user_fn = import_object(d.utility, field="defense.utility") if d.utility else None
  settings = {
    k: cfg[k].to_dict() if hasattr(cfg[k], "to_dict") else cfg[k]
    for k in ("seed", "ssim", "reid", "bootstrap_samples", "risk", "identity", "train")
  }
  settings.update(
    decoder=cfg.decoder.to_dict(),
    attacks={n: cfg.attacks[n].to_dict() for n in names},
    utility=[d.utility, _code(user_fn)],
    eval_batch_size=cfg.eval_batch_size,
  )
  clean = {}  # the attackers fitted on undefended features, shared by every point

  def measure(aux_f, tgt_f):
    return utility.measure(
      aux_f, aux_labels, tgt_f, target_labels, split=split, user_fn=user_fn, mesh=mesh, cfg=cfg
    )

  def stored(key, compute):
    """(the point, whether it was restored from the workdir)."""
    path = os.path.join(workdir, "sweep", f"point-{key[:32]}.npz") if workdir else None
    found = cache.load(path) if path else None
    if found is not None and found[1] is not None:
      return found[1], True
    result = compute()
    if path:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      cache.save(path, {}, result)
    return result, False

  def point_key(*parts):
    blob = json.dumps([parts, settings, data_key], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()

  def reference():
    rows = _attackers(*attack(f_aux, f_tgt, stage="defense-", fitted=clean))
    return {
      "risk_level": _strongest(rows)["risk_level"],
      "deciding": _strongest(rows),
      "attackers": rows,
      "utility": measure(f_aux, f_tgt),
    }

  undefended, _ = stored(point_key("undefended"), reference)
  total = sum(len(d.sweep[n].strengths) for n in d.sweep)
  result = {}
  done = 0
  for name in d.sweep:
    entry = d.sweep[name]
    defense = defenses.get(entry.type, entry.param, field=f"defense.sweep.{name}.type")
    fitted = defenses.fit(defense, f_aux)
    points = []
    for strength in entry.strengths:
      done += 1
      key = point_key(entry.type, entry.param, float(strength), _code(defense.fn))
      t = time.perf_counter()

      point, restored = stored(
        key,
        functools.partial(
          _point,
          attack,
          defense,
          params=dict(fitted, **{defense.param: float(strength)}),
          key=jax.random.fold_in(
            jax.random.key(cfg.seed), _stable_int(entry.type, entry.param, float(strength))
          ),
          f_aux=f_aux,
          f_tgt=f_tgt,
          clean=clean,
          stage=f"defense-{key[:12]}-",
          measure=measure,
          name=name,
          mesh=mesh,
          batch_size=cfg.eval_batch_size,
        ),
      )
      points.append(point)
      head = utility.headline(point["utility"])
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
    result[name] = {
      "type": entry.type,
      "param": defense.param,
      "about": defense.about,
      "points": points,
    }
  best, line = best_tradeoff(result, undefended)
  logging.info("defense sweep: %s", line)
  warnings = []
  if audit["deciding_attack"] not in names:
    how = (
      "it does not model a defense, so the points may understate what an attacker holding "
      "the model's weights recovers"
      if cfg.attacks[audit["deciding_attack"]].type == "whitebox"
      else "every point may understate the leakage (add it to config.defense.attacks)"
    )
    warnings.append(
      f"the audit's deciding attacker {audit['deciding_attack']!r} ({audit['risk_level']}) is "
      f"not among the sweep's attackers {names}: {how}"
    )
  if _SEVERITY[audit["risk_level"]] > _SEVERITY[undefended["risk_level"]]:
    warnings.append(
      f"on the undefended features the sweep's attackers reach {undefended['risk_level']}, the "
      f"audit's reach {audit['risk_level']}: the sweep's verdicts understate by at least that"
    )
  return {
    "attackers": names,
    "audit": audit,
    "undefended": undefended,
    "defenses": result,
    "best_tradeoff": best,
    "best_tradeoff_line": line,
    "thresholds": {
      k: cfg.risk[k]
      for k in ("medium_ssim_gain", "high_ssim_gain", "medium_image_reid", "high_image_reid")
    },
    "warnings": warnings,
    "caveat": CAVEAT,
  }


def best_tradeoff(result: dict, undefended: dict) -> tuple[dict | None, str]:
  """The point with the highest utility whose verdict is "low", and a line saying it."""
  lows = []
  for name, entry in result.items():
    for p in entry["points"]:
      head = utility.headline(p["utility"])
      if p["risk_level"] == "low":
        lows.append((-np.inf if head is None else head[1], name, entry, p, head))
  if not lows:
    return None, "no defense point reached 'low' risk: try stronger settings"
  value, name, entry, p, head = max(lows, key=lambda x: x[0])
  best = {
    "defense": name,
    "type": entry["type"],
    "param": entry["param"],
    "strength": p["strength"],
    "utility": None if head is None else {"name": head[0], "value": head[1]},
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
  ref = utility.headline(undefended["utility"])
  measured = p["utility"].get(head[0], {})
  chance = measured.get("chance")
  line = f"best trade-off: {setting}: 'low' risk keeping {head[0]} {value:.3f}" + (
    "" if ref is None else f" (undefended {ref[1]:.3f}"
  )
  if chance is not None:
    line += f", chance {chance:.3f}"
  line += ")" if ref is not None else ""
  if chance is not None and measured["ci"][0] <= chance:
    line += "; that is no better than chance: no point tried keeps the features useful at low risk"
  return best, line + caveat
