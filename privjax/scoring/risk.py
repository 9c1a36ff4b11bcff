"""The verdict: a privacy-risk level from the audit's numbers and documented thresholds.

The verdict rests on model-independent measures: the SSIM gain over the no-information
baseline (its 95% CI lower bound, so noise never raises the level), image-space rank-1
re-identification and, when an independent evaluator is configured, type-II identity
leakage (its success rate at the false match rate risk.identity_fmr, see
privjax/scoring/identity.py). The type-I rate by the audited model itself is reported but never
decides: a decoder can reproduce a low-dimensional embedding without reproducing the image.

  high    gain CI low >= risk.high_ssim_gain, or image re-id >= risk.high_image_reid,
          or type-II SAR >= risk.high_identity_sar (each rate also >=
          risk.medium_reid_over_chance x its chance level), or a config.metrics entry's
          gain CI low >= its own high
  medium  the same with the medium thresholds
  low     otherwise

A metric of config.metrics votes like SSIM, by the lower end of the 95% CI of its gain
over its no-information baseline (its mean over mismatched pairs, privjax.scoring.scores), never
by its raw mean: a metric that accepts almost any face would otherwise vote high for
reconstructions that are other people's faces.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from privjax.checks import number, numbers, require
from privjax.errors import TrainingError
from privjax.levels import SEVERITY

__all__ = ["check", "most_severe", "verdict"]


class _Criterion(NamedTuple):
  """One measure the verdict weighs: what it is (with its value), its thresholds, its chance."""

  text: str
  value: float
  high: float
  medium: float
  chance: float | None  # None: a measure with no chance level to beat


def verdict(
  *,
  ssim_gain_ci_low: float,
  image_reid_rate: float,
  reid_chance: float,
  thresholds,
  identity=None,
  metrics=(),
):
  """Returns (level, reasons): level in {"low", "medium", "high"}, reasons a list of strings.

  `identity`, when an evaluator judged the reconstructions: (type-II SAR at
  risk.identity_fmr, its chance level: the larger of that FMR and the attacker's own
  impostor accept rate). `metrics`: (name, the 95% CI lower bound of its mean gain over
  its no-information baseline, high, medium) of the config.metrics (thresholds 0: that
  level off), higher meaning more leakage.
  """
  metrics = list(metrics)
  values = (ssim_gain_ci_low, image_reid_rate, reid_chance, *(identity or ()))
  values += tuple(m[1] for m in metrics)
  if not all(math.isfinite(v) for v in values):
    raise TrainingError(
      f"cannot judge: a non-finite score (SSIM gain CI low {ssim_gain_ci_low}, image re-id "
      f"{image_reid_rate}, chance {reid_chance}, identity {identity}, metric gain CI lows "
      f"{ {m[0]: m[1] for m in metrics} }); no verdict is given from NaN"
    )
  criteria = _criteria(ssim_gain_ci_low, image_reid_rate, reid_chance, thresholds, identity)
  criteria += [
    _Criterion(
      f"metric {name} gain over its baseline, 95% CI lower bound {value:.3f}",
      value,
      high or math.inf,
      medium or high,
      None,
    )
    for name, value, high, medium in metrics
    if high or medium
  ]
  return _level(criteria, thresholds.medium_reid_over_chance)


def _rate(text: str, value: float, chance: float) -> str:
  return f"{text} {value:.3f} ({value / chance:.1f}x chance {chance:.4f})"


def _criteria(ssim_gain_ci_low, image_reid_rate, reid_chance, t, identity) -> list[_Criterion]:
  """The SSIM gain, image re-identification and, given `identity`, type-II SAR criteria at
  the risk thresholds `t`."""
  criteria = [
    _Criterion(
      f"SSIM gain over baseline, 95% CI lower bound {ssim_gain_ci_low:.3f}",
      ssim_gain_ci_low,
      t.high_ssim_gain,
      t.medium_ssim_gain,
      None,
    ),
    _Criterion(
      _rate("image-space rank-1 re-identification", image_reid_rate, reid_chance),
      image_reid_rate,
      t.high_image_reid,
      t.medium_image_reid,
      reid_chance,
    ),
  ]
  if identity is not None:
    sar, chance = identity
    criteria.append(
      _Criterion(
        _rate(f"type-II identity SAR@FMR {t.identity_fmr:g} by the evaluator", sar, chance),
        sar,
        t.high_identity_sar,
        t.medium_identity_sar,
        chance,
      )
    )
  return criteria


def _level(criteria: list[_Criterion], over: float):
  """(level, reasons): the highest level any criterion meets (a rate also at least `over` x
  its chance), with the criteria that meet it; "low" with every criterion when none does."""

  def meets(c, threshold):
    return c.value >= threshold and (c.chance is None or c.value >= over * c.chance)

  def why(c, threshold, level, above=None):
    extra = "" if c.chance is None else f" and >= {over}x chance"
    tail = "" if above is None else f" (< high {above})"
    return f"{c.text} >= {level} threshold {threshold}{extra}{tail}"

  high = [why(c, c.high, "high") for c in criteria if meets(c, c.high)]
  if high:
    return "high", high
  medium = [why(c, c.medium, "medium", c.high) for c in criteria if meets(c, c.medium)]
  if medium:
    return "medium", medium
  return "low", [
    f"{c.text} below medium threshold {c.medium}"
    + ("" if c.chance is None else f" or {over}x chance")
    for c in criteria
  ]


def most_severe(results: dict) -> str:
  """The name of the most severe attacker: {name: (level, gain CI low, image re-id)}.

  A security audit errs toward the attacker: the highest level decides; among equals,
  the larger gain lower bound, then the larger image re-identification rate.
  """
  return max(results, key=lambda n: (SEVERITY[results[n][0]], results[n][1], results[n][2]))


def check(r, fmrs) -> None:
  """Raises ConfigError for a bad verdict threshold (`r`: config.risk) or an identity FMR
  (`fmrs`: config.identity.fmrs) the thresholds cannot use."""
  risk_rates = ("ssim_gain", "image_reid", "identity_sar")
  for name in (f"{level}_{r}" for level in ("high", "medium") for r in risk_rates):
    number(f"risk.{name}", r[name], 0.0, 1.0)
  number("risk.medium_reid_over_chance", r.medium_reid_over_chance, 1.0)
  require(
    r.medium_ssim_gain <= r.high_ssim_gain and r.medium_image_reid <= r.high_image_reid,
    "config.risk medium thresholds must not exceed the high ones, got "
    f"ssim_gain {r.medium_ssim_gain} > {r.high_ssim_gain} or image_reid "
    f"{r.medium_image_reid} > {r.high_image_reid}",
  )
  require(
    r.medium_identity_sar <= r.high_identity_sar,
    f"config.risk.medium_identity_sar {r.medium_identity_sar} must not exceed "
    f"high_identity_sar {r.high_identity_sar}",
  )
  numbers("identity.fmrs", fmrs, 0.0, 0.5)
  require(
    all(f > 0 for f in fmrs),
    f"config.identity.fmrs must be false match rates in (0, 0.5], got {fmrs!r}",
  )
  require(
    any(r.identity_fmr == f for f in fmrs),
    f"config.risk.identity_fmr must be one of config.identity.fmrs {tuple(fmrs)}, "
    f"got {r.identity_fmr!r}",
  )
