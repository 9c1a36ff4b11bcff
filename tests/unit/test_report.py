"""The report files: report.json is strict JSON."""

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
