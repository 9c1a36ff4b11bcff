"""The learned defense in whole audits: trained on the defender's own split per strength,
audited by re-fitted attackers like every defense, shown on the page, resumed from the
workdir, and refused in one line by an audit without a defender split."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

import privjax
from privjax.errors import ConfigError
from tests.conftest import only_attackers, tiny_config

LEARNED = {"type": "learned", "strengths": (0.0, 10.0), "hidden": 32, "steps": 200}
NARROW = {"type": "learned", "strengths": (1.0,), "width": 16, "hidden": 0, "steps": 100}


def _model(p, images):  # tanh of a random projection of the pixels: a leaky "model"
  return jnp.tanh(images.reshape(images.shape[0], -1) @ p)


def _audit(digits8, workdir, sweep, *, own=slice(1200, None), shuffle_own=False, **kw):
  x, y = digits8
  proj = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32) / 2
  cfg = tiny_config()
  cfg.attacks = only_attackers(ridge={"num_features": 128}, nearest={})
  cfg.defense = {"sweep": sweep}
  own_labels = y[own]
  if shuffle_own:
    own_labels = np.random.default_rng(1).permutation(own_labels)
  return privjax.assess(
    _model,
    jnp.asarray(proj),
    x[:900],
    x[900:1200],
    config=cfg,
    workdir=None if workdir is None else str(workdir),
    target_labels=y[900:1200],
    aux_labels=y[:900],
    defender_images=None if own is None else x[own],
    defender_labels=None if own is None else own_labels,
    progress=False,
    **kw,
  )


@pytest.fixture(scope="module")
def learned(digits8, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("learned")
  report = _audit(digits8, workdir, {"learned": LEARNED, "narrow": NARROW})
  return report.to_dict()["defense"], workdir


def test_each_strength_trains_on_the_defender_split_and_is_audited_by_refitted_attackers(learned):
  sweep, _ = learned
  entry = sweep["defenses"]["learned"]
  assert entry["trained_on"] == "defender_images: 597 images"
  assert entry["trained_against"] == ["ridge (closed form, linear, refitted on every batch)"]
  p0, p10 = entry["points"]
  assert (p0["strength"], p10["strength"]) == (0.0, 10.0)
  # The trained g hides the pixels from a held-out ridge of its own kind far better at lam 10.
  r2 = [p["training"]["held_out_ridge_r2"]["after"] for p in (p0, p10)]
  assert r2[1] < r2[0] - 0.1, r2
  for p in (p0, p10):  # audited like any point: both ways, with utility
    assert set(p["refitted"]) == set(p["non_adaptive"]) == {"ridge", "nearest"}
    assert p["utility"]["knn_rank1"]["chance"] < p["utility"]["knn_rank1"]["rate"]
  # Less privacy leaks at lam 10 to the attackers it never saw in its loss, too.
  gain = [p["refitted_deciding"]["ssim_gain"] for p in (p0, p10)]
  assert gain[1] < gain[0], gain


def test_a_narrower_g_is_judged_by_the_refitted_attackers_alone(learned):
  (point,) = learned[0]["defenses"]["narrow"]["points"]
  assert point["non_adaptive"] == {
    "skipped": "the defense changes the features' width: no undefended fit reads them"
  }
  assert point["deciding"]["fitted_on"] == "refitted" and point["non_adaptive_deciding"] is None
  assert point["training"]["architecture"] == "linear 32->16"


def test_the_page_says_what_the_defense_was_trained_against_and_audited_with(learned):
  _, workdir = learned
  page = (workdir / "report.html").read_text()
  assert "<b>learned</b> was trained on defender_images: 597 images against ridge" in page
  assert "audited like every defense, by attackers re-fitted from scratch (nearest, ridge)" in page


def test_a_rerun_restores_the_points_and_new_defender_data_retrains_them(learned, digits8):
  sweep, workdir = learned
  files = {p: p.stat().st_mtime_ns for p in (workdir / "sweep").glob("point-*.npz")}
  again = _audit(digits8, workdir, {"learned": LEARNED, "narrow": NARROW}).to_dict()["defense"]
  assert json.dumps(again["defenses"]) == json.dumps(sweep["defenses"])
  assert {p: p.stat().st_mtime_ns for p in (workdir / "sweep").glob("point-*.npz")} == files
  # The defender's labels changed: its points are stale, the undefended reference is not.
  _audit(digits8, workdir, {"narrow": NARROW}, shuffle_own=True)
  after = {p: p.stat().st_mtime_ns for p in (workdir / "sweep").glob("point-*.npz")}
  assert set(files) < set(after) and len(after) == len(files) + 1
  assert all(after[p] == files[p] for p in files)


def test_an_audit_without_a_defender_split_is_refused_before_any_work(digits8, tmp_path):
  with pytest.raises(ConfigError, match=r"^config.defense.sweep.learned learns: it trains on"):
    _audit(digits8, tmp_path, {"learned": LEARNED}, own=None)
  assert os.listdir(tmp_path) == []


def test_a_stored_features_audit_cannot_learn_a_defense(digits8, tmp_path):
  x, y = digits8
  f = x.reshape(len(x), -1)
  cfg = tiny_config()
  cfg.defense = {"sweep": {"learned": LEARNED}}
  with pytest.raises(ConfigError, match=r"a stored-features audit has no model to embed them"):
    privjax.assess(
      None,
      None,
      x[:900],
      x[900:1200],
      aux_features=f[:900],
      target_features=f[900:1200],
      config=cfg,
      workdir=str(tmp_path),
      defender_images=x[1200:],
      defender_labels=y[1200:],
      progress=False,
    )
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("role", ["targets", "aux"])
def test_defender_images_that_are_targets_or_aux_images_are_refused(digits8, tmp_path, role):
  from privjax.errors import DataError

  own = slice(1000, 1100) if role == "targets" else slice(0, 100)  # targets: x[900:1200]
  with pytest.raises(DataError, match=r"^100 of the 100 defender_images are also target or"):
    _audit(digits8, tmp_path, {"learned": LEARNED}, own=own)
  assert os.listdir(tmp_path) == []
