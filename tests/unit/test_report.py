"""The report files: report.json is strict JSON, per_image.csv never runs a formula,
report.html escapes once and shows each metric beside its baseline."""

import json

import pytest


def test_report_json_is_strict_json():
  from privjax.report import strict_json

  text = strict_json({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}})
  assert json.loads(text, parse_constant=lambda t: pytest.fail(f"not strict JSON: {t}")) == {
    "a": None,
    "b": [1.0, None],
    "c": {"d": None},
  }


def test_per_image_csv_text_never_runs_as_a_formula():
  import csv
  import io

  import numpy as np

  from privjax import report

  names = ['=HYPERLINK("x")', "+1", "-cmd", "@SUM(A1)", "plain.png", "a=b"]
  rows = list(
    csv.reader(
      io.StringIO(
        report.per_image_csv(
          {"source": names, "ssim": np.linspace(-0.5, 0.5, 6), "label": np.arange(6)}
        ).decode()
      )
    )
  )
  assert [r[1] for r in rows[1:]] == [
    '\'=HYPERLINK("x")',
    "'+1",
    "'-cmd",
    "'@SUM(A1)",
    "plain.png",
    "a=b",
  ]
  assert rows[1][3] == "-0.5"  # numbers stay numbers, negative ones too


def test_per_image_csv_header_never_runs_as_a_formula():
  """A metric's name is the user's text and a column of per_image.csv: escaped as cells are."""
  import csv
  import io

  import numpy as np

  from privjax import report

  columns = {"ssim": np.ones(2), "=cmd|'/c calc'!A0": np.zeros(2), "baseline_=x": np.zeros(2)}
  header = next(csv.reader(io.StringIO(report.per_image_csv(columns).decode())))
  assert header == ["index", "ssim", "'=cmd|'/c calc'!A0", "baseline_=x"]


def _summary(metric_name):
  """A report summary with what the page's first screen and attackers table read, one
  config.metrics entry named `metric_name` measured by the one attacker."""
  metric = {"mean": 0.78, "baseline": 0.775, "gain": 0.005, "gain_ci": [-0.02, 0.03]}
  row = {
    "type": "nearest",
    "seconds": 1.0,
    "risk_level": "low",
    "ssim": 0.2,
    "psnr": 12.0,
    "ssim_gain": 0.01,
    "ssim_gain_ci": [0.0, 0.02],
    "image_reid_rate": 0.02,
    "reid_rate": None,
    "metrics": {metric_name: metric},
  }
  return {
    **{k: row[k] for k in ("ssim", "psnr", "ssim_gain", "ssim_gain_ci", "image_reid_rate")},
    "risk_level": "low",
    "risk_reasons": ["r"],
    "warnings": [],
    "deciding_attack": "nearest",
    "baseline_ssim": 0.19,
    "num_targets": 50,
    "num_aux": 200,
    "reid_chance": 0.02,
    "feature_dim": 8,
    "metadata": {},
    "metrics": {metric_name: metric},
    "attacks": {"nearest": row},
    "config": {"risk": {"identity_fmr": 0.01}, "metrics": {metric_name: {"type": "x:y"}}},
  }


def test_a_metric_is_shown_beside_its_baseline_and_its_name_escaped_once():
  from privjax import page

  s = _summary('say "hi" <b>')
  html_text = page._first_screen(s) + page._attackers(s)
  assert "say &quot;hi&quot; &lt;b&gt;" in html_text
  assert "&amp;quot;" not in html_text and "&amp;lt;" not in html_text and "<b>hi" not in html_text
  assert "<th>say &quot;hi&quot; &lt;b&gt; vs baseline, gain (95% CI)</th>" in html_text
  assert "<td>0.780 vs 0.775, gain 0.005 [-0.020, 0.030]</td>" in html_text
  assert "<b>0.780</b>, against 0.775 with no information about the target" in html_text


@pytest.mark.parametrize("level", ["high", "low"])
def test_what_to_try_next_gives_the_command_that_does_it(level):
  import ast
  import html
  import shlex

  from privjax import page

  command = "privjax --config=configs/folder.py --workdir=runs/mine --config.data.path=faces"
  s = {"risk_level": level, "feature_dim": 128, "metadata": {"command": command}}
  text = html.unescape(page._next(s))
  line = text.split("<code>")[1].removesuffix("</code>")
  args = shlex.split(line)
  assert " ".join(args[:4]) == command  # this audit's command, extended
  extra = dict(a.removeprefix("--config.").split("=", 1) for a in args[4:])
  if level == "high":
    sweep = ast.literal_eval(extra["defense.sweep"])
    assert set(sweep) == {"gaussian_noise", "quantize", "pca_truncate"}
    assert sweep["pca_truncate"]["strengths"] == (32, 8, 2, 1)  # cuts of the 128 dimensions
    assert ast.literal_eval(extra["defense.attacks"]) == ("ridge", "nearest")
  else:
    assert ast.literal_eval(extra["attack_strength.aux_fractions"]) == (0.25, 0.5, 1.0)
  s["metadata"] = {}  # from Python: the fields to set, no command
  assert "<code>" not in page._next(s) and "privjax.assess" in page._next(s)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_training_curves_plot_positive_and_negative_losses_without_a_warning(sign):
  """The mse losses are drawn on a log axis; log_mse+ssim is negative and drawn linear."""
  import warnings

  from privjax import plots

  history = [
    {"step": 100, "train_loss": sign * 0.02, "val_loss": sign * 0.03},
    {"step": 200, "train_loss": sign * 0.01, "val_loss": sign * 0.025},
  ]
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    png = plots.training_curves(history)
  assert png.startswith(b"\x89PNG")
