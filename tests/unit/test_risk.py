"""The verdict: no verdict from NaN, re-identification counts only above a multiple of its
chance, identity leakage raises the verdict on its own."""

import ml_collections
import pytest

import privjax
from privjax import config as config_lib
from privjax import levels
from privjax.scoring import risk

_THRESHOLDS = {
  "high_ssim_gain": 0.3,
  "high_image_reid": 0.5,
  "medium_ssim_gain": 0.05,
  "medium_image_reid": 0.05,
  "medium_reid_over_chance": 5.0,
}


def _verdict(gain_low, reid, chance):
  return risk.verdict(
    ssim_gain_ci_low=gain_low,
    image_reid_rate=reid,
    reid_chance=chance,
    thresholds=ml_collections.ConfigDict(_THRESHOLDS),
  )[0]


def test_no_verdict_from_nan():
  with pytest.raises(privjax.TrainingError, match="no verdict is given from NaN"):
    _verdict(float("nan"), 0.5, 0.01)


@pytest.mark.parametrize(
  "reid,chance,level",
  [
    (0.6, 0.01, "high"),  # 60x chance
    (0.6, 0.5, "low"),  # 2 targets: 0.6 is 1.2x chance, no evidence of identity
    (0.6, 0.1, "high"),  # exactly 6x chance
    (0.1, 0.01, "medium"),
    (0.1, 0.05, "low"),  # 2x chance
  ],
)
def test_image_reid_counts_only_above_a_multiple_of_chance(reid, chance, level):
  assert _verdict(0.0, reid, chance) == level


def test_identity_leakage_raises_the_verdict_alone():
  t = config_lib.audit_config().risk
  judge = {"ssim_gain_ci_low": 0.0, "image_reid_rate": 0.0, "reid_chance": 0.01, "thresholds": t}
  assert risk.verdict(**judge, identity=(0.6, 0.01))[0] == "high"
  assert risk.verdict(**judge, identity=(0.2, 0.01))[0] == "medium"
  assert risk.verdict(**judge, identity=(0.2, 0.05))[0] == "low"  # only 4x its chance
  level, reasons = risk.verdict(**judge, identity=(0.6, 0.01))
  assert "type-II identity SAR@FMR 0.01" in reasons[0]


def test_a_release_gate_trips_at_its_level_and_above():

  assert [levels.reaches(level, "medium") for level in ("low", "medium", "high")] == [
    False,
    True,
    True,
  ]
  assert [levels.reaches(level, "high") for level in ("low", "medium", "high")] == [
    False,
    False,
    True,
  ]


def test_a_metric_votes_by_its_gain_ci_low_at_its_own_thresholds():
  t = config_lib.audit_config().risk
  judge = {"ssim_gain_ci_low": 0.0, "image_reid_rate": 0.0, "reid_chance": 0.01, "thresholds": t}
  assert risk.verdict(**judge, metrics=[("m", 0.25, 0.2, 0.1)])[0] == "high"
  assert risk.verdict(**judge, metrics=[("m", 0.15, 0.2, 0.1)])[0] == "medium"
  assert risk.verdict(**judge, metrics=[("m", 0.05, 0.2, 0.1)])[0] == "low"
  assert risk.verdict(**judge, metrics=[("m", 0.15, 0.2, 0.0)])[0] == "low"  # medium off
  assert risk.verdict(**judge, metrics=[("m", 0.25, 0.0, 0.1)])[0] == "medium"  # high off
  level, reasons = risk.verdict(**judge, metrics=[("m", 0.25, 0.2, 0.1)])
  assert reasons == [
    "metric m gain over its baseline, 95% CI lower bound 0.250 >= high threshold 0.2"
  ]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_no_verdict_from_a_non_finite_metric(value):
  t = config_lib.audit_config().risk
  with pytest.raises(privjax.TrainingError, match="no verdict is given from NaN"):
    risk.verdict(
      ssim_gain_ci_low=0.0,
      image_reid_rate=0.0,
      reid_chance=0.01,
      thresholds=t,
      metrics=[("m", value, 0.2, 0.1)],
    )
