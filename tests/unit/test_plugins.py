"""Every kind of plug-in, a toy of each from outside the package, named by import path:
an attacker, a defense, a per-target metric, a model kind, a data source, a utility."""

import functools
import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import logging as absl_logging

from privjax import attacks, checks
from privjax import config as config_lib
from privjax import settings as settings_lib
from privjax.attacks import runner
from privjax.data import splits as data
from privjax.defenses import transforms as defenses
from privjax.defenses import utility
from privjax.errors import ConfigError, ModelError
from privjax.models import kinds as embedding
from privjax.registry import Registry, import_object
from privjax.runtime import parallel
from privjax.scoring import risk
from privjax.scoring import scores as scoring
from privjax.stages import attack_round
from tests.unit import toy_plugins

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


@pytest.mark.slow
def test_a_metric_reaches_the_scores_the_summary_and_the_verdict(digits8):
  targets = digits8[0][:40]
  recon = np.clip(targets + 0.1, 0, 1)
  settings = _scoring_settings(metrics=(("close", f"{TOY}:mean_abs_error"),))
  sc = scoring.score(recon, targets, settings=settings, mesh=parallel.data_mesh())
  expected = 1 - np.abs(targets - recon).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(sc.per_image["close"], expected, rtol=1e-5)
  # The baseline: each original against other targets' reconstructions, by a numpy reference
  # of every pair at the pairing's shifts.
  every_pair = 1 - np.abs(targets[:, None] - recon[None]).mean(axis=(2, 3, 4))  # [original, recon]
  shifts = scoring.baseline_shifts(40, settings.seed)
  rows = np.arange(40)
  baseline = np.mean([every_pair[rows, (rows + s) % 40] for s in shifts], axis=0)
  np.testing.assert_allclose(sc.per_image["baseline_close"], baseline, rtol=1e-5)
  m = sc.summary()["metrics"]["close"]
  assert m["mean"] == pytest.approx(expected.mean(), rel=1e-5)
  assert m["baseline"] == pytest.approx(baseline.mean(), rel=1e-5)
  assert m["gain"] == pytest.approx(expected.mean() - baseline.mean(), rel=1e-4)
  # ... close to the mean over every mismatched pair, which it estimates.
  off_diagonal = (every_pair.sum() - np.trace(every_pair)) / (40 * 39)
  assert m["baseline"] == pytest.approx(off_diagonal, abs=0.02)
  assert m["gain_ci"][0] < m["gain"] < m["gain_ci"][1]
  thresholds = config_lib.audit_config().risk
  common = {"ssim_gain_ci_low": 0.0, "image_reid_rate": 0.0, "reid_chance": 0.1}
  assert risk.verdict(thresholds=thresholds, **common)[0] == "low"
  level, reasons = risk.verdict(
    thresholds=thresholds, metrics=[("close", m["gain_ci"][0], 0.1, 0.05)], **common
  )
  assert level == "high" and any("metric close gain over its baseline" in r for r in reasons)
  # Thresholds 0 (off): reported only, no vote.
  assert (
    risk.verdict(thresholds=thresholds, metrics=[("close", 0.9, 0.0, 0.0)], **common)[0] == "low"
  )


def test_the_metric_baselines_pairing_is_mismatched_distinct_and_fixed_by_the_seed():
  for n in (2, 3, 9, 10, 500):
    s = scoring.baseline_shifts(n, 0)
    assert len(s) == min(scoring.METRIC_BASELINE_SHIFTS, n - 1) == len(set(s.tolist()))
    assert s.min() >= 1 and s.max() <= n - 1  # never a target against its own reconstruction
    np.testing.assert_array_equal(s, scoring.baseline_shifts(n, 0))
  assert any(
    not np.array_equal(scoring.baseline_shifts(500, 0), scoring.baseline_shifts(500, seed))
    for seed in (1, 2)
  )
  with pytest.raises(ModelError, match="at least 2 targets"):
    scoring.baseline_shifts(1, 0)


def _round(targets, metric_thresholds):
  """A Round with what `_verdict` reads: the targets, config.risk and the metric thresholds."""
  cfg = config_lib.audit_config()
  return attack_round.Round(
    attacks=ml_collections.ConfigDict(),
    targets=targets,
    scoring=_scoring_settings(),
    thresholds=cfg.risk,
    metric_thresholds=metric_thresholds,
    val_fraction=0.1,
    seed=0,
    overwrite=False,
    mesh=parallel.data_mesh(),
    workdir=None,
    model=None,
  )


def test_a_metric_votes_by_its_gain_over_its_baseline_never_by_its_mean(digits8):
  """dlib on faces: a metric that accepts any image scores high on reconstructions that are
  other targets' images; only its gain over the mismatched pairs may raise the verdict."""
  x = digits8[0]
  targets = x[:60]
  settings = _scoring_settings(
    metrics=(("close", f"{TOY}:mean_abs_error"), ("anything", f"{TOY}:always_one"))
  )
  mesh = parallel.data_mesh()
  # No information: every target gets another auxiliary digit (what a nearest-neighbour
  # attacker of useless features returns). Raw means ~0.8 and 1.0, far above the thresholds.
  blind = scoring.score(x[100:160], targets, settings=settings, mesh=mesh)
  # Perfect reconstructions: the same metric, now with a gain.
  exact = scoring.score(targets, targets, settings=settings, mesh=mesh)
  for sc in (blind, exact):
    anything = sc.summary()["metrics"]["anything"]
    assert anything["mean"] == anything["baseline"] == 1.0 and anything["gain_ci"] == [0.0, 0.0]
  close = blind.summary()["metrics"]["close"]
  assert close["mean"] > 0.5 and close["gain_ci"][0] < 0.05
  assert exact.summary()["metrics"]["close"]["gain_ci"][0] > 0.1
  thresholds = (("close", 0.1, 0.05), ("anything", 0.5, 0.1))
  level, reasons = _round(targets, thresholds)._verdict(blind)
  assert level == "low", reasons
  assert any(
    "metric anything gain over its baseline, 95% CI lower bound 0.000" in r for r in reasons
  )
  level, reasons = _round(targets, thresholds)._verdict(exact)
  assert level == "high" and any("metric close gain" in r for r in reasons)
  assert not any("metric anything" in r for r in reasons)


def test_a_metric_that_returns_the_wrong_shape_is_one_line(digits8):
  targets = digits8[0][:20]
  settings = _scoring_settings(metrics=(("bad", f"{TOY}:scale"),))
  with pytest.raises(ModelError, match="metric 'bad'"):
    scoring.score(targets, targets, settings=settings, mesh=parallel.data_mesh())
  settings = _scoring_settings(metrics=(("bad", f"{TOY}:per_pixel_error"),))
  with pytest.raises(ModelError, match=r"must return one finite number per image, got shape \(20,"):
    scoring.score(targets, targets, settings=settings, mesh=parallel.data_mesh())


@pytest.mark.parametrize(
  "toy,line",
  [
    ("metric_that_raises", "raised RuntimeError: the toy metric broke"),
    ("metric_that_divides_by_zero", "raised ZeroDivisionError: integer division"),
  ],
)
def test_a_metric_that_raises_anything_is_one_line_naming_it(digits8, toy, line, caplog):
  """(One that fails when it runs, in a host callback, is tests/e2e/test_plugins.py's: JAX
  keeps its failed tokens for the process's life.)"""
  targets = digits8[0][:20]
  settings = _scoring_settings(metrics=(("broken", f"{TOY}:{toy}"),))
  absl = absl_logging.get_absl_logger()
  level = absl.level
  try:
    absl.setLevel(logging.DEBUG)  # --verbosity=1: the metric's traceback is logged
    with caplog.at_level(logging.DEBUG), pytest.raises(ModelError) as e:
      scoring.score(targets, targets, settings=settings, mesh=parallel.data_mesh())
  finally:
    absl.setLevel(level)
  message = str(e.value)
  assert message.startswith(f"metric 'broken' ({TOY}:{toy}) raised "), message
  assert line in message and "--verbosity=1 logs its traceback" in message
  assert "\n" not in message and "Traceback" not in message
  logged = [r for r in caplog.records if "metric 'broken' raised" in r.getMessage()]
  assert logged and logged[0].exc_info is not None


def test_a_metric_that_cannot_score_the_images_is_refused_before_any_work():
  def resolve(**metrics):
    return config_lib.resolve((8, 8, 1), ml_collections.ConfigDict({"metrics": metrics}))

  with pytest.raises(ConfigError) as e:
    resolve(broken={"type": f"{TOY}:metric_that_raises"})
  assert str(e.value).startswith(
    f"config.metrics.broken on 8x8x1 images ({TOY}:metric_that_raises) raised RuntimeError: "
    "the toy metric broke"
  )
  assert "\n" not in str(e.value)
  with pytest.raises(ConfigError, match=r"must return one number per image, \[B\]: got \(2, 8"):
    resolve(bad={"type": f"{TOY}:per_pixel_error"})
  for taken in ("ssim", "baseline_ssim", "label"):
    with pytest.raises(ConfigError, match=f"config.metrics.{taken}: the name of one of privjax"):
      resolve(**{taken: {"type": f"{TOY}:mean_abs_error"}})
  with pytest.raises(
    ConfigError, match="config.metrics.close: its baseline's per_image.csv column"
  ):
    resolve(
      close={"type": f"{TOY}:mean_abs_error"}, baseline_close={"type": f"{TOY}:mean_abs_error"}
    )
  # A metric that traces fine passes (its failure on the host is scoring's one line).
  resolve(late={"type": f"{TOY}:metric_that_fails_on_the_host"})


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


@pytest.mark.slow
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


@pytest.mark.parametrize(("toy", "width"), [("widen", 3), ("narrow", 1)])
def test_a_defense_may_change_the_feature_width(toy, width):
  d = defenses.get(f"{TOY}:{toy}", "strength", field="defense.sweep.toy.type")
  f = np.arange(12, dtype=np.float32).reshape(6, 2)
  out = defenses.apply(
    d, f, jax.random.key(0), {"strength": 1.0}, mesh=parallel.data_mesh(), batch_size=4, name="toy"
  )
  assert out.shape == (6, width)
  np.testing.assert_allclose(out[:, :1], f[:, :1])


def test_a_defense_that_returns_no_rows_is_one_line():
  d = defenses.get(f"{TOY}:flatten", "strength", field="defense.sweep.toy.type")
  f = np.arange(12, dtype=np.float32).reshape(6, 2)
  with pytest.raises(ModelError, match=r"defense toy must return one feature vector per row"):
    defenses.apply(
      d,
      f,
      jax.random.key(0),
      {"strength": 1.0},
      mesh=parallel.data_mesh(),
      batch_size=4,
      name="toy",
    )


# --- A user's plug-in declared as a built-in is: defaults, checks, capabilities ----------


def _check_declared(name, cfg, names):
  """The declared toy attacker's own check, as a built-in's: one ConfigError line."""
  del names
  checks.positive_int(f"attacks.{name}.hidden", cfg.hidden)


@attacks.register(
  "toy_declared",
  defaults={"hidden": 4, "gain": 1.0},
  check=_check_declared,
  checkpoints=True,
  models_defense=False,
)
def declared(aux, ctx, cfg):
  """An attacker declared from outside the package: the mean auxiliary image times
  cfg.gain; its info says whether the run gave it a checkpoint directory."""
  mean = aux.images[aux.train].mean(axis=0) * cfg.gain
  return attacks.Fitted(
    lambda f: np.broadcast_to(mean, (len(f), *mean.shape)),
    {"hidden": cfg.hidden, "checkpoint_dir": ctx.checkpoint_dir is not None},
  )


DECLARED = f"{__name__}:declared"


def test_a_declared_attacker_by_import_path_gets_its_defaults_checks_and_capabilities():
  cfg = config_lib.resolve(
    (8, 8, 1), ml_collections.ConfigDict({"attacks": {"mine": {"type": DECLARED}}})
  )
  assert cfg.attacks.mine.to_dict() == {"type": DECLARED, "hidden": 4, "gain": 1.0}
  assert attacks.capabilities(DECLARED) == attacks.Capabilities(
    checkpoints=True, models_defense=False
  )
  assert "mine" not in settings_lib.sweep_attackers(cfg)  # models_defense=False
  with pytest.raises(ConfigError, match=r"^config.attacks.mine.hidden must be a positive integer"):
    config_lib.resolve(
      (8, 8, 1),
      ml_collections.ConfigDict({"attacks": {"mine": {"type": DECLARED, "hidden": 0}}}),
    )
  with pytest.raises(
    ConfigError, match=r"^unknown config key 'attacks.mine.hiden'; known keys: \['gain', 'hidden'\]"
  ):
    config_lib.resolve(
      (8, 8, 1),
      ml_collections.ConfigDict({"attacks": {"mine": {"type": DECLARED, "hiden": 8}}}),
    )
  # Undeclared, an import path keeps its settings as given and each kind's defaults.
  assert attacks.capabilities(f"{TOY}:mean_image") == attacks.Capabilities()
  assert "toy_declared" not in attacks.builtin_names()


def test_a_declared_attacker_runs_with_its_checkpoint_directory(digits8, tmp_path):
  images = digits8[0][:80]
  features = np.random.default_rng(0).normal(size=(80, 5)).astype(np.float32)
  cfg = config_lib.for_images(
    (8, 8, 1), ml_collections.ConfigDict({"attacks": {"mine": {"type": DECLARED, "gain": 0.5}}})
  )
  aux = attacks.AuxSet(features[:60], images[:60], np.arange(54), np.arange(54, 60))
  (out,) = runner.run_all(
    ml_collections.ConfigDict({"mine": cfg.attacks.mine.to_dict()}),
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
    workdir=str(tmp_path),
    overwrite=False,
  )
  np.testing.assert_allclose(out.reconstructions[0], images[:54].mean(axis=0) * 0.5, rtol=1e-6)
  assert out.info == {"hidden": 4, "checkpoint_dir": True}
  assert (tmp_path / "checkpoints" / "mine").is_dir()


def test_a_function_object_in_the_config_is_named_by_its_import_path():
  cfg = config_lib.resolve(
    (8, 8, 1),
    ml_collections.ConfigDict(
      {
        "attacks": {"mine": {"type": declared, "hidden": 2}},
        "metrics": {"close": {"type": toy_plugins.mean_abs_error, "high": 0.1}},
        "defense": {"sweep": {"scaled": {"type": toy_plugins.scale, "strengths": (0.5,)}}},
      }
    ),
  )
  assert cfg.attacks.mine.to_dict() == {"type": DECLARED, "hidden": 2, "gain": 1.0}
  assert cfg.metrics.close.type == f"{TOY}:mean_abs_error"
  assert cfg.defense.sweep.scaled.type == f"{TOY}:scale"
  # One no import path reaches (a lambda, a function defined in a function) is the same
  # object by the path it is given; a second one of the same path gets its own.
  first = lambda originals, reconstructions: (
    1.0 - jnp.abs(originals - reconstructions).mean(axis=(1, 2, 3))
  )
  second = lambda originals, reconstructions: jnp.ones(originals.shape[:1])
  cfg = config_lib.resolve(
    (8, 8, 1),
    ml_collections.ConfigDict({"metrics": {"a": {"type": first}, "b": {"type": second}}}),
  )
  a, b = cfg.metrics.a.type, cfg.metrics.b.type
  assert a.endswith("<locals>.<lambda>") and b == f"{a}#2"
  assert scoring.METRICS.get(a, field="metrics.a.type").fn is first
  assert scoring.METRICS.get(b, field="metrics.b.type").fn is second
  with pytest.raises(ConfigError, match=r"^config.metrics.p.type must be a function, a class"):
    config_lib.resolve(
      (8, 8, 1),
      ml_collections.ConfigDict({"metrics": {"p": {"type": functools.partial(first)}}}),
    )


def test_a_users_plugin_may_not_take_a_builtins_name():
  def ridge(aux, ctx, cfg):
    del aux, ctx, cfg

  with pytest.raises(ConfigError, match="attack 'ridge' is privjax's own: register"):
    attacks.register("ridge")(ridge)
  assert attacks.get("ridge").__module__ == "privjax.attacks.ridge"


TOYS = Registry("toy")


@TOYS.register("answer", answer=42)
def answer():
  """A plug-in of a toy kind, registered from outside the package with a declaration."""
  return 42


def test_the_registry_finds_a_declared_plugin_by_path_and_keeps_its_errors_the_users():
  path = f"{__name__}:answer"
  for name in (path, answer):  # its import path, or the function itself
    found = TOYS.get(name, field="toy.type")
    assert found.fn is answer and found.declared == {"answer": 42} and found.name == path
    assert not found.builtin  # what it raises stays the user's: one line naming it
  assert path in TOYS and answer in TOYS and f"{TOY}:scale" not in TOYS
  assert f"{TOY}:nope" not in TOYS  # (the error is get's, one line)
  assert TOYS.names() == []  # the built-ins' names
  undeclared = TOYS.get(f"{TOY}:scale", field="toy.type")
  assert undeclared.declared == {} and not undeclared.builtin
  builtin = defenses.DEFENSES.get("privjax.defenses.transforms:quantize", field="d.type")
  assert (
    builtin.builtin and builtin.declared == defenses.DEFENSES.get("quantize", field="").declared
  )
  with pytest.raises(ConfigError, match=r"^unknown toy type 'nope': expected one of \[\] or a"):
    TOYS.get("nope", field="toy.type")
