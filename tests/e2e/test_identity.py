"""Identity leakage in whole audits: an evaluator's ceiling, a constant model, the report's
evaluator section, refusals and warnings."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import privjax
from privjax.report import readings
from privjax.scoring import identity
from tests.conftest import only_attackers, tiny_config

FMRS = (0.01, 0.001)


def _row(summary, fmr=0.01):
  return readings.at_fmr(summary, fmr)


def _pixels(p, images):  # an evaluator: centred pixels (digits of one class look alike)
  return images.reshape(images.shape[0], -1) - p


@pytest.fixture(scope="module")
def digit_audits(digits8):
  """The ridge attacker on an invertible and on a constant audited model, one evaluator."""
  x, y = digits8
  q = np.linalg.qr(np.random.default_rng(0).normal(size=(64, 64)))[0].astype(np.float32)
  cfg = tiny_config()
  cfg.attacks = only_attackers(ridge={})
  evaluator = privjax.Evaluator(_pixels, jnp.asarray(x.reshape(len(x), -1).mean(axis=0)))
  models = {
    "invertible": (lambda p, im: im.reshape(im.shape[0], -1) @ p, jnp.asarray(q)),
    "constant": (lambda p, im: jnp.ones((im.shape[0], 8), jnp.float32), None),
  }
  return {
    name: privjax.assess(
      fn,
      params,
      x[:1000],
      x[1000:1400],
      config=cfg,
      target_labels=y[1000:1400],
      evaluator=evaluator,
    ).to_dict()
    for name, (fn, params) in models.items()
  }


def test_an_invertible_model_leaks_identity_up_to_the_evaluators_ceiling(digit_audits):
  r = digit_audits["invertible"]
  for f in FMRS:
    row, own = _row(r["identity"], f), _row(r["evaluator"], f)
    assert row["type1_sar"]["rate"] > 0.95
    ceiling = own["genuine_accept_rate"]["rate"]
    assert abs(row["type2_sar"]["rate"] - ceiling) < 0.05, (f, row, own)
  assert r["evaluator"]["rank1"]["rate"] - r["identity"]["rank1"]["rate"] < 0.05


def test_a_constant_model_leaks_no_identity(digit_audits):
  r = digit_audits["constant"]
  row = _row(r["identity"])
  assert row["type1_sar"]["rate"] <= 0.05
  assert row["type2_sar"]["rate"] < 5 * max(0.01, row["impostor_accept"])
  assert r["risk_level"] == "low"
  assert any("identity SAR" in reason and "below medium" in reason for reason in r["risk_reasons"])


def test_the_report_holds_the_evaluator_and_says_when_there_is_none(digits8, digit_audits):
  r = digit_audits["invertible"]
  ev = r["evaluator"]
  assert ev["measured"] and ev["num_identities"] == 10 and ev["type2_targets"] == 400
  h = ev["histograms"]
  assert sum(h["genuine"]) == ev["genuine_pairs"] and sum(h["impostor"]) == ev["impostor_pairs"]
  assert len(h["bin_edges"]) == identity.HISTOGRAM_BINS + 1
  assert r["attacks"]["ridge"]["identity"] == r["identity"]
  x, _ = digits8
  cfg = tiny_config()
  cfg.attacks = only_attackers(nearest={})
  plain = privjax.assess(
    lambda p, im: im.reshape(im.shape[0], -1), None, x[:300], x[300:400], config=cfg
  ).to_dict()
  assert plain["evaluator"] == {"measured": False, "why": plain["evaluator"]["why"]}
  assert any(reason.startswith("not checked: identity leakage") for reason in plain["risk_reasons"])


def test_an_evaluator_without_labels_is_refused(digits8):
  x, _ = digits8
  with pytest.raises(privjax.DataError, match="pass target_labels"):
    privjax.assess(
      lambda p, im: im.reshape(im.shape[0], -1),
      None,
      x[:300],
      x[300:400],
      config=ml_collections.ConfigDict({"attacks": only_attackers(nearest={})}),
      evaluator=privjax.Evaluator(_pixels, 0.5),
    )


def test_an_evaluator_that_cannot_tell_identities_apart_is_a_warning(digits8):
  x, y = digits8
  cfg = ml_collections.ConfigDict({"attacks": only_attackers(nearest={}), "bootstrap_samples": 100})
  proj = jnp.asarray(np.random.default_rng(0).normal(size=(64, 16)), jnp.float32)
  blind = privjax.Evaluator(lambda p, im: jnp.sin(1e4 * im.reshape(im.shape[0], -1) @ p), proj)
  r = privjax.assess(
    lambda p, im: im.reshape(im.shape[0], -1),
    None,
    x[:300],
    x[300:400],
    config=cfg,
    target_labels=y[300:400],
    evaluator=blind,
    progress=False,
  ).to_dict()
  assert _row(r["evaluator"])["genuine_accept_rate"]["rate"] < 0.05
  assert any(w.startswith("evaluator: it accepts only") for w in r["warnings"]), r["warnings"]


def test_a_seeing_evaluator_raises_no_such_warning(digit_audits):
  warnings = digit_audits["invertible"]["warnings"]
  assert not any(w.startswith("evaluator: it accepts only") for w in warnings), warnings
