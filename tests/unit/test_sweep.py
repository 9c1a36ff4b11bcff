"""The defense sweep's judgement: a low point whose attackers warn carries the caveat."""


def test_a_low_point_whose_attackers_warn_carries_the_caveat():
  from privjax import sweep

  row = {"risk_level": "low", "ssim_gain": 0.0, "ssim_gain_ci": [-0.01, 0.01]}
  row.update(image_reid_rate=0.0, warnings=["data-starved: fitted on 90 auxiliary images"])
  point = sweep._judge({"ridge": row}, {"ridge": dict(row, warnings=[])})
  assert point["risk_level"] == "low" and len(point["understated"]) == 1
  point.update(strength=4.0, utility={})
  result = {"g": {"type": "gaussian_noise", "param": "sigma", "points": [point]}}
  _, line = sweep.best_tradeoff(result, {"utility": {}})
  assert "caveat: 1 attacker warning(s)" in line and "true risk may be higher" in line
  high = sweep._judge({"ridge": dict(row, risk_level="high")}, {"ridge": row})
  assert high["understated"] == []
