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
