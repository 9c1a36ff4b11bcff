"""The report stage: the audit's results assembled into one `Report` (the deciding
attacker's numbers at the top, every attacker's row, the evaluator, the warnings, the
provenance); privjax/report/ lays it out and writes it."""

from __future__ import annotations

import math

import numpy as np

from privjax.report import readings
from privjax.report.files import AttackResult, Report
from privjax.scoring import identity as identity_lib
from privjax.scoring import metrics
from privjax.scoring.scores import METRIC_BASELINE_SHIFTS, PSNR_CAP_DB

__all__ = ["build"]

_TYPE_I_REID = (
  "model re-id: reconstructions re-embedded with the audited model and ranked against the targets' "
  "features by cosine (both standardised on the auxiliary set); can overstate leakage (an "
  "attacker can reproduce a low-dimensional embedding without reproducing the image), so the "
  "verdict does not use it"
)
_NO_MODEL_REID = (
  "not measured: the audit ran on stored features with no model to re-embed the "
  "reconstructions with; image-space re-identification (image_reid_rate) still applies"
)
_IDENTITY_PROTOCOL = (
  "an independent evaluator embeds the original targets and every reconstruction; its "
  "thresholds are fixed on the originals alone (at each FMR, the cosine at most that "
  "fraction of impostor pairs of originals exceed; accept when above). type I: a "
  "reconstruction against its own original; type II: against the OTHER originals of its "
  "identity (targets whose identity has one image are excluded); SAR: the mean accepted "
  "fraction over targets, 95% bootstrap CI; rank-1: the nearest other original is of the "
  "target's identity; impostor_accept: the attacker's reconstructions accepted against "
  "other identities' originals (its chance level); genuine_accept_rate and rank1 under "
  "thresholds: the evaluator's own on two originals (the ceiling)"
)


def _no_evaluator(environment: dict) -> str:
  """Why identity leakage was not checked: the CLI's reason, or the API's missing argument."""
  why = (environment.get("metadata") or {}).get("evaluator_off") or (
    "no evaluator was given (assess(evaluator=...))"
  )
  return (
    "not checked: identity leakage as an independent recognition system would judge it "
    f"(type-II SAR@FMR): no evaluator ran because {why}"
  )


_METRIC_BASELINE = (
  "each config.metrics entry's metrics.<name>: mean, its no-information baseline (the "
  "metric's mean over mismatched pairs: each target's original against the same attacker's "
  f"reconstructions of other targets, {METRIC_BASELINE_SHIFTS} cyclic shifts of the targets "
  "drawn from the seed; per target in per_image.csv's baseline_<name>), the gain (mean minus "
  "baseline) and its 95% bootstrap CI; a metric with thresholds votes by that CI's lower "
  "bound, never by its mean"
)
_FEATURE_STANDARDISATION = (
  "every attacker learns from features standardised per dimension on the auxiliary set (zero "
  "mean, unit variance), so their units never decide"
)
_SEED_CONTROLS = (
  "every attacker's initialisation and training batch order, the held-out validation part of "
  "the auxiliary set, the random features, the bootstrap resamples (and, from the CLI, the "
  "builtin model's init and batch order); the role splits follow data.split_seed"
)


def build(
  *,
  outcomes,
  scores: dict,
  verdicts: dict,
  deciding: str,
  targets: np.ndarray,
  aux_count: int,
  labels,
  feature_dim: int,
  mean_image_ssim: np.ndarray,
  model_reid: bool,
  strength: list,
  config,
  environment: dict,
  per_target: dict | None = None,
  calibration=None,
  evaluator_info: dict | None = None,
  defense: dict | None = None,
  data_warnings: tuple = (),
) -> Report:
  """The Report of an audit: the deciding attacker's numbers at the top, every attacker's row,
  and every attacker's reconstructions and scores (`Report.attacks`).

  Args:
    outcomes: every configured attacker's `runner.Outcome`, in config order.
    scores: name -> `scoring.Scores` of the attackers that ran.
    verdicts: name -> (level, reasons) per attacker.
    deciding: the attacker whose verdict is the audit's (the most severe).
    targets: [N, H, W, C] the original targets.
    aux_count: the number of auxiliary images.
    labels: [N] target labels or None.
    per_target: per-target text columns for per_image.csv ("label_name", "source"), each
      [N] strings or None.
    feature_dim: the feature dimension.
    mean_image_ssim: [N] each target's SSIM against the mean auxiliary image.
    model_reid: whether model re-id was measured (a model to re-embed with).
    strength: per auxiliary fraction {aux_fraction, num_aux, attacks: name -> summary}
      (config.attack_strength; empty when off).
    config: the resolved audit config.
    environment: versions, devices, metadata and seconds, stored as they are.
    calibration: the evaluator's `identity.Calibration` on the originals, or None.
    evaluator_info: what the evaluator is (kind, architecture, accuracy), or None.
    defense: the defense sweep (privjax.defenses.sweep.run; sweep.json), or None when none ran.
    data_warnings: what the inputs' checks found (targets among the auxiliary images,
      extreme feature rows: privjax/stages/inputs.py, privjax/stages/screening.py), listed first.
  """
  best = scores[deciding]
  warnings = list(data_warnings)
  warnings += _warnings(outcomes, defense, calibration, config.risk)
  level, reasons = verdicts[deciding]
  n = targets.shape[0]
  rows = _attack_rows(outcomes, scores, verdicts)
  summary = {
    "risk_level": level,
    "risk_reasons": _reasons(
      deciding, level, reasons, warnings, calibration, _no_evaluator(environment)
    ),
    "deciding_attack": deciding,
    **best.summary(),  # reid_rate is None without a model to re-embed with
    "mean_image_ssim": float(mean_image_ssim.mean()),
    **_methods(best.exact, config.reid, model_reid),
    **({"metric_baseline": _METRIC_BASELINE} if best.metrics else {}),
    "reid_chance": 1.0 / n,
    "warnings": warnings,
    "attacks": rows,
    "evaluator": _evaluator(
      calibration, evaluator_info, best.type2_scores, _no_evaluator(environment)
    ),
    "attack_strength": strength,
    "defense": defense,
    "num_targets": int(n),
    "num_aux": int(aux_count),
    "image_shape": list(targets.shape[1:]),
    "feature_dim": feature_dim,
    "feature_standardisation": _FEATURE_STANDARDISATION,
    "ssim_definition": _ssim_definition(config.ssim),
    "psnr_cap_db": PSNR_CAP_DB,
    "convergence": _convergence(outcomes),
    **_provenance(config, environment),
    **_label_match(best, labels),
    "seconds": environment["seconds"],
    # the per-image list goes last, after every summary field
    "ssim_per_image": [float(v) for v in best.per_image["ssim"]],
  }
  per_image = _per_image(best, scores, deciding, mean_image_ssim, labels, per_target)
  attacks = {
    o.name: AttackResult(o.reconstructions, dict(scores[o.name].per_image), dict(rows[o.name]))
    for o in outcomes
    if o.name in scores
  }
  return Report(summary, per_image, targets, attacks[deciding].reconstructions, attacks)


def _attack_rows(outcomes, scores: dict, verdicts: dict) -> dict:
  """name -> every attacker's row: its type and seconds, and why it was skipped or its
  numbers, verdict, warnings and info."""
  rows = {}
  for o in outcomes:
    row = {"type": o.type, "seconds": o.seconds, "cached": o.cached}
    if o.skipped:
      row["skipped"] = o.skipped
    else:
      row.update(scores[o.name].summary())
      row["risk_level"], row["risk_reasons"] = verdicts[o.name]
      row["warnings"] = list(o.warnings)
      row["info"] = o.info
    rows[o.name] = row
  return rows


def _warnings(outcomes, defense: dict | None, calibration, risk) -> list:
  """The attackers', the defense sweep's and the evaluator's warnings, each once, naming its
  source: a warning every attacker gives (too few auxiliary images) is "all attackers: ..."."""
  by_text = {}
  for o in outcomes:
    for w in o.warnings:
      by_text.setdefault(w, []).append(o.name)
  ran = [o.name for o in outcomes if not o.skipped]
  warnings = [
    f"{'all attackers' if len(ran) > 1 and names == ran else ', '.join(names)}: {w}"
    for w, names in by_text.items()
  ]
  warnings += [f"defense sweep: {w}" for w in (defense or {}).get("warnings", [])]
  if calibration is not None:
    warnings += _evaluator_warnings(calibration.summary, risk)
  return warnings


def _evaluator_warnings(calibration: dict, risk) -> list:
  """What limits the evaluator's judgement: an FMR its impostor pairs cannot resolve, and a
  genuine accept rate too low to tell these identities apart (`risk`: config.risk)."""
  m = calibration["impostor_pairs"]
  warnings = [
    f"evaluator: FMR {t['fmr']:g} needs at least {math.ceil(1 / t['fmr'])} impostor pairs, "
    f"the targets give {m}: its threshold is the highest impostor score, stricter than "
    "asked, so the SAR there understates the attacker's"
    for t in calibration["thresholds"]
    if not t["resolvable"]
  ]
  own = readings.at_fmr(calibration, risk.identity_fmr)
  gar = own.get("genuine_accept_rate") if own else None
  if gar is not None and gar["rate"] < risk.medium_reid_over_chance * own["fmr"]:
    warnings.append(
      f"evaluator: it accepts only {gar['rate']:.3f} of genuine pairs of originals at FMR "
      f"{own['fmr']:g} (< {risk.medium_reid_over_chance:g}x the FMR): it barely tells "
      "these identities apart, so a low type-II SAR shows nothing about identity leakage"
    )
  return warnings


def _reasons(
  deciding: str, level: str, reasons: list, warnings: list, calibration, no_evaluator: str
) -> list:
  """The deciding attacker's reasons for `level`, then the caveats: under-powered attackers
  and what the evaluator could not check."""
  reasons = [f"{deciding} attacker: {r}" for r in reasons]
  if level != "high" and warnings:
    reasons.append(
      "caveat: some attackers may be under-powered (see warnings); the true risk may be higher"
    )
  if calibration is None:
    reasons.append(no_evaluator)
  elif not calibration.summary["type2_targets"]:
    reasons.append(
      "not checked: type-II identity leakage (no identity has two target images); type I "
      "is reported"
    )
  return reasons


def _evaluator(calibration, evaluator_info: dict | None, type2_scores, no_evaluator: str) -> dict:
  """The evaluator section: what it is, its protocol, calibration and score histograms (with
  the deciding attacker's `type2_scores`); why it is absent when none ran."""
  if calibration is None:
    return {"measured": False, "why": no_evaluator}
  return {
    "measured": True,
    "model": evaluator_info or {},
    "protocol": _IDENTITY_PROTOCOL,
    **calibration.summary,
    "histograms": identity_lib.histograms(calibration, type2_scores),
  }


def _methods(exact: bool, reid, model_reid: bool) -> dict:
  """How the baseline and each re-identification rate were measured: `exact` whether every
  pair was scored, `reid` config.reid, `model_reid` whether a model re-embedded."""
  return {
    "baseline": "mismatched pairs: each target's SSIM against the same attacker's "
    "reconstructions of all other targets' features (what it scores with no information about "
    "the target)"
    + (
      ""
      if exact
      else f"; estimated from {reid.baseline_samples} random mismatched reconstructions per target"
    ),
    "image_reid_method": "exact: SSIM of every (reconstruction, original) pair"
    if exact
    else f"shortlist: the {reid.shortlist} originals nearest in pixel distance to each "
    "reconstruction, re-ranked by exact SSIM (N > reid.exact_max_targets); a competitor "
    "outside the shortlist can make this overstate the rate",
    "image_reid": "rank-1: the reconstruction's SSIM with its own original is strictly higher "
    "than with every other target (ties count as misses); independent of the audited model",
    "reid": _TYPE_I_REID if model_reid else _NO_MODEL_REID,
  }


def _ssim_definition(ssim) -> dict:
  """What SSIM means here, with config.ssim's window."""
  return {
    "implementation": "dm_pix.ssim (Gaussian window, valid region, K1=0.01, K2=0.03, "
    "data range 1, mean over valid positions and channels); equals skimage "
    "structural_similarity(gaussian_weights=True, use_sample_covariance=False)",
    "filter_size": int(ssim.filter_size),
    "filter_sigma": float(ssim.filter_sigma),
  }


def _convergence(outcomes) -> dict | None:
  """The training record of the first attacker that ran and trained a model, or None."""
  return next(
    (o.info["convergence"] for o in outcomes if not o.skipped and "convergence" in o.info), None
  )


def _provenance(config, environment: dict) -> dict:
  """The config (the CLI's data, model and evaluator sections, kept in the metadata, joined
  to the audit's), the seed and what it controls, versions, devices and other metadata."""
  meta = environment["metadata"]
  sections = {
    k: meta[f"{k}_config"] for k in ("data", "model", "evaluator") if f"{k}_config" in meta
  }
  return {
    "config": {**config.to_dict(), **sections},
    "seed": config.seed,
    "seed_controls": _SEED_CONTROLS,
    "versions": environment["versions"],
    "devices": environment["devices"],
    "metadata": {k: v for k, v in meta.items() if not k.endswith("_config")},
  }


def _label_match(best, labels) -> dict:
  """How often the deciding attacker's best image (and model) match has the target's label,
  and chance; {} without labels."""
  if labels is None:
    return {}

  def rate(best_match) -> float:
    return float(np.mean(np.asarray(metrics.label_hits(best_match, labels))))

  out = {"image_label_match_rate": rate(best.best_image_match)}
  if best.best_model_match is not None:
    out["reid_label_match_rate"] = rate(best.best_model_match)
  out["label_chance"] = metrics.host_float(metrics.label_chance(labels))
  return out


def _per_image(best, scores: dict, deciding: str, mean_image_ssim, labels, per_target) -> dict:
  """per_image.csv's columns: the deciding attacker's (each config.metrics entry with its
  baseline_<name>), the mean image's SSIM, the other attackers' SSIM, the labels and the
  per-target text columns."""
  per_image = dict(best.per_image)
  per_image["mean_image_ssim"] = mean_image_ssim.astype(np.float64)
  for name, sc in scores.items():
    if name != deciding:
      per_image[f"ssim_{name}"] = sc.per_image["ssim"]
  if labels is not None:
    per_image["label"] = labels.astype(np.int64)
  for column, values in (per_target or {}).items():
    if values is not None:
      per_image[column] = np.asarray([str(v) for v in values], dtype=object)
  return per_image
