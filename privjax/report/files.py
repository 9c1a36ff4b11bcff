"""The audit report's files: report.json, report.html, per_image.csv and the pictures.

The report's numbers are computed by the stages (privjax/stages/summary.py assembles
them); this module only lays them out and writes them.

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

from privjax import levels
from privjax.report import page, plots, readings
from privjax.runtime.workdir import publish

__all__ = [
  "AttackResult",
  "Report",
  "grid_png",
  "per_image_csv",
  "strict_json",
  "summary_line",
  "warning_lines",
  "write",
]

REPORT_JSON = "report.json"
PER_IMAGE_CSV = "per_image.csv"
GRID_PNG = "reconstructions.png"
REPORT_HTML = "report.html"
STRENGTH_PNG = "attack_strength.png"
IDENTITY_PNG = "evaluator_scores.png"
SWEEP_JSON = "sweep.json"
SWEEP_PNG = "privacy_utility.png"


@dataclasses.dataclass(frozen=True)
class AttackResult:
  """One attacker's part of a Report: its reconstructions and scores.

  Attributes:
    reconstructions: [N, H, W, C] float32 in [0, 1], its reconstructions of the targets,
      in target order.
    per_image: dict of its per-target columns ([N] arrays, in target order): ssim, psnr,
      mse, baseline_ssim, image_reid_hit, reid_hit (with a model to re-embed with), each
      config.metrics entry and its baseline_<name>.
    summary: JSON-ready, its row of report.json's "attacks": type, seconds, the means, the
      gain's CI, re-id rates, the evaluator's judgement, its verdict, warnings and info.
  """

  reconstructions: np.ndarray
  per_image: dict
  summary: dict


@dataclasses.dataclass(frozen=True)
class Report:
  """What an audit found.

  Attributes:
    summary: JSON-ready dict of every metric, the verdict and its reasons, the
      config, versions, devices and timings (see `to_dict`).
    per_image: dict of per-target columns ([N] arrays), in input order.
    originals: [N, H, W, C] the target images.
    reconstructions: [N, H, W, C] the deciding attacker's reconstructions of the targets.
    attacks: name -> `AttackResult` of every attacker that ran (skipped ones are absent:
      why is in `summary["attacks"][name]["skipped"]`), the deciding one's among them.
  """

  summary: dict
  per_image: dict
  originals: np.ndarray
  reconstructions: np.ndarray
  attacks: dict = dataclasses.field(default_factory=dict)

  @property
  def risk_level(self) -> str:
    return self.summary["risk_level"]

  def to_dict(self) -> dict:
    """Every metric, `ssim_per_image` and the verdict; only JSON-serialisable values."""
    return dict(self.summary)


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
  if levels.reaches(level, gate):
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
