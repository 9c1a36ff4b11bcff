"""Identity leakage by an independent evaluator: thresholds, type I / type II SAR, rank-1."""

import jax
import numpy as np
import pytest

import privjax
from privjax import config as config_lib
from privjax import identity, parallel, readings, risk

FMRS = (0.01, 0.001)


COMMON = {"batch_size": 128, "bootstrap_samples": 300, "seed": 0}


@pytest.fixture(scope="module")
def mesh():
  return parallel.data_mesh()


@pytest.fixture(scope="module")
def people():
  """Evaluator embeddings of 50 identities x 6 images: a centre per identity plus noise."""
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(50, 16))
  labels = np.repeat(np.arange(50), 6)
  emb = centres[labels] + 0.6 * rng.normal(size=(300, 16))
  return emb.astype(np.float32), labels


def _calibrate(emb, labels, mesh, fmrs=FMRS):
  return identity.calibrate(emb, labels, fmrs=fmrs, mesh=mesh, **COMMON)


def _row(summary, fmr=0.01):
  return readings.at_fmr(summary, fmr)


def test_the_threshold_admits_at_most_the_fmr_of_impostors():
  impostor = np.random.default_rng(1).normal(size=10_001)
  for fmr in (0.5, 0.1, 0.01, 0.001, 1e-5):
    t = identity.threshold_at(impostor, fmr)
    assert np.sum(impostor > t) <= fmr * impostor.size
    assert np.sum(impostor >= t) > fmr * impostor.size - 1  # and no higher than it need be


def test_thresholds_come_from_the_originals_alone(people, mesh):
  emb, labels = people
  cal = _calibrate(emb, labels, mesh)
  sim = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  sim = sim @ sim.T
  iu = np.triu_indices(len(labels), 1)
  impostor = sim[iu][(labels[:, None] != labels[None, :])[iu]]
  for f, t, row in zip(FMRS, cal.thresholds, cal.summary["thresholds"], strict=True):
    np.testing.assert_allclose(t, identity.threshold_at(impostor, f), atol=1e-5)
    assert row["realised_fmr"] <= f
  # Judging two different sets of reconstructions never moves them.
  before = cal.thresholds
  rng = np.random.default_rng(2)
  identity.evaluate(cal, emb + rng.normal(size=emb.shape), mesh=mesh, **COMMON)
  identity.evaluate(cal, rng.normal(size=emb.shape), mesh=mesh, **COMMON)
  assert cal.thresholds == before
  assert cal.summary["genuine_pairs"] == 50 * 15
  assert cal.summary["impostor_pairs"] == 300 * 299 // 2 - 750


def test_perfect_reconstructions_reach_the_evaluators_own_rates(people, mesh):
  emb, labels = people
  cal = _calibrate(emb, labels, mesh)
  judged, _ = identity.evaluate(cal, emb, mesh=mesh, **COMMON)
  for f in FMRS:
    row, own = _row(judged, f), _row(cal.summary, f)
    assert row["type1_sar"]["rate"] == 1.0
    np.testing.assert_allclose(row["type2_sar"]["rate"], own["genuine_accept_rate"]["rate"])
    np.testing.assert_allclose(row["impostor_accept"], own["realised_fmr"], atol=2e-3)
  assert judged["rank1"]["rate"] == cal.summary["rank1"]["rate"]


def test_uninformative_reconstructions_score_their_chance(people, mesh):
  emb, labels = people
  cal = _calibrate(emb, labels, mesh)
  gar = _row(cal.summary)["genuine_accept_rate"]["rate"]
  assert gar > 0.5  # the evaluator itself separates these identities well
  rng = np.random.default_rng(3)
  shuffled = emb[rng.permutation(len(emb))]  # real faces, of someone: no target's identity
  constant = np.broadcast_to(emb.mean(axis=0), emb.shape)  # one picture for every target
  for recon in (shuffled, constant):
    judged, _ = identity.evaluate(cal, recon, mesh=mesh, **COMMON)
    row = _row(judged)
    # Its chance level is what it scores against other identities (the FMR, and more for
    # a picture near many faces, or for someone's real face in the shuffle).
    sar, chance = row["type2_sar"]["rate"], max(0.01, row["impostor_accept"])
    assert row["type2_sar"]["ci"][0] <= chance and sar < 2 * chance, row
    level, _ = risk.verdict(
      ssim_gain_ci_low=0.0,
      image_reid_rate=0.0,
      reid_chance=1 / 300,
      thresholds=config_lib.audit_config().risk,
      identity=(sar, chance),
    )
    assert level == "low"


def test_single_image_identities_are_excluded_and_counted(people, mesh):
  emb, labels = people
  keep = np.r_[np.arange(0, 294), [294]]  # identity 49 keeps one image
  cal = _calibrate(emb[keep], labels[keep], mesh)
  assert cal.summary["single_image_targets_excluded"] == 1
  assert cal.summary["type2_targets"] == 294


def test_one_identity_is_refused(mesh):
  emb = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
  with pytest.raises(privjax.DataError, match="at least 2 identities"):
    _calibrate(emb, np.zeros(12, np.int64), mesh)


def test_the_device_count_does_not_move_a_threshold(people):
  emb, labels = people
  one = _calibrate(emb, labels, parallel.data_mesh(jax.devices()[:1]))
  four = _calibrate(emb, labels, parallel.data_mesh())
  np.testing.assert_allclose(one.thresholds, four.thresholds, atol=1e-6)
  assert one.summary["rank1"] == four.summary["rank1"]
