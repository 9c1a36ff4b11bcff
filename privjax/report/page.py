"""report.html: the audit as one self-contained page a person reads top to bottom.

Everything is inline (PNG plots as data: URIs, one <style> block): no network, no
scripts, no external fonts; the resolved config sits in a <details> element, which
opens without JavaScript. The page is built from the report's JSON-ready summary and
the plots' PNG bytes only.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shlex

from privjax.report import readings

__all__ = ["render"]

_STYLE = """
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  max-width: 1100px; margin: 0 auto; padding: 1.5em; color: #1d1d1f; }
h1 { font-size: 1.7em; margin: 0.2em 0; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.verdict { padding: 1em 1.3em; border-radius: 8px; border-left: 8px solid; }
.high { background: #fdecea; border-color: #c62828; } .medium { background: #fff4e5;
  border-color: #ef6c00; } .low { background: #e8f5e9; border-color: #2e7d32; }
.level { text-transform: uppercase; font-weight: 700; }
table { border-collapse: collapse; font-size: 0.9em; }
.scroll { overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.5em; text-align: right; }
th { font-weight: 600; vertical-align: bottom; }
th:first-child, td:first-child { text-align: left; }
td.text { text-align: left; min-width: 12em; }
.ci { white-space: nowrap; color: #555; font-size: 0.9em; }
code { overflow-wrap: anywhere; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; font-size: 0.92em; }
"""

_PLAIN = {
  "high": "An attacker holding {aux} images like yours can recover recognisable images of your "
  "targets from their features.",
  "medium": "An attacker holding {aux} images like yours can recover part of what your targets "
  "look like from their features.",
  "low": "The attackers tried here, holding {aux} images like yours, did not recover enough of "
  "your targets from their features to reach medium risk; a stronger attacker may recover more.",
}
_NEXT = {
  "high": "Treat these features as revealing the images: do not release or store them where an "
  "attacker could read them, or transform them before release (noise, quantisation, keeping "
  "fewer dimensions) and re-run this audit on the transformed features (config.model."
  "kind='function', or stored features) to see what the change buys and what it costs.",
  "medium": "Some of the images leak. Check the best reconstructions below; transform the "
  "features before release (noise, quantisation, keeping fewer dimensions) and re-run this "
  "audit on the transformed features to see what the change buys.",
  "low": "Keep auditing: a stronger attacker (more auxiliary images, the whitebox attacker on a "
  "differentiable model, more training) may recover more. The attacker-strength curve below, "
  "when present, shows whether leakage still grows with the attacker's data.",
}


def _e(value) -> str:
  return html.escape(str(value))


def _num(value, digits=3) -> str:
  return "n/a" if value is None else f"{value:.{digits}f}"


def _short(value) -> str:
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def _ci(pair) -> str:
  return f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def _cell_ci(value: float, pair) -> str:
  """A table cell's number and its 95% CI (HTML): the cell may wrap before the CI, never
  inside it, so a wide table fits the page instead of scrolling sideways."""
  return f'{value:.3f} <span class="ci">{_ci(pair)}</span>'


def _metric(entry) -> str:
  """A config.metrics entry of a report's row: its mean against its no-information baseline,
  then its gain with the 95% CI (a bare number: an older report's mean alone)."""
  if not isinstance(entry, dict):
    return _num(entry)
  return f"{entry['mean']:.3f} vs {entry['baseline']:.3f}, gain " + _cell_ci(
    entry["gain"], entry["gain_ci"]
  )


def _img(png: bytes, alt: str) -> str:
  data = base64.b64encode(png).decode("ascii")
  return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _table(header, rows, *, text_columns=()) -> str:
  head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
  body = "".join(
    "<tr>"
    + "".join(
      f'<td class="text">{c}</td>' if i in text_columns else f"<td>{c}</td>"
      for i, c in enumerate(row)
    )
    + "</tr>"
    for row in rows
  )
  return f'<div class="scroll"><table>{head}{body}</table></div>'


def _type2(row: dict, fmr: float):
  found = readings.at_fmr(row.get("identity", {}), fmr)
  return found["type2_sar"] if found is not None and "type2_sar" in found else None


# The README's form of the command: run from the repository root with the .venv `make`
# made. The report records the command as `privjax ...`, which runs only in an active venv.
_PROGRAM = ".venv/bin/privjax"
_SWEEP_CONFIG = "defense_sweep.py"  # configs/defense_sweep.py: the default audit and a sweep
_SWEEP_CUTS = 16  # the most principal directions configs/defense_sweep.py keeps
_SWEEP_SETTINGS = "the c.defense.sweep and c.defense.attacks settings of configs/defense_sweep.py"


def _next(s: dict) -> str:
  """What to try next (HTML): the advice for the level and, from the command line, the
  command that does it as the README runs commands (this audit's command, extended; its
  workdir's stages are reused)."""
  sweep = s.get("defense")
  if sweep:
    return _e(f"{_tradeoff(sweep)} See Defenses below for every point tried.")
  command = (s.get("metadata") or {}).get("command")
  if s["risk_level"] != "low":
    text = _NEXT[s["risk_level"]] + " A defense sweep measures what noise, quantisation and "
    text += "dimension cuts buy, re-using this audit's workdir"
    if not command:  # from Python: the same fields, in the config given to assess
      return _e(
        f"{text}: set config.defense.sweep and config.defense.attacks as "
        "configs/defense_sweep.py does, in the config given to privjax.assess."
      )
    return _sweep_step(text, shlex.split(command), s["feature_dim"])
  if s.get("attack_strength"):
    return _e(_NEXT["low"])
  text = _NEXT["low"] + " Measure that curve on this audit's workdir"
  flag = "--config.attack_strength.aux_fractions=(0.25,0.5,1.0)"
  if not command:
    return _e(f"{text}: set attack_strength.aux_fractions in the config given to privjax.assess.")
  return f"{_e(text)}:{_code(shlex.split(command) + [flag])}"


def _code(args: list) -> str:
  """A command line as the README runs it (HTML), with a note where its program changed."""
  note = ""
  if args and args[0] == "privjax":
    args = [_PROGRAM, *args[1:]]
    note = (
      '<br><span class="note">From the repository root, as the README runs commands; with '
      "the virtual environment active, <code>privjax</code> alone.</span>"
    )
  return f"<br><code>{_e(shlex.join(args))}</code>{note}"


def _config_arg(args: list) -> int | None:
  """The index in `args` of the --config flag's value, or None."""
  for i, a in enumerate(args):
    if a.startswith("--config="):
      return i
    if a == "--config" and i + 1 < len(args):
      return i + 1
  return None


def _with_config(args: list, i: int, path: str) -> list:
  args = list(args)
  args[i] = f"--config={path}" if args[i].startswith("--config=") else path
  return args


def _sweep_step(text: str, args: list, feature_dim: int) -> str:
  """The defense sweep as a step (HTML): configs/defense_sweep.py in place of
  configs/default.py, or for another config file a copy of it with that file's sweep
  settings; never the sweep inlined as flags."""
  fit = []  # configs/defense_sweep.py's dimension cuts, where the features are narrower
  if feature_dim < _SWEEP_CUTS:
    cuts = sorted({d for d in (feature_dim // 4, 2, 1) if 1 <= d < feature_dim} or {1})
    fit = [f"--config.defense.sweep.pca_truncate.strengths={tuple(reversed(cuts))}"]
  i = _config_arg(args)
  if i is None:
    return _e(f"{text}: add {_SWEEP_SETTINGS} to your config file.")
  config = args[i].removeprefix("--config=")
  folder, name = os.path.split(config)
  if name == "default.py":  # configs/defense_sweep.py is the default audit and the sweep
    step = f"{text}: configs/{_SWEEP_CONFIG} is this audit followed by the sweep."
    return _e(step) + _code(_with_config(args, i, os.path.join(folder, _SWEEP_CONFIG)) + fit)
  copy = os.path.join(folder, os.path.splitext(name)[0] + "_sweep.py")
  step = (
    f"{text}: copy {config} to {copy}, add {_SWEEP_SETTINGS} before its return, then run "
    "the copy on this workdir:"
  )
  return _e(step) + _code(_with_config(args, i, copy) + fit)


# What a builtin utility measures, in words (privjax/defenses/utility.py; a user's keeps its name).
_UTILITY_WORDS = {"knn_rank1": "k-NN identification", "linear_probe": "linear-probe classification"}


def _utility_name(name: str) -> str:
  return _UTILITY_WORDS.get(name, name)


def _kept(utility: dict, undefended: dict) -> tuple[str, str] | None:
  """(what, how much) of the headline utility a point keeps, in words: a rate in percent
  beside the undefended features' and guessing; None when nothing was measured."""
  head = readings.headline(utility)
  if head is None:
    return None
  name, value = head
  measured, ref = utility.get(name), undefended.get(name)
  if isinstance(measured, dict):  # a builtin rate, with its chance level
    ref_rate = ref["rate"] if isinstance(ref, dict) else None
    amount = f"{100 * value:.0f}%" + (
      f" (undefended {100 * ref_rate:.0f}%; guessing {100 * measured['chance']:.0f}%)"
      if ref_rate is not None
      else f" (guessing {100 * measured['chance']:.0f}%)"
    )
    return _utility_name(name), amount
  ref_value = (undefended.get("user") or {}).get(name)
  return name, f"{value:.3g}" + ("" if ref_value is None else f" (undefended {ref_value:.3g})")


def _tradeoff(sweep: dict) -> str:
  """The sweep's best trade-off in plain words (sweep.json's best_tradeoff)."""
  best = sweep.get("best_tradeoff")
  if best is None:
    return "No defense tried brings the risk down to low: try stronger settings."
  entry = sweep["defenses"][best["defense"]]
  point = next((p for p in entry["points"] if p["strength"] == best["strength"]), {})
  about = entry.get("about", "").split(": ", 1)[-1]
  setting = f"{best['defense']} at {best['param']}={best['strength']:g}" + (
    f" ({about})" if about else ""
  )
  caveat = (
    f" Caveat: {len(point['understated'])} attacker warning(s) at that point say the true "
    "risk may be higher (sweep.json, 'understated')."
    if point.get("understated")
    else ""
  )
  kept = _kept(point.get("utility", {}), sweep["undefended"]["utility"])
  if kept is None:
    return f"{setting} brings the risk down to low (no utility was measured).{caveat}"
  what, amount = kept
  if not best.get("useful", True):
    return (
      "No defense tried brings the risk down to low and keeps the features useful: at every "
      f"low-risk point {what} is no better than guessing; the most kept is {amount}, by "
      f"{setting}.{caveat}"
    )
  return (
    f"Best trade-off: {setting} brings the risk down to low and keeps {what} at {amount}.{caveat}"
  )


def _defenses(s: dict, images: dict) -> str:
  sweep = s.get("defense")
  if not sweep:
    return ""
  ref = sweep["undefended"]
  head = readings.headline(ref["utility"])
  rows = []

  def row(point, p):
    u = readings.headline(p["utility"])
    d = p["deciding"]
    fitted = {"refitted": "defended", "non-adaptive": "undefended"}.get(d.get("fitted_on"), "")
    return [
      _e(point),
      _e(p["risk_level"]),
      _e(f"{d['attacker']} ({fitted})" if fitted else d["attacker"]),
      _cell_ci(d["ssim_gain"], d["ssim_gain_ci"]),
      _num(d["image_reid_rate"]),
      "n/a" if u is None else _num(u[1]),
    ]

  rows.append(row("undefended", ref))
  for name, entry in sweep["defenses"].items():
    for p in entry["points"]:
      rows.append(row(f"{name} {entry['param']}={p['strength']:g}", p))
  table = _table(
    [
      "defense and strength",
      "risk",
      "deciding attacker (fitted on)",
      "SSIM gain (95% CI)",
      "image re-id",
      "utility" if head is None else _utility_name(head[0]),
    ],
    rows,
    text_columns=(0, 1, 2),
  )
  notes = "".join(f"<li>{_e(w)}</li>" for w in sweep["warnings"])
  return (
    f"<h2>Defenses</h2><p><b>{_e(_tradeoff(sweep))}</b></p>"
    '<p class="note">At each point the attackers '
    f"({_e(', '.join(sweep['attackers']))}) know the defense: they re-fit on the defended "
    "auxiliary features or keep what they fitted on undefended ones, whichever leaks more "
    "(sweep.json has both). Utility is measured on the same defended features"
    + (
      ""
      if head is None or not isinstance(ref["utility"].get(head[0]), dict)
      else f" ({_e(_utility_name(head[0]))}; guessing scores "
      f"{_num(ref['utility'][head[0]]['chance'])})"
    )
    + f". {_e(sweep['caveat'])}</p>"
    + _learned(sweep)
    + table
    + (f"<ul>{notes}</ul>" if notes else "")
    + _img(images["defense"], "privacy against utility for each defense")
  )


def _learned(sweep: dict) -> str:
  """What each learned defense was trained on and against, and what audited it (HTML)."""
  lines = []
  for name, entry in sweep["defenses"].items():
    if "trained_against" not in entry:
      continue
    lines.append(
      f"<li><b>{_e(name)}</b> was trained on {_e(entry['trained_on'])} against "
      f"{_e(', '.join(entry['trained_against']))}; each of its points was then audited like "
      f"every defense, by attackers re-fitted from scratch ({_e(', '.join(sweep['attackers']))})"
      ": beating the attacker it trained against proves nothing about the others.</li>"
    )
  return f"<ul>{''.join(lines)}</ul>" if lines else ""


def _first_screen(s: dict) -> str:
  level = s["risk_level"]
  fmr = s["config"]["risk"]["identity_fmr"]
  numbers = [
    f"SSIM of the reconstructions with their originals <b>{s['ssim']:.3f}</b>, against "
    f"{s['baseline_ssim']:.3f} with no information about the target: a gain of "
    f"<b>{s['ssim_gain']:.3f}</b>, 95% CI {_ci(s['ssim_gain_ci'])}",
    f"image re-identification <b>{s['image_reid_rate']:.3f}</b>: the share of reconstructions "
    f"closer (SSIM) to their own original than to any of the other {s['num_targets'] - 1} "
    f"targets; chance {s['reid_chance']:.4f}",
    f"PSNR {s['psnr']:.1f} dB",
  ]
  for name, m in (s.get("metrics") or {}).items():  # config.metrics, beside its chance level
    if isinstance(m, dict):
      numbers.append(
        f"{_e(name)} <b>{m['mean']:.3f}</b>, against {m['baseline']:.3f} with no information "
        f"about the target (its mean over mismatched pairs): a gain of <b>{m['gain']:.3f}</b>, "
        f"95% CI {_ci(m['gain_ci'])}"
      )
  sar = _type2(s, fmr)
  if sar is not None:
    row = readings.at_fmr(s["identity"], fmr)
    chance = max(fmr, row["impostor_accept"])
    numbers.append(
      f"an independent recognition model accepts a reconstruction as the same identity as "
      f"another image of the target (type II) in <b>{sar['rate']:.3f}</b> of comparisons, 95% "
      f"CI {_ci(sar['ci'])}, at a false match rate of {fmr:g}; chance {chance:.4f}"
    )
  reasons = "".join(f"<li>{_e(r)}</li>" for r in s["risk_reasons"])
  warnings = "".join(f"<li>{_e(w)}</li>" for w in s["warnings"])
  return f"""
<section id="verdict" class="verdict {level}">
<h1>Privacy risk: <span class="level">{_e(level)}</span></h1>
<p><b>{_e(_PLAIN[level].format(aux=s["num_aux"]))}</b></p>
<p>Decided by the <b>{_e(s["deciding_attack"])}</b> attacker, the strongest of
{len(s["attacks"])} tried, on {s["num_targets"]} target images:</p>
<ul>{"".join(f"<li>{n}</li>" for n in numbers)}</ul>
<p><b>What to try next.</b> {_next(s)}</p>
<details><summary>Why this level ({len(s["risk_reasons"])} reasons)</summary>
<ul>{reasons}</ul></details>
{f"<p><b>Warnings</b></p><ul>{warnings}</ul>" if warnings else ""}
</section>"""


def _attackers(s: dict) -> str:
  fmr = s["config"]["risk"]["identity_fmr"]
  extra = list(s["config"].get("metrics", {}))  # config.metrics: one column each
  header = [
    "attacker",
    "type",
    "risk",
    "SSIM",
    "PSNR dB",
    "SSIM gain (95% CI)",
    "image re-id",
    "model re-id",
    f"type-II SAR@{fmr:g}",
    *(f"{m} vs baseline, gain (95% CI)" for m in extra),  # (_table escapes headers)
    "seconds",
  ]
  rows = [_attacker_row(s, name, r, fmr, extra) for name, r in s["attacks"].items()]
  notes = [f"{name}: skipped: {r['skipped']}" for name, r in s["attacks"].items() if "skipped" in r]
  return (
    "<h2>The attackers</h2>"
    '<p class="note">Each attacker learns to invert the features from the auxiliary images '
    "only; the verdict follows the most severe. Model re-id uses the audited model itself "
    "and never decides. Their warnings are listed once, in the verdict above."
    + (
      " Each metric of config.metrics is shown against its no-information baseline (its "
      "mean over mismatched pairs: a target's original against other targets' "
      "reconstructions); with thresholds it votes by its gain's 95% CI lower bound."
      if extra
      else ""
    )
    + "</p>"
    + _table(header, rows)
    + ("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>" if notes else "")
    + (
      '<p class="note">* restored from the workdir\'s cache by this run: the seconds it took '
      "when it was computed.</p>"
      if any(r.get("cached") for r in s["attacks"].values())
      else ""
    )
  )


def _attacker_row(s: dict, name: str, r: dict, fmr: float, extra: list) -> list:
  """One attacker's cells in the attackers table (HTML), a skipped one's mostly blank."""
  label = f"<b>{_e(name)}</b>" if name == s["deciding_attack"] else _e(name)
  if "skipped" in r:
    blank = [""] * (6 + len(extra))
    return [label, _e(r["type"]), "skipped", *blank, _num(r["seconds"], 1)]
  sar = _type2(r, fmr)
  return [
    label,
    _e(r["type"]),
    _e(r["risk_level"]),
    _num(r["ssim"]),
    _num(r["psnr"], 2),
    _cell_ci(r["ssim_gain"], r["ssim_gain_ci"]),
    _num(r["image_reid_rate"]),
    _num(r["reid_rate"]),
    "n/a" if sar is None else _cell_ci(sar["rate"], sar["ci"]),
    *(_metric(r.get("metrics", {}).get(m)) for m in extra),
    _num(r["seconds"], 1) + ("*" if r.get("cached") else ""),
  ]


def _evaluator(s: dict, images: dict) -> str:
  ev = s["evaluator"]
  if not ev["measured"]:
    return f"<h2>Identity leakage</h2><p>{_e(ev['why'])}</p>"
  model = ev["model"] if isinstance(ev["model"], dict) else {"model": ev["model"]}
  accuracy = model.get("test_accuracy")
  accuracy = accuracy if isinstance(accuracy, (int, float)) else None
  rows = []
  for t in ev["thresholds"]:
    gar = t.get("genuine_accept_rate")
    row = readings.at_fmr(s["identity"], t["fmr"]) or {}
    rows.append(
      [
        f"{t['fmr']:g}",
        f"{t['threshold']:.4f}",
        f"{t['realised_fmr']:.4f}",
        "n/a" if gar is None else _cell_ci(gar["rate"], gar["ci"]),
        f"{row['type1_sar']['rate']:.3f}" if "type1_sar" in row else "n/a",
        _cell_ci(row["type2_sar"]["rate"], row["type2_sar"]["ci"]) if "type2_sar" in row else "n/a",
        _num(row.get("impostor_accept"), 4),
      ]
    )
  plot = _img(images["evaluator"], "evaluator score distributions") if "evaluator" in images else ""
  return (
    "<h2>Identity leakage, judged by an independent model</h2>"
    f"<p>Evaluator: {_e(model.get('kind', '?'))} "
    f"{_e(model.get('architecture', model.get('factory', model.get('module', ''))))}"
    + (f"; test accuracy {accuracy:.3f}" if accuracy is not None else "")
    + f". {ev['num_identities']} identities; {ev['type2_targets']} targets have another image of "
    f"their identity ({ev['single_image_targets_excluded']} excluded). Thresholds are fixed on "
    "the original images alone.</p>"
    + _table(
      [
        "FMR",
        "threshold",
        "realised FMR",
        "evaluator's own genuine accept",
        "type-I SAR",
        "type-II SAR (95% CI)",
        "attacker's impostor accept",
      ],
      rows,
    )
    + plot
  )


def _plural(n: int, word: str) -> str:
  return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def _devices(d: dict) -> str:
  """The devices an audit ran on, in words (report.json's "devices")."""
  platform = str(d["platform"]).upper()  # CPU, GPU, TPU
  kind = "" if str(d["kind"]).lower() == str(d["platform"]).lower() else f" ({d['kind']})"
  return (
    f"{_plural(d['count'], platform + ' device')}{kind} in {_plural(d['processes'], 'process')}"
  )


def _audited(s: dict) -> str:
  meta = s["metadata"]
  model = meta.get("model", {})
  model = model if isinstance(model, dict) else {"model": model}
  rows = [
    ["model", _e(", ".join(f"{k}: {_short(v)}" for k, v in model.items()) or "privjax.assess")],
    ["data", _e(meta.get("data", "arrays given to privjax.assess"))],
    ["auxiliary images (the attacker's)", str(s["num_aux"])],
    ["target images", str(s["num_targets"])],
    ["image shape", _e(" x ".join(map(str, s["image_shape"])))],
    ["feature dimension", str(s["feature_dim"])],
    [
      "SSIM window",
      f"{s['ssim_definition']['filter_size']} px, sigma {s['ssim_definition']['filter_sigma']:.3g}",
    ],
    ["seed", str(s["seed"])],
    ["ran on", _e(_devices(s["devices"]))],
    ["versions", _e(", ".join(f"{k} {v}" for k, v in s["versions"].items()))],
    [
      "this run's seconds",
      _e(", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()))
      + (
        " (attackers restored from the workdir's cache: their table shows computing time)"
        if any(r.get("cached") for r in s["attacks"].values())
        else ""
      ),
    ],
  ]
  return (
    "<h2>What was audited</h2>"
    + _table(None, rows, text_columns=(1,))
    + "<details><summary>The resolved config</summary><pre>"
    + _e(json.dumps(s["config"], indent=2))
    + "</pre></details>"
  )


def _mse(conv: dict, key: str) -> str:
  """ ", mse X" from a convergence record (absent from reports of before it was recorded)."""
  return f", mse {conv[key]:.5f}" if key in conv else ""


def render(summary: dict, images: dict) -> str:
  """The HTML page of an audit: `summary` is the report's JSON-ready summary; `images`
  maps "grid", "ssim_histogram", and when present "curves", "evaluator", "strength" to PNG
  bytes."""
  s = summary
  sections = [_first_screen(s), _attackers(s)]
  sections.append(
    "<h2>Reconstructions</h2>"
    '<p class="note">The deciding attacker\'s best, median and worst targets by SSIM: '
    "originals above their reconstructions, each labelled with its target index and SSIM."
    "</p>" + _img(images["grid"], "best, median and worst reconstructions")
  )
  sections.append(
    "<h2>SSIM per target</h2>"
    + _img(images["ssim_histogram"], "histogram of per-target SSIM against the baseline")
  )
  sections.append(_evaluator(s, images))
  if "curves" in images:
    conv = s["convergence"]
    sections.append(
      "<h2>Decoder training</h2>"
      f'<p class="note">{_e(conv["stopped"])}; best validation loss '
      f"{conv['best_val_loss']:.5f}{_mse(conv, 'best_val_mse')} at step {conv['best_step']} "
      f"(predicting the mean image: {conv['mean_image_val_loss']:.5f}"
      f"{_mse(conv, 'mean_image_val_mse')}).</p>" + _img(images["curves"], "decoder loss curves")
    )
  if "strength" in images:
    sections.append(
      "<h2>Leakage against the attacker's data</h2>"
      + _img(images["strength"], "leakage against the number of auxiliary images")
    )
  sections.append(_defenses(s, images))
  sections.append(_audited(s))
  return (
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    f"<title>privjax: {_e(s['risk_level'])} risk</title><style>{_STYLE}</style></head>"
    "<body>" + "\n".join(sections) + "</body></html>\n"
  )
