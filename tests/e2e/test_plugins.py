"""A per-target metric registered from outside the package, through a whole audit: its
columns (value and baseline) in per_image.csv, its mean beside its no-information baseline
in every attacker's row of report.json and in report.html, its vote in the verdict by its
gain over that baseline; and from the command line, a metric that fails is one line."""

import csv
import json

import ml_collections
import numpy as np
import pytest

import privjax
from tests.e2e.conftest import SMOKE_OVERRIDES, last_line, launch

TOY = "tests.unit.toy_plugins"


def _project(params, images):
  return images.reshape(images.shape[0], -1) @ params


def test_a_metric_reaches_every_output_and_votes_by_its_gain_over_its_baseline(digits8, tmp_path):
  x, _ = digits8
  # Features that carry nothing: every attacker is low on SSIM and re-identification.
  rng = np.random.default_rng(0)
  aux_f, tgt_f = rng.normal(size=(300, 8)), rng.normal(size=(60, 8))
  off = {n: {"type": "off"} for n in ("decoder", "whitebox")}
  cfg = ml_collections.ConfigDict(
    {
      "attacks": off,
      "bootstrap_samples": 100,
      # 1 - mean |error| of a mean-like image is ~0.8, far above "high", but it is as high
      # against other targets' originals: no gain, no vote (dlib_accepts on faces).
      "metrics": {"close": {"type": f"{TOY}:mean_abs_error", "high": 0.05, "medium": 0.03}},
    }
  )

  def audit(aux_features, target_features, **kw):
    return privjax.assess(
      None,
      None,
      x[:300],
      x[300:360],
      aux_features=aux_features,
      target_features=target_features,
      config=cfg,
      progress=False,
      **kw,
    )

  report = audit(aux_f, tgt_f, workdir=str(tmp_path))
  r = json.loads((tmp_path / "report.json").read_text())
  for name in ("ridge", "nearest"):
    m = r["attacks"][name]["metrics"]["close"]
    assert 0.5 < m["mean"] <= 1.0 and 0.5 < m["baseline"] <= 1.0
    assert m["gain"] == pytest.approx(m["mean"] - m["baseline"], abs=1e-9)
    assert m["gain_ci"][0] < 0.03 < m["mean"]
  assert r["risk_level"] == "low" == report.risk_level
  assert any("metric close gain over its baseline" in reason for reason in r["risk_reasons"])
  assert "mismatched pairs" in r["metric_baseline"]
  with open(tmp_path / "per_image.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 60
  assert all(0.0 <= float(row["close"]) <= 1.0 for row in rows)
  assert all(0.0 <= float(row["baseline_close"]) <= 1.0 for row in rows)
  page = (tmp_path / "report.html").read_text()
  assert "<th>close vs baseline, gain (95% CI)</th>" in page
  deciding = r["metrics"]["close"]
  assert f"{deciding['mean']:.3f} vs {deciding['baseline']:.3f}, gain" in page
  # Features that carry the images (8 random projections of the pixels): the metric gains
  # over its baseline and votes. SSIM and image re-id are off (thresholds of 1: image re-id
  # is ~0.4 here) so that the vote shows as the metric's.
  cfg.risk = {f"{lv}_{m}": 1.0 for lv in ("high", "medium") for m in ("ssim_gain", "image_reid")}
  f = x.reshape(len(x), -1) @ rng.normal(size=(64, 8))
  leaky = audit(f[:300], f[300:360]).to_dict()
  assert leaky["metrics"]["close"]["gain_ci"][0] >= 0.05
  assert leaky["risk_level"] == "high"
  assert any("metric close gain over its baseline" in reason for reason in leaky["risk_reasons"])
  # Without thresholds the metric is reported, and the verdict is the other measures'.
  cfg.metrics.close.high = cfg.metrics.close.medium = 0.0
  quiet = audit(f[:300], f[300:360]).to_dict()
  assert quiet["risk_level"] == "low" and "metrics" in quiet["attacks"]["ridge"]


_BROKEN_METRIC = """
import ml_collections

from configs import smoke


def get_config():
  c = smoke.get_config()
  c.metrics = ml_collections.ConfigDict({{"broken": {{"type": "{type}"}}}})
  for name in ("decoder", "ridge", "whitebox", "blend"):
    c.attacks[name].type = "off"
  return c
"""


def _broken_config(tmp_path, metric_type):
  path = tmp_path / "broken.py"
  path.write_text(_BROKEN_METRIC.format(type=metric_type))
  return str(path)


@pytest.mark.parametrize(
  "metric_type,line",
  [
    (
      f"{TOY}:metric_that_raises",
      f"config.metrics.broken on 8x8x1 images ({TOY}:metric_that_raises) raised RuntimeError: "
      "the toy metric broke (--verbosity=1 logs its traceback)",
    ),
    (
      f"{TOY}:metric_that_divides_by_zero",
      f"({TOY}:metric_that_divides_by_zero) raised ZeroDivisionError: integer division",
    ),
    # dlib's encoder on 8x8 grey digits: refused, not judged.
    (
      "privjax.models.faces:dlib_accepts",
      "raised ValueError: dlib_accepts judges 150x150 RGB face chips",
    ),
  ],
)
def test_a_metric_that_fails_on_the_images_is_one_line_before_any_work(
  tmp_path, launch_here, metric_type, line
):
  workdir = tmp_path / "wd"
  result = launch_here(_broken_config(tmp_path, metric_type), workdir)
  assert result.returncode == 2, result.stderr[-3000:]
  assert line in last_line(result) and "Traceback" not in result.stderr
  assert not workdir.exists()


def test_a_metric_that_fails_when_it_runs_is_one_line(tmp_path):
  """Its host callback raises inside the jitted, sharded scoring: a fresh process (JAX keeps
  the failed callback's tokens until exit, and its exit hooks must print nothing either)."""
  result = launch(
    _broken_config(tmp_path, f"{TOY}:metric_that_fails_on_the_host"),
    tmp_path / "wd",
    *SMOKE_OVERRIDES,
  )
  assert result.returncode == 2, result.stderr[-3000:]
  assert last_line(result).startswith(
    f"privjax: error: metric 'broken' ({TOY}:metric_that_fails_on_the_host) raised "
    "JaxRuntimeError: "
  )
  assert "OSError: the toy metric's service is down" in last_line(result)
  assert "Traceback" not in result.stderr


_USER_ATTACKER = '''
"""A user's attacker, declared as a built-in is: defaults, a check, a checkpoint directory."""

import numpy as np

from privjax import attacks, checks

DEFAULTS = {
  "gain": 1.0,  # Times the mean auxiliary image.
  "hidden": 64,  # Unused: a setting with its default.
}


def check(name, cfg, names):
  checks.number(f"attacks.{name}.gain", cfg.gain, 0.0, 1.0)


@attacks.register("user_mean", defaults=DEFAULTS, check=check, checkpoints=True)
def mean(aux, ctx, cfg):
  image = aux.images[aux.train].mean(axis=0) * cfg.gain
  return attacks.Fitted(
    lambda f: np.broadcast_to(image, (len(f), *image.shape)),
    {"checkpoint_dir": ctx.checkpoint_dir},
  )
'''


def test_the_command_line_adds_a_declared_attacker_by_import_path(tmp_path, launch_here):
  (tmp_path / "user_attacker.py").write_text(_USER_ATTACKER)
  only = [f"--config.attacks.{n}.type=off" for n in ("decoder", "whitebox", "blend")]
  flags = ["--config.attacks.mine.type=user_attacker:mean", "--config.attacks.mine.gain=0.5"]
  workdir = tmp_path / "wd"
  result = launch_here("configs/smoke.py", workdir, *only, *flags, pythonpath=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  r = json.loads((workdir / "report.json").read_text())
  assert r["config"]["attacks"]["mine"] == {"type": "user_attacker:mean", "gain": 0.5, "hidden": 64}
  assert r["attacks"]["mine"]["info"]["checkpoint_dir"] == str(workdir / "checkpoints" / "mine")
  # Its own check, one line, before any work.
  again = launch_here(
    "configs/smoke.py",
    tmp_path / "wd2",
    *flags[:1],
    "--config.attacks.mine.gain=2",
    pythonpath=tmp_path,
  )
  assert again.returncode == 2
  assert (
    last_line(again)
    == "privjax: error: config.attacks.mine.gain must be a number in [0.0, 1.0], got 2"
  )
