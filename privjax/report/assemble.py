"""The audit report: a JSON-ready summary, a page to read, a per-image CSV and pictures.

The files (report.json, report.html, per_image.csv, the PNGs) are published as one set
(`privjax.runtime.workdir.publish`): all are written to temporary names first, then renamed
into place with report.json last, and report.json is absent while the others are
switched. So a report.json always sits beside the page, CSV and pictures of its own
run, whenever a run is killed; a set a killed run had fully written is completed, and
its stray temporaries removed, when the workdir is next locked.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os

import numpy as np
from PIL import Image, ImageDraw

from privjax.report import page, plots, readings
from privjax.runtime.workdir import publish
from privjax.scoring import identity as identity_lib
from privjax.scoring import metrics
from privjax.scoring import risk as risk_lib
from privjax.scoring.scores import METRIC_BASELINE_SHIFTS, PSNR_CAP_DB

REPORT_JSON = "report.json"
PER_IMAGE_CSV = "per_image.csv"
GRID_PNG = "reconstructions.png"
REPORT_HTML = "report.html"
STRENGTH_PNG = "attack_strength.png"
IDENTITY_PNG = "evaluator_scores.png"
SWEEP_JSON = "sweep.json"
SWEEP_PNG = "privacy_utility.png"


@dataclasses.dataclass(frozen=True)
class Report:
  """What an audit found.

  Attributes:
    summary: JSON-ready dict of every metric, the verdict and its reasons, the
      config, versions, devices and timings (see `to_dict`).
    per_image: dict of per-target columns ([N] arrays), in input order.
    originals: [N, H, W, C] the target images.
    reconstructions: [N, H, W, C] the deciding attacker's reconstructions of the targets.
  """

  summary: dict
  per_image: dict
  originals: np.ndarray
  reconstructions: np.ndarray

  @property
  def risk_level(self) -> str:
    return self.summary["risk_level"]

  def to_dict(self) -> dict:
    """Every metric, `ssim_per_image` and the verdict; only JSON-serialisable values."""
    return dict(self.summary)


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
  """The Report of an audit: the deciding attacker's numbers at the top, every attacker's row.

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
    "attacks": _attack_rows(outcomes, scores, verdicts),
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
  reconstructions = {o.name: o for o in outcomes}[deciding].reconstructions
  return Report(summary, per_image, targets, reconstructions)


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
  out = {"image_label_match_rate": float(metrics.label_hits(best.best_image_match, labels).mean())}
  if best.best_model_match is not None:
    out["reid_label_match_rate"] = float(metrics.label_hits(best.best_model_match, labels).mean())
  out["label_chance"] = metrics.label_chance(labels)
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


def summary_line(report: Report, path: str, *, gate: str | None = None) -> str:
  """The one line the CLI prints: verdict, deciding attacker, its numbers, where the report
  is; with a release `gate` ("medium" / "high", --fail_on), whether it tripped."""
  s = report.summary
  reid = "n/a" if s["reid_rate"] is None else format(s["reid_rate"], ".3f")
  warn = f" | {len(s['warnings'])} warning(s) below" if s["warnings"] else ""
  row = readings.at_fmr(s.get("identity", {}), s["config"]["risk"]["identity_fmr"])
  ident = (
    f" | type-II SAR@FMR {row['fmr']:g} {row['type2_sar']['rate']:.3f}"
    if row is not None and "type2_sar" in row
    else ""
  )
  sweep = s.get("defense")
  if sweep:
    best = sweep["best_tradeoff"]
    points = sum(len(e["points"]) for e in sweep["defenses"].values())
    warn += (
      f" | defense sweep: {points} points, "
      + (
        "none reached low"
        if best is None
        else "none keeps utility and reaches low"
        if not best.get("useful", True)
        else f"best low: {best['defense']} {best['param']}={best['strength']:g}"
      )
      + " (sweep.json)"
    )
  return (
    f"privjax: {s['risk_level']} risk (decided by {s['deciding_attack']}) | SSIM {s['ssim']:.3f} "
    f"vs baseline {s['baseline_ssim']:.3f} (gain {s['ssim_gain']:.3f}, 95% CI "
    f"[{s['ssim_gain_ci'][0]:.3f}, {s['ssim_gain_ci'][1]:.3f}]), PSNR {s['psnr']:.1f} dB | image "
    f"re-id {s['image_reid_rate']:.3f}, model re-id {reid}, chance {s['reid_chance']:.4f}"
    f"{ident}{warn}{_gate(s['risk_level'], gate)} | report: {path}"
  )


def warning_lines(report: Report) -> list[str]:
  """The lines the CLI prints after the summary: each warning of the report once, one line
  each, so a CI log says what they were without the report files."""
  unique = dict.fromkeys(" ".join(str(w).split()) for w in report.summary["warnings"])
  return [f"privjax: warning: {w}" for w in unique]


def _gate(level: str, gate: str | None) -> str:
  if gate is None:
    return ""
  if risk_lib.reaches(level, gate):
    return f" | release gate TRIPPED: {level} risk reaches --fail_on={gate}"
  return f" | release gate passed: {level} risk is below --fail_on={gate}"


# A text cell starting with one of these is run as a formula by spreadsheet programs.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text_cell(text: str) -> str:
  """A text cell (a file name, a label) a spreadsheet shows as text, never runs: a leading
  formula character gets a leading apostrophe (OWASP's CSV-injection advice)."""
  return "'" + text if text.startswith(_FORMULA_START) else text


def per_image_csv(per_image: dict) -> bytes:
  """One row per target, in input order: where it came from and its label first."""
  first = [c for c in ("source", "label", "label_name") if c in per_image]
  columns = first + [c for c in per_image if c not in first]
  n = len(per_image[columns[0]])
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(["index"] + [_text_cell(c) for c in columns])  # a metric's name is user text
  for i in range(n):
    row = [i]
    for c in columns:
      v = per_image[c][i]
      if isinstance(v, (float, np.floating)):
        row.append(f"{v:.6g}")
      else:
        row.append(_text_cell(v) if isinstance(v, str) else int(v))
    w.writerow(row)
  return buf.getvalue().encode()


def _tile(img: np.ndarray, scale: int) -> Image.Image:
  x = np.clip(np.asarray(img) * 255.0 + 0.5, 0, 255).astype(np.uint8)
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  return Image.fromarray(x).resize((x.shape[1] * scale, x.shape[0] * scale), Image.NEAREST)


def grid_png(originals, reconstructions, ssim_values, *, per_row: int) -> bytes:
  """Best, median and worst targets by SSIM: originals above their reconstructions."""
  order = np.argsort(-np.asarray(ssim_values), kind="stable")
  n = len(order)
  k = min(per_row, n)
  mid = max(0, n // 2 - k // 2)
  groups = [("best", order[:k]), ("median", order[mid : mid + k]), ("worst", order[n - k :])]
  h, w = originals.shape[1:3]
  scale = max(1, 64 // max(h, w))
  th, tw = h * scale, w * scale
  label_w, pad, text_h = 110, 4, 14
  row_h = 2 * th + text_h + 3 * pad
  canvas = Image.new("RGB", (label_w + k * (tw + pad) + pad, 3 * row_h + pad), "white")
  draw = ImageDraw.Draw(canvas)
  for g, (name, idx) in enumerate(groups):
    y0 = pad + g * row_h
    draw.text((pad, y0 + th // 2), f"{name}\noriginal", fill="black")
    draw.text((pad, y0 + th + pad + th // 2), "reconstruction", fill="black")
    for j, i in enumerate(idx):
      x0 = label_w + j * (tw + pad)
      canvas.paste(_tile(originals[i], scale), (x0, y0))
      canvas.paste(_tile(reconstructions[i], scale), (x0, y0 + th + pad))
      draw.text((x0, y0 + 2 * th + 2 * pad), f"#{i} {ssim_values[i]:.2f}", fill="black")
  buf = io.BytesIO()
  canvas.save(buf, format="PNG")
  return buf.getvalue()


def strict_json(record) -> str:
  """`record` as strict JSON (RFC 8259): a non-finite float (an inf best loss before any
  evaluation, say) becomes null, never the NaN/Infinity tokens other parsers reject."""

  def finite(v):
    if isinstance(v, float) and not math.isfinite(v):
      return None
    if isinstance(v, dict):
      return {k: finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
      return [finite(x) for x in v]
    return v

  return json.dumps(finite(record), indent=2, allow_nan=False)


def write(report: Report, workdir: str, *, per_row: int) -> dict:
  """Publishes report.json, report.html, per_image.csv and the PNGs in `workdir` as one set.

  The other files are written to temporary names, then report.json; once all are
  complete, report.json is removed, the others are renamed into place and report.json
  is renamed last (see `privjax.runtime.workdir.publish`). A kill before then keeps
  the previous set; a kill during the renames leaves no report.json (the set is
  incomplete, never mixed) until the next run on the workdir completes it.

  Returns:
    {file name: its path}.

  Raises:
    WorkdirError: a file cannot be written (for example, the disk is full); the
      previous set is unchanged.
  """
  os.makedirs(workdir, exist_ok=True)
  s = report.summary
  images = {
    "grid": grid_png(
      report.originals, report.reconstructions, report.per_image["ssim"], per_row=per_row
    ),
    "ssim_histogram": plots.ssim_histogram(
      report.per_image["ssim"], report.per_image["baseline_ssim"]
    ),
  }
  if s.get("convergence") and s["convergence"]["history"]:
    images["curves"] = plots.training_curves(s["convergence"]["history"])
  if s["evaluator"]["measured"]:
    images["evaluator"] = plots.evaluator_scores(s)
  if s.get("attack_strength"):
    images["strength"] = plots.strength(s["attack_strength"])
  if s.get("defense"):
    images["defense"] = plots.privacy_utility(s["defense"])
  files = {
    PER_IMAGE_CSV: per_image_csv(report.per_image),
    GRID_PNG: images["grid"],
    REPORT_HTML: page.render(s, images).encode(),
  }
  for name, key in (
    (IDENTITY_PNG, "evaluator"),
    (STRENGTH_PNG, "strength"),
    (SWEEP_PNG, "defense"),
  ):
    if key in images:
      files[name] = images[key]
  if s.get("defense"):
    files[SWEEP_JSON] = strict_json(s["defense"]).encode()
  files[REPORT_JSON] = strict_json(report.to_dict()).encode()  # last: the set's index
  publish(workdir, files)
  return {name: os.path.join(workdir, name) for name in files}
