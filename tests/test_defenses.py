"""Defenses, utility and the defense sweep: each defense pure and deterministic, bounds
refused, utility at its chance level, the sweep's numbers, files and compile reuse."""

import json
import re
import shutil

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

import privjax
from privjax import config as config_lib
from privjax import defenses, parallel, utility
from privjax.errors import ConfigError
from tests.conftest import tiny_config

STRENGTHS = {"none": 0.0, "gaussian_noise": 0.5, "quantize": 3, "pca_truncate": 4}
STRENGTHS["normalize_noise"] = 0.5


@pytest.fixture(scope="module")
def features():
  rng = np.random.default_rng(0)
  return (rng.standard_normal((203, 16)) * rng.uniform(0.1, 5, 16) + 2).astype(np.float32)


def _apply(kind, f, strength, key=1, mesh=None, batch_size=64, fit_on=None):
  d = defenses.get(kind)
  params = dict(defenses.fit(d, f if fit_on is None else fit_on), **{d.param: strength})
  return defenses.apply(
    d,
    f,
    jax.random.key(key),
    params,
    mesh=mesh or parallel.data_mesh(),
    batch_size=batch_size,
    name=kind,
  )


@pytest.mark.parametrize("kind", sorted(STRENGTHS))
def test_each_defense_is_pure_and_deterministic_given_its_key(kind, features):
  s = STRENGTHS[kind]
  out = _apply(kind, features, s)
  assert out.shape == features.shape and out.dtype == np.float32
  # The same key: the same features, whatever the batch size or the number of devices.
  np.testing.assert_array_equal(out, _apply(kind, features, s, batch_size=16))
  one = parallel.data_mesh(jax.devices()[:1])
  np.testing.assert_array_equal(out, _apply(kind, features, s, mesh=one, batch_size=32))
  # Row i depends on row i alone (its own key): a subset is the subset's rows.
  np.testing.assert_array_equal(
    out[:50], _apply(kind, features[:50], s, fit_on=features), err_msg=kind
  )
  other = _apply(kind, features, s, key=2)
  if kind in ("gaussian_noise", "normalize_noise"):
    assert np.abs(other - out).max() > 0.1  # another key, other noise
  else:
    np.testing.assert_array_equal(other, out)  # deterministic defenses ignore the key


def test_the_builtin_defenses_do_what_they_say(features):
  std = features.std(axis=0)
  noise = _apply("gaussian_noise", features, 2.0) - features
  np.testing.assert_allclose(noise.std(axis=0) / std, 2.0, rtol=0.2)  # 203 rows
  np.testing.assert_array_equal(_apply("gaussian_noise", features, 0.0), features)
  one_bit = _apply("quantize", features, 1)
  assert all(len(np.unique(one_bit[:, j])) <= 2 for j in range(16))
  fine = _apply("quantize", features, 16)
  assert np.abs(fine - features).max() <= (np.ptp(features, axis=0) / 65535).max()
  np.testing.assert_allclose(_apply("pca_truncate", features, 16), features, atol=2e-5)
  rank = np.linalg.matrix_rank(_apply("pca_truncate", features, 3) - features.mean(0), tol=1e-3)
  assert rank == 3
  unit = _apply("normalize_noise", features, 0.0)
  np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)


def test_one_compiled_program_serves_every_strength(features):
  calls = chex.assert_max_traces(n=1)(
    lambda f, key, *, sigma: f + sigma * jax.random.normal(key, f.shape)
  )
  d = defenses.Defense(calls, "sigma", None, None, "sigma")
  mesh = parallel.data_mesh()
  for sigma in (0.1, 0.5, 2.0, 8.0):  # a retrace would raise
    defenses.apply(
      d, features, jax.random.key(0), {"sigma": sigma}, mesh=mesh, batch_size=64, name="d"
    )


def _checked(sweep, dim=None, **defense):
  c = config_lib.for_images((8, 8, 1), {"defense": {"sweep": sweep, **defense}})
  config_lib.validate(c)
  config_lib.check_sweep(c, dim)


@pytest.mark.parametrize(
  "sweep,dim,match",
  [
    ({"gaussian_noise": {"strengths": (0.5, -1.0)}}, None, r"strengths\[1\]=-1.0: a noise"),
    ({"normalize_noise": {"strengths": (-0.1,)}}, None, "must be >= 0"),
    ({"quantize": {"strengths": (0,)}}, None, r"strengths\[0\]=0: bits per dimension"),
    ({"quantize": {"strengths": (2.5,)}}, None, "must be an integer in"),
    ({"pca_truncate": {"strengths": (8, 65)}}, 64, "more principal directions than the 64"),
    ({"pca_truncate": {"strengths": (0,)}}, None, "integer >= 1"),
    ({"gaussian_noise": {"strengths": ()}}, None, "non-empty list"),
    ({"gaussian_noise": {"strengths": (1, 1)}}, None, "must not repeat"),
    ({"gaussian_noise": {"strengths": ("big",)}}, None, "must be a number"),
    ({"blur": {"strengths": (1,)}}, None, "unknown defense type 'blur'"),
    ({"x": {"type": "no_such_module:fn", "strengths": (1,)}}, None, "cannot import module"),
    ({"gaussian_noise": {"strengths": (1,), "sigma": 2}}, None, "unknown config key"),
  ],
)
def test_bad_defense_settings_are_one_line_config_errors(sweep, dim, match):
  with pytest.raises(ConfigError, match=match) as e:
    _checked(sweep, dim)
  assert "\n" not in str(e.value)


def test_the_sweep_attackers_must_be_running_attackers():
  with pytest.raises(ConfigError, match="'whitebox2' is not a running attacker"):
    _checked({"gaussian_noise": {"strengths": (1.0,)}}, attacks=("ridge", "whitebox2"))


def test_knn_identification_and_the_probe_at_their_chance_levels():
  rng = np.random.default_rng(0)
  mesh = parallel.data_mesh()
  labels = rng.integers(0, 4, 600)
  centres = rng.standard_normal((4, 8)) * 5
  clustered = (centres[labels] + rng.standard_normal((600, 8))).astype(np.float32)
  noise = rng.standard_normal((600, 8)).astype(np.float32)
  split = (np.arange(0, 350), np.arange(350, 400))
  common = {"mesh": mesh, "samples": 200, "seed": 0}
  for f, low, high in ((clustered, 0.95, 1.0), (noise, 0.15, 0.35)):
    knn = utility.knn_rank1(f[:400], labels[:400], f[400:], labels[400:], batch_size=64, **common)
    probe = utility.linear_probe(f[:400], labels[:400], f[400:], labels[400:], split, **common)
    assert low <= knn["rate"] <= high and low <= probe["rate"] <= high, (knn, probe)
    assert 0.2 < knn["chance"] < 0.3 and 0.2 < probe["chance"] < 0.35
    assert knn["ci"][0] <= knn["rate"] <= knn["ci"][1]
  # A target whose label the gallery lacks cannot be identified: excluded and counted.
  knn = utility.knn_rank1(
    clustered[:400],
    labels[:400],
    clustered[400:],
    np.where(labels[400:] == 3, 9, labels[400:]),
    batch_size=64,
    **common,
  )
  assert knn["excluded"] == int((labels[400:] == 3).sum()) and knn["rate"] > 0.95


def _invertible(p, images):  # an orthogonal map of the pixels: it leaks everything
  return images.reshape(images.shape[0], -1) @ p


SWEPT = {"gaussian_noise": {"strengths": (0.25, 64.0)}, "pca_truncate": {"strengths": (64,)}}


def _swept_audit(digits8, workdir, sweep):
  x, y = digits8
  q = np.linalg.qr(np.random.default_rng(0).normal(size=(64, 64)))[0].astype(np.float32)
  cfg = tiny_config()
  cfg.attacks = {"ridge": {"num_features": 128}, "nearest": {}}
  cfg.defense = {"sweep": sweep}
  return privjax.assess(
    _invertible,
    jnp.asarray(q),
    x[:900],
    x[900:1200],
    config=cfg,
    workdir=str(workdir),
    target_labels=y[900:1200],
    aux_labels=y[:900],
    progress=False,
  ).to_dict()


@pytest.fixture(scope="module")
def swept(digits8, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("sweep")
  return _swept_audit(digits8, workdir, SWEPT), workdir


def test_a_changed_defense_list_reuses_the_points_it_still_holds(swept, digits8, tmp_path):
  summary, finished = swept
  workdir = tmp_path / "copy"
  shutil.copytree(finished, workdir)  # the module's other tests read the finished one
  files = {p: p.stat().st_mtime_ns for p in (workdir / "sweep").glob("point-*.npz")}
  # One defense dropped, one strength added: the other points come back unchanged.
  again = _swept_audit(digits8, workdir, {"gaussian_noise": {"strengths": (64.0, 0.25, 1.0)}})[
    "defense"
  ]
  after = {p: p.stat().st_mtime_ns for p in (workdir / "sweep").glob("point-*.npz")}
  assert set(files) < set(after) and len(after) == len(files) + 1
  assert all(after[p] == files[p] for p in files)  # nothing rewritten
  old = {p["strength"]: p for p in summary["defense"]["defenses"]["gaussian_noise"]["points"]}
  new = {p["strength"]: p for p in again["defenses"]["gaussian_noise"]["points"]}
  assert json.dumps(new[64.0]) == json.dumps(old[64.0])
  assert json.dumps(new[0.25]) == json.dumps(old[0.25])
  assert list(again["defenses"]) == ["gaussian_noise"]


def test_keeping_every_principal_direction_reproduces_the_undefended_numbers(swept):
  s = swept[0]["defense"]
  ref, (point,) = s["undefended"], s["defenses"]["pca_truncate"]["points"]
  assert point["risk_level"] == ref["risk_level"] == "high"
  for name, row in ref["attackers"].items():
    for fitted in ("refitted", "non_adaptive"):
      got = point[fitted][name]
      np.testing.assert_allclose(got["ssim_gain"], row["ssim_gain"], atol=2e-3, err_msg=name)
      assert abs(got["image_reid_rate"] - row["image_reid_rate"]) <= 2 / 300, name
  for name in ("knn_rank1", "linear_probe"):
    assert abs(point["utility"][name]["rate"] - ref["utility"][name]["rate"]) <= 1 / 300


def test_overwhelming_noise_leaves_no_leakage_and_no_utility(swept):
  s = swept[0]["defense"]
  weak, strong = s["defenses"]["gaussian_noise"]["points"]
  assert weak["strength"] == 0.25 and weak["risk_level"] == "high"
  assert strong["strength"] == 64.0 and strong["risk_level"] == "low", strong["deciding"]
  for name in ("knn_rank1", "linear_probe"):
    u = strong["utility"][name]
    assert u["ci"][0] <= u["chance"] + 0.05, (name, u)  # at chance, within noise
    assert weak["utility"][name]["rate"] > u["rate"] + 0.3
  # The verdict's attacker is the stronger of the refitted and the undefended-fitted ones.
  for p in (weak, strong):
    assert p["deciding"]["ssim_gain_ci"][0] >= p["refitted_deciding"]["ssim_gain_ci"][0]
    assert p["deciding"]["ssim_gain_ci"][0] >= p["non_adaptive_deciding"]["ssim_gain_ci"][0]
  assert s["best_tradeoff"]["defense"] == "gaussian_noise"
  assert s["best_tradeoff"]["strength"] == 64.0
  assert s["best_tradeoff_line"].startswith("best trade-off: gaussian_noise with sigma=64")
  assert "not proven against all attackers" in s["caveat"]


def test_the_sweep_files_stand_beside_the_report(swept):
  summary, workdir = swept
  on_disk = json.loads((workdir / "sweep.json").read_text())
  assert on_disk == json.loads(json.dumps(summary["defense"]))
  with Image.open(workdir / "privacy_utility.png") as im:
    im.verify()
  assert "Defenses" in (workdir / "report.html").read_text()
  assert len(list((workdir / "sweep").glob("point-*.npz"))) == 4  # 3 points + undefended


def test_a_defense_sweep_config_builds(tmp_path):
  from configs import defense_sweep

  c = defense_sweep.get_config()
  audit_cfg = ml_collections.ConfigDict(c.to_dict())
  for key in ("data", "model", "evaluator"):
    del audit_cfg[key]
  checked = config_lib.for_images((16, 16, 1), audit_cfg)
  config_lib.validate(checked)
  config_lib.check_sweep(checked, dim=c.model.embed_dim)
  assert sum(len(e.strengths) for e in checked.defense.sweep.values()) == 12


def test_sweep_points_reuse_the_compiled_programs(digits8):
  from tests.compiles import counting

  x, y = digits8
  q = np.linalg.qr(np.random.default_rng(1).normal(size=(64, 64)))[0].astype(np.float32)

  def audit(sweep):
    cfg = tiny_config()
    cfg.attacks = {"ridge": {"num_features": 64}, "nearest": {}}
    cfg.defense = {"sweep": sweep}
    with counting() as c:
      privjax.assess(
        _invertible,
        jnp.asarray(q),
        x[:600],
        x[600:800],
        config=cfg,
        target_labels=y[600:800],
        aux_labels=y[:600],
        progress=False,
      )
    return c

  def sweep(*strengths):
    return {
      name: {"strengths": s}
      for name, s in zip(("gaussian_noise", "quantize", "pca_truncate"), strengths, strict=True)
    }

  warm = audit(sweep((0.5,), (4,), (8,)))
  assert warm.count > 0  # the counter sees compilations
  plain = audit({})  # what the audit itself compiles on every call (its jitted embed_fn)
  points = audit(sweep((1.0, 2.0, 4.0), (1, 2, 3), (2, 4, 64)))
  # Nine more points than the warm-up, and not one compilation more than no sweep at all.
  assert points.count == plain.count, sorted(set(points.names) - set(plain.names))


SWEEP_SMOKE = """
import ml_collections

from configs import smoke


def get_config():
  c = smoke.get_config()
  c.evaluator.kind = "off"
  c.attacks = ml_collections.ConfigDict(
    {"ridge": {"num_features": 64, "bandwidths": (1.0,)}, "nearest": {}}
  )
  c.defense.sweep = ml_collections.ConfigDict(
    {"gaussian_noise": {"strengths": (0.5, 2.0, 8.0)}, "quantize": {"strengths": (2,)}}
  )
  return c
"""


def test_a_killed_sweep_resumes_to_the_same_sweep_json(tmp_path):
  import signal

  from tests.conftest import launch, launch_until

  config = tmp_path / "sweep_smoke.py"
  config.write_text(SWEEP_SMOKE)
  whole = launch(config, tmp_path / "whole")
  assert whole.returncode == 0, whole.stderr[-2000:]
  rc, _ = launch_until(config, tmp_path / "killed", "defense 2/4", sig=signal.SIGKILL)
  assert rc == -signal.SIGKILL
  assert not (tmp_path / "killed" / "sweep.json").exists()
  resumed = launch(config, tmp_path / "killed")
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  lines = [line for line in resumed.stderr.splitlines() if re.search(r"\] defense \d/4:", line)]
  assert len(lines) == 4 and all("restored from the workdir" in line for line in lines[:2])
  assert not any("restored" in line for line in lines[2:]), lines
  assert (tmp_path / "killed" / "sweep.json").read_bytes() == (
    tmp_path / "whole" / "sweep.json"
  ).read_bytes()


def test_a_defense_applies_to_stored_features(digits8):
  x, y = digits8
  q = np.linalg.qr(np.random.default_rng(2).normal(size=(64, 64)))[0].astype(np.float32)
  flat = x.reshape(len(x), -1)
  cfg = tiny_config()
  cfg.attacks = {"ridge": {"num_features": 64}, "whitebox": {"init": "ridge"}}
  cfg.defense = {"sweep": {"quantize": {"strengths": (1,)}}}
  r = privjax.assess(
    None,
    None,
    x[:500],
    x[500:700],
    aux_features=flat[:500] @ q,
    target_features=flat[500:700] @ q,
    config=cfg,
    target_labels=y[500:700],
    aux_labels=y[:500],
    progress=False,
  ).to_dict()
  s = r["defense"]
  assert s["attackers"] == ["ridge"]  # the whitebox attacker does not model a defense
  (point,) = s["defenses"]["quantize"]["points"]
  assert point["risk_level"] in ("low", "medium", "high") and "knn_rank1" in point["utility"]
  assert (
    point["refitted"]["ridge"]["ssim_gain"] < s["undefended"]["attackers"]["ridge"]["ssim_gain"]
  )


def test_a_defense_that_fails_or_returns_nan_is_one_line(features):
  mesh = parallel.data_mesh()
  for fn, match in (
    (lambda f, key, *, strength: f * jnp.nan, "defense bad returned non-finite features"),
    (lambda f, key, *, strength: f @ jnp.ones((3, 3)), "defense bad failed on \\[N, 16\\]"),
  ):
    d = defenses.Defense(fn, "strength", None, None, "strength")
    with pytest.raises(privjax.ModelError, match=match) as e:
      defenses.apply(
        d, features, jax.random.key(0), {"strength": 1.0}, mesh=mesh, batch_size=64, name="bad"
      )
    assert "\n" not in str(e.value)


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
