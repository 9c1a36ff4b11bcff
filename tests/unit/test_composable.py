"""The scores compose: rank-1 re-identification, label matches and their chance, the bootstrap
CI with a `jax.random` key, the evaluator's thresholds and SAR@FMR are jnp functions that run
under jit on plain arrays (no mesh) and equal the numpy definitions; `scoring.score` scores
reconstructions in a few lines; `assess` returns every attacker's reconstructions and scores."""

import importlib
import pkgutil

import jax
import ml_collections
import numpy as np
import pytest

import privjax
import privjax.scoring
from privjax.runtime import parallel
from privjax.scoring import api, identity, metrics

FMRS = (0.1, 0.01, 0.001)


def _rank1_reference(s):
  """The numpy definition: the own match strictly above every other, in float64."""
  s = np.asarray(s, np.float64)
  off = s.copy()
  np.fill_diagonal(off, -np.inf)
  return np.diag(s) > off.max(axis=1)


def _label_chance_reference(labels):
  _, counts = np.unique(labels, return_counts=True)
  p = counts / counts.sum()
  return float(np.sum(p * p))


@pytest.fixture(scope="module")
def people():
  """Evaluator embeddings of 40 identities x 5 images, their reconstructions, identities."""
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(40), 5)
  emb = rng.normal(size=(40, 12))[labels] + 0.6 * rng.normal(size=(200, 12))
  recon = emb + 0.5 * rng.normal(size=emb.shape)
  return emb.astype(np.float32), recon.astype(np.float32), labels


def test_rank1_and_label_functions_under_jit_equal_numpy():
  rng = np.random.default_rng(1)
  s = rng.normal(size=(30, 30)).astype(np.float32)
  s[np.arange(30), np.arange(30)] += 1.0
  s[3, 7] = s[3, 3]  # a tie counts against the attacker
  s[5] = s[6]  # two identical queries
  hits = jax.jit(metrics.rank1_hits)(s)
  np.testing.assert_array_equal(hits, _rank1_reference(s))
  assert not hits[3]
  assert float(jax.jit(metrics.rank1_rate)(s)) == pytest.approx(_rank1_reference(s).mean())
  labels = rng.integers(0, 4, 30)
  best = np.argmax(s, axis=1)
  np.testing.assert_array_equal(jax.jit(metrics.label_hits)(best, labels), labels[best] == labels)
  for lab in (labels, np.repeat(np.arange(7), [1, 2, 3, 4, 5, 6, 9]), np.zeros(5, int)):
    got = jax.jit(metrics.label_chance)(lab)
    assert float(got) == pytest.approx(_label_chance_reference(lab), rel=1e-6)
  assert metrics.host_float(metrics.label_chance(np.array([0, 0, 1, 1]))) == 0.5


def test_the_mismatched_baseline_is_one_function_for_numpy_and_jnp():
  s = np.random.default_rng(2).random((9, 9))
  ref = (s.sum(axis=0) - np.diag(s)) / 8
  np.testing.assert_array_equal(metrics.mismatched_baseline(s), ref)  # float64 on the host
  np.testing.assert_allclose(jax.jit(metrics.mismatched_baseline)(s), ref, rtol=1e-6)


@pytest.mark.slow
def test_bootstrap_under_jit_is_deterministic_per_key_and_covers_the_mean(monkeypatch):
  v = np.random.default_rng(3).normal(0.3, 0.1, 80)
  ci = jax.jit(metrics.bootstrap_mean_ci, static_argnames=("samples", "level"))
  a = np.asarray(ci(v, key=jax.random.key(0), samples=500))
  eager = metrics.bootstrap_mean_ci(v, key=jax.random.key(0), samples=500)
  np.testing.assert_array_equal(a, eager)  # one program, jitted or not
  assert not np.array_equal(a, metrics.bootstrap_mean_ci(v, key=jax.random.key(1), samples=500))
  assert a[0] < v.mean() < a[1] and a[1] - a[0] < 0.1
  # `where` resamples among the selected values only.
  everything = metrics.bootstrap_mean_ci(
    v, key=jax.random.key(0), samples=500, where=np.ones(80, bool)
  )
  np.testing.assert_array_equal(a, everything)
  some = np.arange(80) % 3 == 0
  lo, hi = np.asarray(metrics.bootstrap_mean_ci(v, key=jax.random.key(0), samples=500, where=some))
  assert lo < v[some].mean() < hi and (lo, hi) != tuple(a)
  # The interval depends on the key alone, never on how the resamples are batched.
  monkeypatch.setattr(metrics, "_BOOTSTRAP_ELEMENTS", 80 * 7)
  metrics._bootstrap.clear_cache()
  np.testing.assert_array_equal(a, metrics.bootstrap_mean_ci(v, key=jax.random.key(0), samples=500))
  metrics._bootstrap.clear_cache()


def test_thresholds_and_sar_under_jit_equal_the_whole_matrix_computation(people):
  emb, recon, labels = people
  t = np.asarray(jax.jit(identity.thresholds_at_fmr)(emb, labels, np.asarray(FMRS)))
  sim = np.asarray(identity.similarity(emb, emb))  # no mesh: one device
  iu = np.triu_indices(len(labels), 1)
  impostor = np.sort(sim[iu][(labels[:, None] != labels[None, :])[iu]])[::-1]
  for f, tf in zip(FMRS, t, strict=True):
    assert tf == impostor[min(int(np.floor(f * impostor.size)), impostor.size - 1)], f
  sar = jax.jit(identity.sar_at_fmr)(emb, labels, recon, t)
  s = np.asarray(identity.similarity(recon, emb))
  same = labels[:, None] == labels[None, :]
  other = same & ~np.eye(len(labels), dtype=bool)
  for i, tf in enumerate(t):
    np.testing.assert_allclose(sar["type1_sar"][i], np.mean(np.diag(s) > tf), rtol=1e-6)
    type2 = ((s > tf) & other).sum(1) / other.sum(1)
    np.testing.assert_allclose(sar["type2_sar"][i], type2.mean(), rtol=1e-5)
    imp = ((s > tf) & ~same).sum(1) / (~same).sum(1)
    np.testing.assert_allclose(sar["impostor_accept"][i], imp.mean(), rtol=1e-5)
  rank1 = np.where(other, s, -np.inf).max(1) > np.where(~same, s, -np.inf).max(1)
  np.testing.assert_allclose(sar["rank1"], rank1.mean(), rtol=1e-6)
  assert sar["type2"].shape == (200, 3) and sar["type2_eligible"].all()


@pytest.mark.slow
def test_calibrate_and_evaluate_without_a_mesh_equal_the_streamed_path(people):
  emb, recon, labels = people
  common = {"key": jax.random.key(0), "bootstrap_samples": 200}
  alone = identity.calibrate(emb, labels, fmrs=FMRS, **common)
  mesh = parallel.data_mesh()
  streamed = identity.calibrate(emb, labels, fmrs=FMRS, mesh=mesh, batch_size=64, **common)
  np.testing.assert_allclose(alone.thresholds, streamed.thresholds, atol=1e-6)
  assert [r["threshold_error_bound"] for r in alone.summary["thresholds"]] == [0.0] * 3
  judged, _ = identity.evaluate(alone, recon, **common)
  reference, _ = identity.evaluate(streamed, recon, mesh=mesh, batch_size=64, **common)
  for a, b in zip(judged["fmrs"], reference["fmrs"], strict=True):
    for name in ("type1_sar", "type2_sar"):
      assert a[name]["rate"] == pytest.approx(b[name]["rate"], abs=0.01)
      assert a[name]["ci"][0] <= a[name]["rate"] <= a[name]["ci"][1]
  assert judged["rank1"]["rate"] == pytest.approx(reference["rank1"]["rate"], abs=0.01)


@pytest.fixture(scope="module")
def images(digits8):
  x, y = digits8
  targets = x[:40]
  recon = np.clip(targets + np.random.default_rng(4).normal(0, 0.2, targets.shape), 0, 1)
  return targets, recon.astype(np.float32), y[:40]


@pytest.mark.slow
def test_score_in_a_few_lines_under_jit_and_as_the_audit_scores(images):
  targets, recon, labels = images
  key = jax.random.key(0)
  eager = privjax.scoring.score(targets, recon, key=key, labels=labels, bootstrap_samples=300)
  jitted = jax.jit(lambda o, r, k, lab: api.score(o, r, key=k, labels=lab, bootstrap_samples=300))
  traced = jitted(targets, recon, key, labels)
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(traced), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  s = eager.summary()
  assert s["reid_chance"] == 1 / 40 and 0.2 < s["image_reid_rate"] <= 1.0
  assert s["ssim_gain_ci"][0] < s["ssim_gain"] < s["ssim_gain_ci"][1]
  assert s["label_chance"] == pytest.approx(_label_chance_reference(labels), rel=1e-6)
  # The audit's sharded stage on a mesh: the same numbers, the same CI from the same key.
  audit = api.score(
    targets, recon, key=key, labels=labels, bootstrap_samples=300, mesh=parallel.data_mesh()
  )
  for name in ("ssim", "psnr", "mse", "baseline_ssim"):
    np.testing.assert_allclose(getattr(audit, name), getattr(eager, name), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(audit.image_reid_hit, eager.image_reid_hit)
  np.testing.assert_array_equal(audit.best_match, eager.best_match)
  np.testing.assert_allclose(audit.ssim_gain_ci, eager.ssim_gain_ci, atol=1e-5)
  # Another key, another interval; reconstructions that carry nothing gain nothing.
  other = api.score(targets, recon, key=jax.random.key(1), bootstrap_samples=300)
  assert other.summary()["ssim_gain_ci"] != s["ssim_gain_ci"]
  blind = api.score(targets, np.repeat(recon[:1], 40, axis=0), key=key, bootstrap_samples=300)
  assert int(np.sum(blind.image_reid_hit)) <= 1
  assert blind.summary()["ssim_gain"] == pytest.approx(0.0, abs=1e-6)


def test_every_scoring_module_declares_its_public_names():
  for info in pkgutil.iter_modules(privjax.scoring.__path__):
    module = importlib.import_module(f"privjax.scoring.{info.name}")
    assert module.__all__, info.name
    assert all(hasattr(module, name) for name in module.__all__), info.name


@pytest.mark.slow
def test_assess_returns_every_attackers_reconstructions_and_scores(digits8):
  x, y = digits8
  x, y = x[:360], y[:360]
  f = np.tanh(x.reshape(len(x), -1) @ np.random.default_rng(0).normal(size=(64, 16)) / 4.0)
  config = ml_collections.ConfigDict(
    {
      "bootstrap_samples": 100,
      "attacks": {
        "ridge": {"num_features": 40},
        "decoder": {"type": "off"},
        "blend": {"type": "off"},
      },
    }
  )
  report = privjax.assess(
    None,
    None,
    x[:300],
    x[300:],
    aux_features=f[:300],
    target_features=f[300:],
    target_labels=y[300:],
    config=config,
    progress=False,
  )
  rows = report.summary["attacks"]
  ran = [name for name, row in rows.items() if "skipped" not in row]
  assert sorted(report.attacks) == sorted(ran) and {"nearest", "ridge"} <= set(ran)
  for name, result in report.attacks.items():
    assert result.reconstructions.shape == (60, 8, 8, 1)
    assert result.per_image["ssim"].shape == (60,)
    assert result.summary["ssim"] == pytest.approx(result.per_image["ssim"].mean())
    assert result.summary == rows[name]
  deciding = report.attacks[report.summary["deciding_attack"]]
  np.testing.assert_array_equal(deciding.reconstructions, report.reconstructions)
  assert report.summary["label_chance"] == pytest.approx(_label_chance_reference(y[300:]), 1e-7)
