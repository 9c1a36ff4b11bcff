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
