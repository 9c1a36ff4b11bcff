"""The defense sweep's judgement: a low point whose attackers warn carries the caveat."""


def test_a_low_point_whose_attackers_warn_carries_the_caveat():
  from privjax.defenses import sweep

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


def test_a_low_point_at_chance_utility_is_no_trade_off_and_the_line_says_so_first():
  from privjax.defenses import sweep

  def point(strength, rate, risk="low"):
    utility = {"knn_rank1": {"rate": rate, "ci": [rate - 0.02, rate + 0.02], "chance": 0.1}}
    return {"strength": strength, "risk_level": risk, "utility": utility, "understated": []}

  undefended = {"utility": {"knn_rank1": {"rate": 0.95, "ci": [0.93, 0.97], "chance": 0.1}}}
  at_chance = {"g": {"type": "gaussian_noise", "param": "sigma", "points": [point(32, 0.103)]}}
  best, line = sweep.best_tradeoff(at_chance, undefended)
  assert line.startswith("no defense tried keeps utility and reaches low")
  assert best["useful"] is False and "knn_rank1 0.103" in line and "chance 0.100" in line
  # A useful low point wins over any point at chance.
  mixed = {
    "g": {"type": "gaussian_noise", "param": "sigma", "points": [point(32, 0.103)]},
    "q": {"type": "quantize", "param": "bits", "points": [point(2, 0.6), point(8, 0.9, "high")]},
  }
  best, line = sweep.best_tradeoff(mixed, undefended)
  assert best["defense"] == "q" and best["useful"] and best["strength"] == 2
  assert line.startswith("best trade-off: q with bits=2: 'low' risk keeping knn_rank1 0.600")
  assert "(undefended 0.950, chance 0.100)" in line
