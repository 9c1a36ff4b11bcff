"""Identity leakage by an independent evaluator: thresholds, type I / type II SAR, rank-1."""

import jax
import numpy as np
import pytest

import privjax
from privjax import config as config_lib
from privjax.report import readings
from privjax.runtime import parallel
from privjax.scoring import identity, risk

FMRS = (0.01, 0.001)


COMMON = {"batch_size": 128, "bootstrap_samples": 300, "key": jax.random.key(0)}


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


def _threshold_at(impostor, fmr):
  """The reference: the floor(fmr * M)-th largest (0-based) of all M impostor scores."""
  d = np.sort(np.asarray(impostor, np.float64))[::-1]
  return float(d[min(int(np.floor(fmr * d.size)), d.size - 1)])


def _all_pairs(emb, labels, mesh, batch_size=128):
  """The whole [N, N] similarity (as the devices compute it) and the impostor scores."""
  sim = identity.similarity(emb, emb, mesh=mesh, batch_size=batch_size)
  iu = np.triu_indices(len(labels), 1)
  return sim, sim[iu][(labels[:, None] != labels[None, :])[iu]]


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [8, 128, 1000])
def test_streamed_thresholds_are_the_exact_order_statistics_of_the_impostor_scores(
  people, mesh, batch_size
):
  emb, labels = people
  fmrs = (0.5, 0.1, 0.01, 0.001, 1e-4)
  cal = identity.calibrate(
    emb,
    labels,
    fmrs=fmrs,
    mesh=mesh,
    batch_size=batch_size,
    bootstrap_samples=50,
    key=COMMON["key"],
  )
  _, impostor = _all_pairs(emb, labels, mesh, batch_size)
  for f, t, row in zip(fmrs, cal.thresholds, cal.summary["thresholds"], strict=True):
    # Equal to an impostor score that admits at most the FMR, and no higher than need be.
    assert t == _threshold_at(impostor, f), f
    assert row["threshold_error_bound"] == 0.0
    assert np.sum(impostor > t) <= f * impostor.size
    assert np.sum(impostor >= t) > f * impostor.size - 1
    assert row["realised_fmr"] == pytest.approx(np.mean(impostor > t))


@pytest.mark.slow
def test_tied_scores_give_a_threshold_no_higher_than_the_exact_one(mesh):
  # 40 identities of 3 identical embeddings each on 8 directions: heavy ties everywhere.
  rng = np.random.default_rng(3)
  dirs = rng.normal(size=(8, 6)).astype(np.float32)
  labels = np.repeat(np.arange(40), 3)
  emb = dirs[labels % 8]
  cal = identity.calibrate(emb, labels, fmrs=(0.1, 0.01), mesh=mesh, **COMMON)
  _, impostor = _all_pairs(emb, labels, mesh)
  for f, t in zip((0.1, 0.01), cal.thresholds, strict=True):
    assert t <= _threshold_at(impostor, f) + 2e-7
    assert np.sum(impostor > t + 2e-7) <= f * impostor.size


@pytest.mark.slow
def test_streamed_rates_equal_the_whole_matrix_computation(people, mesh):
  emb, labels = people
  cal = _calibrate(emb, labels, mesh)
  recon = emb + 0.5 * np.random.default_rng(4).normal(size=emb.shape).astype(np.float32)
  summary, scores = identity.evaluate(cal, recon, mesh=mesh, **COMMON)
  sim = identity.similarity(recon, emb, mesh=mesh, batch_size=128)
  same = labels[:, None] == labels[None, :]
  other = same & ~np.eye(len(labels), dtype=bool)
  for f, t in zip(FMRS, cal.thresholds, strict=True):
    row = _row(summary, f)
    assert row["type1_sar"]["rate"] == pytest.approx(np.mean(np.diag(sim) > t))
    type2 = ((sim > t) & other).sum(1) / other.sum(1)
    assert row["type2_sar"]["rate"] == pytest.approx(type2.mean())
    imp = ((sim > t) & ~same).sum(1) / (~same).sum(1)
    assert row["impostor_accept"] == pytest.approx(imp.mean())
  best_genuine = np.where(other, sim, -np.inf).max(1)
  best_impostor = np.where(~same, sim, -np.inf).max(1)
  assert summary["rank1"]["rate"] == pytest.approx(np.mean(best_genuine > best_impostor))
  assert scores["type2_scores"].sum() == other.sum()  # every type-II pair in the histogram
  shown = identity.histograms(cal, scores["type2_scores"])
  assert sum(shown["attack_type2"]) == other.sum()
  assert sum(shown["impostor"]) == cal.summary["impostor_pairs"]
  assert shown["bin_edges"][0] <= sim[other].min() and shown["bin_edges"][-1] >= sim[other].max()


def test_thresholds_come_from_the_originals_alone(people, mesh):
  emb, labels = people
  cal = _calibrate(emb, labels, mesh)
  sim = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  sim = sim @ sim.T
  iu = np.triu_indices(len(labels), 1)
  impostor = sim[iu][(labels[:, None] != labels[None, :])[iu]]
  for f, t, row in zip(FMRS, cal.thresholds, cal.summary["thresholds"], strict=True):
    np.testing.assert_allclose(t, _threshold_at(impostor, f), atol=1e-5)
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_device_count_does_not_move_a_threshold(people):
  emb, labels = people
  one = _calibrate(emb, labels, parallel.data_mesh(jax.devices()[:1]))
  four = _calibrate(emb, labels, parallel.data_mesh())
  np.testing.assert_allclose(one.thresholds, four.thresholds, atol=1e-6)
  assert one.summary["rank1"] == four.summary["rank1"]
