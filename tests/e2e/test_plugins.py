"""A per-target metric registered from outside the package, through a whole audit: its
column in per_image.csv, its mean in every attacker's row of report.json, its column in
report.html and its vote in the verdict."""

import csv
import json

import ml_collections
import numpy as np

import privjax

TOY = "tests.unit.toy_plugins"


def _project(params, images):
  return images.reshape(images.shape[0], -1) @ params


def test_a_metric_reaches_every_output_and_the_verdict(digits8, tmp_path):
  x, _ = digits8
  # Features that carry nothing: every attacker is low on SSIM and re-identification.
  rng = np.random.default_rng(0)
  aux_f, tgt_f = rng.normal(size=(300, 8)), rng.normal(size=(60, 8))
  off = {n: {"type": "off"} for n in ("decoder", "whitebox")}
  cfg = ml_collections.ConfigDict(
    {
      "attacks": off,
      "bootstrap_samples": 100,
      # 1 - mean |error| of a mean-like image is ~0.8: above this "high" threshold.
      "metrics": {"close": {"type": f"{TOY}:mean_abs_error", "high": 0.5}},
    }
  )

  def audit(**kw):
    return privjax.assess(
      None,
      None,
      x[:300],
      x[300:360],
      aux_features=aux_f,
      target_features=tgt_f,
      config=cfg,
      progress=False,
      **kw,
    )

  report = audit(workdir=str(tmp_path))
  r = json.loads((tmp_path / "report.json").read_text())
  for name in ("ridge", "nearest"):
    assert 0.5 < r["attacks"][name]["metrics"]["close"] <= 1.0
  assert r["risk_level"] == "high" == report.risk_level
  assert any("metric close" in reason for reason in r["risk_reasons"])
  with open(tmp_path / "per_image.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 60 and all(0.0 <= float(row["close"]) <= 1.0 for row in rows)
  assert "<th>close</th>" in (tmp_path / "report.html").read_text()
  # Without thresholds the metric is reported, and the verdict is the other measures'.
  cfg.metrics.close.high = 0.0
  quiet = audit().to_dict()
  assert quiet["risk_level"] == "low" and "metrics" in quiet["attacks"]["ridge"]
