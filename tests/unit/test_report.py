"""The report files: report.json is strict JSON, per_image.csv never runs a formula,
report.html escapes once and shows each metric beside its baseline."""

import json

import pytest


def test_report_json_is_strict_json():
  from privjax.report.files import strict_json

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

  from privjax.report import files as report

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

  from privjax.report import files as report

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
  from privjax.report import page

  s = _summary('say "hi" <b>')
  html_text = page._first_screen(s) + page._attackers(s)
  assert "say &quot;hi&quot; &lt;b&gt;" in html_text
  assert "&amp;quot;" not in html_text and "&amp;lt;" not in html_text and "<b>hi" not in html_text
  assert "<th>say &quot;hi&quot; &lt;b&gt; vs baseline, gain (95% CI)</th>" in html_text
  assert '<td>0.780 vs 0.775, gain 0.005 <span class="ci">[-0.020, 0.030]</span></td>' in html_text
  assert "<b>0.780</b>, against 0.775 with no information about the target" in html_text


def _step(s):
  """The command of the page's "what to try next" for summary `s`, as arguments, and the
  text before it."""
  import html
  import shlex

  from privjax.report import page

  text = html.unescape(page._next(s))
  before, rest = text.split("<br><code>", 1)
  return before, shlex.split(rest.split("</code>", 1)[0])


def _run_printed(args, cwd, monkeypatch, capsys):
  """Runs a printed command's arguments with --print_config (everything but the audit):
  its exit status and the config it prints."""
  from privjax import cli

  assert args[0] == ".venv/bin/privjax"  # the README's form, from the repository root
  monkeypatch.chdir(cwd)
  capsys.readouterr()
  status = cli.run(["privjax", *args[1:], "--print_config"])
  return status, capsys.readouterr().out


@pytest.mark.parametrize("feature_dim,cuts", [(64, (16, 4, 2, 1)), (8, (2, 1))])
def test_the_next_step_after_the_default_audit_names_the_sweep_config_and_runs(
  feature_dim, cuts, monkeypatch, capsys
):
  from privjax.report import page
  from tests.conftest import REPO_ROOT

  command = "privjax --config=configs/default.py --workdir=runs/default"
  s = {"risk_level": "high", "feature_dim": feature_dim, "metadata": {"command": command}}
  before, args = _step(s)
  assert "configs/defense_sweep.py" in before
  assert args[:3] == [
    ".venv/bin/privjax",
    "--config=configs/defense_sweep.py",
    "--workdir=runs/default",
  ]
  assert not any("{" in a for a in args)  # no inline dict
  status, printed = _run_printed(args, REPO_ROOT, monkeypatch, capsys)
  assert status == 0
  assert f"defense.sweep.pca_truncate.strengths = {cuts}" in printed  # all within the width
  from configs import defense_sweep  # the widest cut the page assumes, and the file's

  assert max(defense_sweep.get_config().defense.sweep.pca_truncate.strengths) == page._SWEEP_CUTS
  assert "defense.sweep.quantize.strengths = (6, 3, 2, 1)" in printed


def test_the_next_step_after_another_config_copies_it_with_the_sweep_and_runs(
  tmp_path, monkeypatch, capsys
):
  import ast
  import shutil

  from tests.conftest import REPO_ROOT

  command = "privjax --config=configs/folder.py --workdir=runs/mine --config.data.path=faces"
  s = {"risk_level": "medium", "feature_dim": 128, "metadata": {"command": command}}
  before, args = _step(s)
  assert args == [
    ".venv/bin/privjax",
    "--config=configs/folder_sweep.py",
    "--workdir=runs/mine",
    "--config.data.path=faces",
  ]
  assert "copy configs/folder.py to configs/folder_sweep.py" in before
  assert "c.defense.sweep and c.defense.attacks settings of configs/defense_sweep.py" in before
  # Do what it says, in a copy of the configs, then run what it printed.
  shutil.copytree(REPO_ROOT + "/configs", tmp_path / "configs")
  sweep = (tmp_path / "configs" / "defense_sweep.py").read_text()
  settings = [
    ast.get_source_segment(sweep, node)
    for node in ast.walk(ast.parse(sweep))
    if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]).startswith("c.defense.")
  ]
  assert len(settings) == 2
  mine = (tmp_path / "configs" / "folder.py").read_text()
  mine = mine.replace("  return c\n", "".join(f"  {x}\n" for x in settings) + "  return c\n")
  (tmp_path / "configs" / "folder_sweep.py").write_text(mine)
  status, printed = _run_printed(args, tmp_path, monkeypatch, capsys)
  assert status == 0
  assert "defense.sweep.gaussian_noise.strengths" in printed and "data.source = 'folder'" in printed


def test_a_low_verdict_gives_the_strength_curve_command_and_python_the_fields():
  from privjax.report import page

  command = "privjax --config=configs/folder.py --workdir=runs/mine --config.data.path=faces"
  s = {"risk_level": "low", "feature_dim": 128, "metadata": {"command": command}}
  before, args = _step(s)
  assert args[0] == ".venv/bin/privjax" and " ".join(["privjax", *args[1:4]]) == command
  assert args[4:] == ["--config.attack_strength.aux_fractions=(0.25,0.5,1.0)"]
  for level in ("low", "high"):  # from Python: the fields to set, no command
    s = {"risk_level": level, "feature_dim": 128, "metadata": {}}
    assert "<code>" not in page._next(s) and "privjax.assess" in page._next(s)
  s["metadata"] = {"command": command}
  s["attack_strength"] = [{"aux_fraction": 1.0}]  # measured: nothing to run for a low one
  s["risk_level"] = "low"
  assert "<code>" not in page._next(s)


def _sweep(useful: bool, understated=()):
  """A sweep summary (sweep.json) whose best low point keeps k-NN identification at 0.103."""
  knn = lambda rate: {"rate": rate, "ci": [rate - 0.02, rate + 0.02], "chance": 0.1}  # noqa: E731
  point = {
    "strength": 32.0,
    "risk_level": "low",
    "utility": {"knn_rank1": knn(0.103)},
    "understated": list(understated),
  }
  return {
    "undefended": {"utility": {"knn_rank1": knn(0.981)}},
    "defenses": {
      "gaussian_noise": {
        "type": "gaussian_noise",
        "param": "sigma",
        "about": "sigma: noise std in units of each dimension's std on the auxiliary set",
        "points": [point],
      }
    },
    "best_tradeoff": {
      "defense": "gaussian_noise",
      "param": "sigma",
      "strength": 32.0,
      "utility": {"name": "knn_rank1", "value": 0.103},
      "useful": useful,
    },
    "best_tradeoff_line": "no defense tried keeps utility ... knn_rank1 0.103 (undefended ...)",
  }


@pytest.mark.parametrize("useful", [False, True])
def test_the_sweeps_outcome_is_told_in_words_and_percent(useful):
  import html

  from privjax.report import page

  s = {"risk_level": "high", "feature_dim": 64, "metadata": {}, "defense": _sweep(useful)}
  text = html.unescape(page._next(s))
  assert "knn_rank1" not in text and "chance" not in text
  assert "k-NN identification" in text
  assert "10% (undefended 98%; guessing 10%)" in text
  assert "gaussian_noise at sigma=32 (noise std in units of each dimension's std" in text
  if useful:
    assert text.startswith("Best trade-off: gaussian_noise at sigma=32")
  else:
    assert text.startswith("No defense tried brings the risk down to low and keeps the")
  assert "Caveat" not in text
  s["defense"] = _sweep(useful, understated=["decoder: a warning"])
  assert "Caveat: 1 attacker warning(s) at that point" in page._next(s)
  s["defense"]["best_tradeoff"] = None
  assert page._next(s).startswith("No defense tried brings the risk down to low: try stronger")


def test_the_page_says_in_words_which_devices_ran_the_audit():
  from privjax.report import page

  cpu = {"count": 4, "kind": "cpu", "platform": "cpu", "processes": 2}
  assert page._devices(cpu) == "4 CPU devices in 2 processes"
  gpu = {"count": 1, "kind": "NVIDIA H100 80GB HBM3", "platform": "gpu", "processes": 1}
  assert page._devices(gpu) == "1 GPU device (NVIDIA H100 80GB HBM3) in 1 process"


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_training_curves_plot_positive_and_negative_losses_without_a_warning(sign):
  """The mse losses are drawn on a log axis; log_mse+ssim is negative and drawn linear."""
  import warnings

  from privjax.report import plots

  history = [
    {"step": 100, "train_loss": sign * 0.02, "val_loss": sign * 0.03},
    {"step": 200, "train_loss": sign * 0.01, "val_loss": sign * 0.025},
  ]
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    png = plots.training_curves(history)
  assert png.startswith(b"\x89PNG")


def _wide_summary():
  """A whole report summary with the widest tables a report has: five attackers with
  type-II SAR and two config.metrics columns, and an evaluator at two FMRs."""
  ci = lambda v: [round(v - 0.012, 3), round(v + 0.011, 3)]  # noqa: E731
  metric = {"mean": 0.781, "baseline": 0.775, "gain": 0.006, "gain_ci": [-0.021, 0.034]}
  fmrs = [
    {
      "fmr": f,
      "type1_sar": {"rate": 0.996},
      "type2_sar": {"rate": 0.609, "ci": ci(0.609)},
      "impostor_accept": 0.0103,
    }
    for f in (0.01, 0.001)
  ]
  row = {
    "seconds": 123.4,
    "risk_level": "medium",
    "ssim": 0.959,
    "psnr": 28.64,
    "ssim_gain": 0.744,
    "ssim_gain_ci": ci(0.744),
    "image_reid_rate": 1.0,
    "reid_rate": 0.998,
    "identity": {"fmrs": fmrs},
    "metrics": {"dlib_accepts": metric, "lpips_close": metric},
    "cached": True,
  }
  attacks = {n: dict(row, type=n) for n in ("decoder", "ridge", "nearest", "whitebox", "blend")}
  return {
    **{k: row[k] for k in ("ssim", "psnr", "ssim_gain", "ssim_gain_ci", "image_reid_rate")},
    "risk_level": "high",
    "risk_reasons": ["whitebox attacker: SSIM gain 0.733 >= 0.3"],
    "warnings": ["all attackers: a warning " * 8],
    "deciding_attack": "whitebox",
    "baseline_ssim": 0.215,
    "num_targets": 359,
    "num_aux": 540,
    "reid_chance": 0.0028,
    "feature_dim": 64,
    "metrics": row["metrics"],
    "identity": {"fmrs": fmrs},
    "attacks": attacks,
    "evaluator": {
      "measured": True,
      "model": {"kind": "builtin", "architecture": "RecognitionCNN(conv32)", "test_accuracy": 0.9},
      "thresholds": [
        {
          "fmr": f,
          "threshold": 0.9723,
          "realised_fmr": f,
          "genuine_accept_rate": {"rate": 0.377, "ci": ci(0.377)},
        }
        for f in (0.01, 0.001)
      ],
      "num_identities": 10,
      "type2_targets": 359,
      "single_image_targets_excluded": 0,
    },
    "metadata": {"command": "privjax --config=configs/default.py --workdir=runs/default"},
    "image_shape": [16, 16, 1],
    "ssim_definition": {"filter_size": 5, "filter_sigma": 0.68},
    "seed": 0,
    "devices": {"count": 2, "kind": "cpu", "platform": "cpu", "processes": 1},
    "versions": {"python": "3.11.7", "jax": "0.10.2"},
    "seconds": {"extraction": 0.3, "attacks": 40.1, "total": 48.5},
    "config": {
      "risk": {"identity_fmr": 0.01},
      "metrics": {"dlib_accepts": {"type": "x:y"}, "lpips_close": {"type": "x:y"}},
    },
  }


def test_the_widest_tables_fit_the_page_at_1280_px_without_scrolling(tmp_path):
  import io

  from PIL import Image

  from benchmarks import report_screenshot
  from privjax.report import page

  if report_screenshot.browser() is None:
    pytest.skip("no Chromium on PATH (Debian: apt install chromium); the page is not rendered")
  buf = io.BytesIO()
  Image.new("RGB", (64, 64), "gray").save(buf, format="PNG")
  png = buf.getvalue()
  html_text = page.render(_wide_summary(), {"grid": png, "ssim_histogram": png, "evaluator": png})
  # A table wider than the page scrolls inside its box; shown whole, it spills to the right.
  assert ".scroll { overflow-x: auto;" in html_text
  html_text = html_text.replace(".scroll { overflow-x: auto;", ".scroll { overflow-x: visible;")
  (tmp_path / "report.html").write_text(html_text)
  shot = report_screenshot.screenshot(str(tmp_path / "report.html"), str(tmp_path / "page.png"))
  assert shot["right_margin_blank"], "a table is wider than the page at 1280 px"
  assert shot["height"] > 1000  # the whole page, not a blank render


def test_the_cli_prints_each_warning_once_after_the_summary_line():
  from privjax.report import files as report_lib

  summary = {
    "warnings": [
      "all attackers: data-starved:   fitted on 90\n of 100",
      "all attackers: data-starved: fitted on 90 of 100",
      "decoder: its validation loss was still falling",
    ]
  }
  fake = report_lib.Report(summary, {}, None, None)
  assert report_lib.warning_lines(fake) == [
    "privjax: warning: all attackers: data-starved: fitted on 90 of 100",
    "privjax: warning: decoder: its validation loss was still falling",
  ]
