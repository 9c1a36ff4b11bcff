"""Every kind of plug-in, a toy of each from outside the package, named by import path:
an attacker, a defense, a per-target metric, a model kind, a data source, a utility."""

import jax
import ml_collections
import numpy as np
import pytest

from privjax import attacks, data, defenses, embedding, parallel, risk, scoring, utility
from privjax import config as config_lib
from privjax.attacks import runner
from privjax.errors import ConfigError, ModelError
from privjax.registry import import_object

TOY = "tests.unit.toy_plugins"


def _scoring_settings(**kw):
  base = {
    "filter_size": 3,
    "filter_sigma": 0.5,
    "batch_size": 32,
    "bootstrap_samples": 100,
    "seed": 0,
    "exact_max_targets": 1000,
    "shortlist": 8,
    "baseline_samples": 8,
  }
  return scoring.Settings(**dict(base, **kw))


def test_an_attacker_by_import_path_runs_with_its_own_settings(digits8):
  images = digits8[0][:80]
  features = np.random.default_rng(0).normal(size=(80, 5)).astype(np.float32)
  cfg = config_lib.for_images(
    (8, 8, 1),
    ml_collections.ConfigDict({"attacks": {"toy": {"type": f"{TOY}:mean_image", "gain": 0.5}}}),
  )
  assert set(cfg.attacks) == {"decoder", "ridge", "nearest", "whitebox", "blend", "toy"}  # merged
  only = ml_collections.ConfigDict({"toy": cfg.attacks.toy.to_dict()})
  aux = attacks.AuxSet(features[:60], images[:60], np.arange(54), np.arange(54, 60))
  (out,) = runner.run_all(
    only,
    aux,
    features[60:],
    context={
      "mesh": parallel.data_mesh(),
      "seed": 0,
      "eval_batch_size": 32,
      "filter_size": 3,
      "filter_sigma": 0.5,
      "model": None,
    },
    data_key="k",
    workdir=None,
    overwrite=False,
  )
  np.testing.assert_allclose(out.reconstructions[0], images[:54].mean(axis=0) * 0.5, rtol=1e-6)
  assert out.info == {"gain": 0.5} and attacks.capabilities(f"{TOY}:mean_image").models_defense


def _toy_attack(digits8, **entry):
  images = digits8[0][:80]
  features = np.random.default_rng(0).normal(size=(80, 5)).astype(np.float32)
  aux = attacks.AuxSet(features[:60], images[:60], np.arange(54), np.arange(54, 60))
  only = ml_collections.ConfigDict({"toy": dict(entry, type=f"{TOY}:mean_image_as")})
  (out,) = runner.run_all(
    only,
    aux,
    features[60:],
    context={
      "mesh": parallel.data_mesh(),
      "seed": 0,
      "eval_batch_size": 32,
      "filter_size": 3,
      "filter_sigma": 0.5,
      "model": None,
    },
    data_key="k",
    workdir=None,
    overwrite=False,
  )
  return out, images[:54].mean(axis=0)


def test_an_attackers_integer_reconstructions_are_read_by_the_pixel_rule(digits8):
  out, mean = _toy_attack(digits8, form="uint8")
  np.testing.assert_allclose(out.reconstructions[0], mean, atol=0.5 / 255 + 1e-6)


@pytest.mark.parametrize(
  "form,message",
  [
    ("float255", r"attack 'toy'\'s reconstructions must be scaled to \[0, 1\], got values in"),
    ("wrong_shape", r"attack 'toy' returned reconstructions of shape \(20, 4, 8, 1\)"),
    ("none", "attack 'toy' returned NoneType for its reconstructions"),
    ("raises", "RuntimeError: the toy attacker broke"),
  ],
)
def test_an_attackers_bad_reconstructions_are_one_line(digits8, form, message):
  with pytest.raises(ModelError, match=message) as e:
    _toy_attack(digits8, form=form)
  assert "\n" not in str(e.value)


def test_an_attacker_by_a_missing_import_path_is_one_line():
  with pytest.raises(ConfigError, match="config.attacks.x.type='tests.unit.toy_plugins:nope'"):
    config_lib.resolve(
      (8, 8, 1), ml_collections.ConfigDict({"attacks": {"x": {"type": f"{TOY}:nope"}}})
    )


def test_a_defense_by_import_path_applies_with_its_strength_keyword():
  d = defenses.get(f"{TOY}:scale", "strength", field="defense.sweep.toy.type")
  f = np.arange(12, dtype=np.float32).reshape(6, 2)
  out = defenses.apply(
    d, f, jax.random.key(0), {"strength": 2.0}, mesh=parallel.data_mesh(), batch_size=4, name="toy"
  )
  np.testing.assert_allclose(out, 2 * f)


def test_a_metric_reaches_the_scores_the_summary_and_the_verdict(digits8):
  targets = digits8[0][:40]
  recon = np.clip(targets + 0.1, 0, 1)
  settings = _scoring_settings(metrics=(("close", f"{TOY}:mean_abs_error"),))
  sc = scoring.score(recon, targets, settings=settings, mesh=parallel.data_mesh())
  expected = 1 - np.abs(targets - recon).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(sc.per_image["close"], expected, rtol=1e-5)
  assert sc.summary()["metrics"]["close"] == pytest.approx(expected.mean(), rel=1e-5)
  thresholds = config_lib.audit_config().risk
  common = {"ssim_gain_ci_low": 0.0, "image_reid_rate": 0.0, "reid_chance": 0.1}
  assert risk.verdict(thresholds=thresholds, **common)[0] == "low"
  level, reasons = risk.verdict(
    thresholds=thresholds, metrics=[("close", float(expected.mean()), 0.5, 0.2)], **common
  )
  assert level == "high" and any("metric close" in r for r in reasons)
  # Thresholds 0 (off): reported only, no vote.
  assert (
    risk.verdict(thresholds=thresholds, metrics=[("close", 0.9, 0.0, 0.0)], **common)[0] == "low"
  )


def test_a_metric_that_returns_the_wrong_shape_is_one_line(digits8):
  targets = digits8[0][:20]
  settings = _scoring_settings(metrics=(("bad", f"{TOY}:scale"),))
  with pytest.raises(ModelError, match="metric 'bad'"):
    scoring.score(targets, targets, settings=settings, mesh=parallel.data_mesh())


def test_a_model_kind_by_import_path_loads_and_is_checked():
  cfg = ml_collections.ConfigDict({"model": {"kind": f"{TOY}:flat_model", "width": 6}})
  embedding.validate(cfg.model)
  embed_fn, params, info = embedding.load(cfg, "model", (8, 8, 1))
  assert embed_fn(params, np.zeros((3, 8, 8, 1), np.float32)).shape == (3, 6)
  assert info == {"toy": "flat", "width": 6}
  with pytest.raises(ConfigError, match="config.model.kind must be one of"):
    embedding.validate(ml_collections.ConfigDict({"kind": "nope"}))


def test_a_data_source_by_import_path_is_split_into_roles():
  d = {
    "source": f"{TOY}:stripes",
    "model_train_split": "all[:20]",
    "aux_split": "all[20:40]",
    "target_split": "all[40:]",
    "split_seed": 0,
    "image_size": 0,
    "channels": 0,
    "center_crop": False,
    "crop_fraction": 1.0,
    "name": "",
    "path": "",
  }
  loaded = data.load(ml_collections.ConfigDict(d))
  assert loaded.aux.images.shape == (20, 8, 8, 1) and loaded.targets.images.shape == (20, 8, 8, 1)
  assert set(np.unique(loaded.targets.labels)) <= {0, 1, 2}
  bad = dict(d, source=f"{TOY}:scale")  # returns no splits
  with pytest.raises(Exception, match="data source"):
    data.load(ml_collections.ConfigDict(bad))


def test_a_utility_by_import_path_is_measured_beside_the_builtins():
  rng = np.random.default_rng(0)
  aux, tgt = rng.normal(size=(40, 4)), 2 * rng.normal(size=(20, 4))
  labels = np.arange(60) % 2
  got = utility.measure(
    aux,
    labels[:40],
    tgt,
    labels[40:],
    split=(np.arange(30), np.arange(30, 40)),
    user_fn=import_object(f"{TOY}:feature_norm_ratio", field="defense.utility"),
    mesh=parallel.data_mesh(),
    samples=100,
    seed=0,
    batch_size=16,
  )
  assert list(got) == ["knn_rank1", "linear_probe", "user"]
  assert got["user"]["norm_ratio"] == pytest.approx(2.0, rel=0.3)


def test_a_utility_that_raises_is_one_line():
  rng = np.random.default_rng(0)
  labels = np.arange(60) % 2
  with pytest.raises(ModelError, match="config.defense.utility .* raised ZeroDivisionError") as e:
    utility.measure(
      rng.normal(size=(40, 4)),
      labels[:40],
      rng.normal(size=(20, 4)),
      labels[40:],
      split=(np.arange(30), np.arange(30, 40)),
      user_fn=import_object(f"{TOY}:broken_utility", field="defense.utility"),
      mesh=parallel.data_mesh(),
      samples=100,
      seed=0,
      batch_size=16,
    )
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("toy", ["widen", "narrow"])
def test_a_defense_that_changes_the_feature_width_is_one_line(toy):
  d = defenses.get(f"{TOY}:{toy}", "strength", field="defense.sweep.toy.type")
  f = np.arange(12, dtype=np.float32).reshape(6, 2)
  with pytest.raises(ModelError, match=r"defense toy must return features of the shape it was"):
    defenses.apply(
      d,
      f,
      jax.random.key(0),
      {"strength": 1.0},
      mesh=parallel.data_mesh(),
      batch_size=4,
      name="toy",
    )
