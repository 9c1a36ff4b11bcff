"""The defense sweep in whole audits: its numbers, files and compile reuse; a changed list
reuses its points; a killed sweep resumes."""

import json
import re
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import privjax
from tests.conftest import only_attackers, tiny_config


def _invertible(p, images):  # an orthogonal map of the pixels: it leaks everything
  return images.reshape(images.shape[0], -1) @ p


SWEPT = {"gaussian_noise": {"strengths": (0.25, 64.0)}, "pca_truncate": {"strengths": (64,)}}


def _swept_audit(digits8, workdir, sweep):
  x, y = digits8
  q = np.linalg.qr(np.random.default_rng(0).normal(size=(64, 64)))[0].astype(np.float32)
  cfg = tiny_config()
  cfg.attacks = only_attackers(ridge={"num_features": 128}, nearest={})
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
  if strong["utility"]["knn_rank1"]["ci"][0] <= strong["utility"]["knn_rank1"]["chance"]:
    # The only low point keeps nothing of the features' use: no trade-off, said first.
    assert not s["best_tradeoff"]["useful"]
    assert s["best_tradeoff_line"].startswith("no defense tried keeps utility and reaches low")
    assert "gaussian_noise with sigma=64" in s["best_tradeoff_line"]
  else:
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


def test_sweep_points_reuse_the_compiled_programs(digits8):
  from tests.compiles import counting

  x, y = digits8
  q = np.linalg.qr(np.random.default_rng(1).normal(size=(64, 64)))[0].astype(np.float32)

  def audit(sweep):
    cfg = tiny_config()
    cfg.attacks = only_attackers(ridge={"num_features": 64}, nearest={})
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
  import concurrent.futures
  import signal

  from tests.e2e.conftest import launch, launch_until

  config = tmp_path / "sweep_smoke.py"
  config.write_text(SWEEP_SMOKE)
  # The uninterrupted sweep runs beside the killed one (separate workdirs and processes).
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    pending = pool.submit(launch, config, tmp_path / "whole")
    rc, _ = launch_until(config, tmp_path / "killed", "defense 2/4", sig=signal.SIGKILL)
    whole = pending.result()
  assert whole.returncode == 0, whole.stderr[-2000:]
  assert rc == -signal.SIGKILL
  assert not (tmp_path / "killed" / "sweep.json").exists()
  resumed = launch(config, tmp_path / "killed")
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  lines = [
    line for line in resumed.stderr.splitlines() if re.search(r"privjax: defense \d/4:", line)
  ]
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
  cfg.attacks = only_attackers(ridge={"num_features": 64}, whitebox={"init": "ridge"})
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


def test_a_user_defense_that_uses_its_batch_is_refused_in_one_line(digits8, tmp_path, monkeypatch):
  """The sweep runs a defense one row at a time: one centring on its batch's mean would
  silently give zeros there. The purity probe refuses it at its first point."""
  (tmp_path / "batchy.py").write_text(
    "def centred(features, key, *, strength):\n"
    "  return strength * (features - features.mean(axis=0))\n"
  )
  monkeypatch.syspath_prepend(str(tmp_path))
  x, y = digits8
  q = np.linalg.qr(np.random.default_rng(0).normal(size=(64, 64)))[0].astype(np.float32)
  cfg = tiny_config()
  cfg.attacks = only_attackers(ridge={"num_features": 64}, nearest={})
  cfg.defense = {
    "sweep": {"centred": {"type": "batchy:centred", "param": "strength", "strengths": (1.0,)}}
  }
  with pytest.raises(privjax.ModelError, match=r"^defense centred is not a pure function") as e:
    privjax.assess(
      _invertible,
      jnp.asarray(q),
      x[:400],
      x[400:500],
      config=cfg,
      target_labels=y[400:500],
      aux_labels=y[:400],
      progress=False,
    )
  assert "\n" not in str(e.value) and "beside other rows in a batch" in str(e.value)
