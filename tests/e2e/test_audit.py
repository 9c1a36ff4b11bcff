"""The Python API (privjax.assess): the verdict's sanity on known embeddings, the report
contract, bad input, progress."""

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import privjax
from tests.conftest import only_attackers, tiny_config

REQUIRED_KEYS = {
  "ssim",
  "ssim_per_image",
  "psnr",
  "baseline_ssim",
  "ssim_gain",
  "ssim_gain_ci",
  "reid_rate",
  "image_reid_rate",
  "reid_chance",
  "risk_level",
}


def _orthogonal(d, seed=0):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
  return jnp.asarray(q, jnp.float32)


def _project(params, images):
  return images.reshape(images.shape[0], -1) @ params


@pytest.fixture(scope="module")
def invertible_report(digits8):
  x, y = digits8
  return privjax.assess(
    _project,
    _orthogonal(64),
    x[:1200],
    x[1200:1400],
    config=tiny_config(num_steps=800),
    target_labels=y[1200:1400],
  )


def test_invertible_embedding_is_high_risk(invertible_report):
  r = invertible_report.to_dict()
  assert r["risk_level"] == "high"
  assert r["ssim"] > 0.9
  assert r["ssim_gain_ci"][0] > 0.5
  assert r["image_reid_rate"] > 0.9
  assert r["image_label_match_rate"] > 0.9
  assert r["reid_chance"] == pytest.approx(1 / 200)


def test_report_contract(invertible_report):
  r = invertible_report.to_dict()
  assert REQUIRED_KEYS <= set(r)
  json.dumps(r)  # JSON-serialisable
  assert len(r["ssim_per_image"]) == 200
  assert r["ssim"] == pytest.approx(np.mean(r["ssim_per_image"]))
  assert r["ssim_gain"] == pytest.approx(r["ssim"] - r["baseline_ssim"], abs=1e-6)
  lo, hi = r["ssim_gain_ci"]
  assert lo <= r["ssim_gain"] <= hi
  assert r["risk_level"] in ("low", "medium", "high") and r["risk_reasons"]
  assert invertible_report.reconstructions.shape == (200, 8, 8, 1)
  assert r["ssim_definition"]["filter_size"] == 7  # 8x8 images: the window was shrunk
  conv = r["convergence"]
  assert conv["steps"] <= 800 and conv["history"] and conv["stopped"]


def test_constant_embedding_is_low_risk_with_gain_ci_containing_zero(
  digits8, tmp_path, monkeypatch
):
  monkeypatch.chdir(tmp_path)
  x, _ = digits8
  report = privjax.assess(
    lambda p, im: jnp.ones((im.shape[0], 8)),
    None,
    x[:600],
    x[600:700],
    config=tiny_config(num_steps=200),
  )
  r = report.to_dict()
  assert r["risk_level"] == "low"
  # Zero up to float32 SSIM rounding: the own SSIM and the baseline's all-pairs SSIM are
  # two kernels that round a few ulps (~1e-7) apart, as for test_attacks' constant attacker.
  assert r["ssim_gain_ci"][0] <= 1e-6 and r["ssim_gain_ci"][1] >= -1e-6
  assert r["image_reid_rate"] <= 2 * r["reid_chance"]
  assert os.listdir(tmp_path) == []  # workdir=None writes no files


def _bad(digits8, **overrides):
  x, _ = digits8
  args = {
    "embed_fn": _project,
    "params": _orthogonal(64),
    "aux_images": x[:100],
    "target_images": x[100:150],
    "config": tiny_config(num_steps=10, batch_size=32),
  }
  args.update(overrides)
  return privjax.assess(
    args.pop("embed_fn"),
    args.pop("params"),
    args.pop("aux_images"),
    args.pop("target_images"),
    **args,
  )


@pytest.mark.parametrize(
  "overrides,error,match",
  [
    ({"target_images": np.ones((50, 8, 8))}, privjax.DataError, r"rank 4 \[N, H, W, C\], got"),
    ({"target_images": np.ones((50, 8, 8, 2))}, privjax.DataError, "1 or 3 channels"),
    ({"aux_images": np.full((100, 8, 8, 1), 255.0)}, privjax.DataError, r"\[0, 1\], got values"),
    ({"aux_images": np.full((100, 8, 8, 1), np.nan)}, privjax.DataError, "non-finite"),
    ({"aux_images": np.ones((100, 16, 16, 1)) * 0.5}, privjax.DataError, "same image shape"),
    ({"target_images": np.ones((0, 8, 8, 1))}, privjax.DataError, "empty"),
    ({"target_images": np.ones((5, 8, 8, 1)) * 0.5}, privjax.DataError, "at least config"),
    ({"target_labels": np.zeros(7)}, privjax.DataError, r"shape \[50\]"),
    (
      {"embed_fn": lambda p, im: im.reshape(im.shape[0], -1) * jnp.inf},
      privjax.ModelError,
      "non-finite features",
    ),
    (
      {"config": ml_collections.ConfigDict({"attacks": {"decoder": {"batch_size": 0}}})},
      privjax.ConfigError,
      "attacks.decoder.batch_size must be a positive integer, got 0",
    ),
    (
      {"config": ml_collections.ConfigDict({"trian": {}})},
      privjax.ConfigError,
      "unknown config key 'trian'",
    ),
    (
      {"config": ml_collections.ConfigDict({"attacks": {"decoder": {"loss": "l1"}}})},
      privjax.ConfigError,
      "attacks.decoder.loss must be one of",
    ),
  ],
)
def test_bad_input_raises_clear_error(digits8, overrides, error, match):
  with pytest.raises(error, match=match) as e:
    _bad(digits8, **overrides)
  assert "\n" not in str(e.value)


def test_nonfinite_training_loss_stops_with_clear_error(digits8, tmp_path):
  with pytest.raises(privjax.TrainingError, match="non-finite loss .* at step 10"):
    _bad(
      digits8,
      config=tiny_config(num_steps=50, eval_every=10, learning_rate=1e30, batch_size=32),
      workdir=str(tmp_path),
    )


def test_the_api_shows_progress_unless_told_not_to(digits8, capsys):
  x, _ = digits8
  cfg = ml_collections.ConfigDict({"attacks": only_attackers(nearest={}), "bootstrap_samples": 100})
  for show in (True, False):
    capsys.readouterr()
    privjax.assess(_project, _orthogonal(64), x[:300], x[300:360], config=cfg, progress=show)
    lines = capsys.readouterr().err.splitlines()
    own = [line.split(" privjax: ", 1)[1] for line in lines if " privjax: " in line]
    if show:
      assert any(m.startswith("stage attacks ...") for m in own)
      assert any(m.startswith("verdict: ") for m in own)
      assert len(own) == len(set(own))  # each line once
      assert not any("orbax" in line or "INFO:" in line for line in lines)
    else:
      assert own == []


def test_the_api_and_the_command_line_give_the_same_settings_and_numbers(
  digits8, tmp_path, launch_here
):
  # One set of defaults: configs/npz.py's audit fields are privjax.audit_config()'s, so the
  # same stored features give the same attackers, settings and numbers either way.
  x, y = digits8
  feats = x.reshape(len(x), -1) @ np.random.default_rng(0).normal(size=(64, 24))
  arrays = dict(
    aux_images=x[:300],
    aux_features=feats[:300].astype(np.float32),
    target_images=x[300:360],
    target_features=feats[300:360].astype(np.float32),
    target_labels=y[300:360],
  )
  np.savez(tmp_path / "leak.npz", **arrays)
  small = {
    "attacks.decoder.num_steps": 20,
    "attacks.decoder.warmup_steps": 2,
    "attacks.decoder.eval_every": 10,
    "attacks.decoder.checkpoint_every": 20,
    "attacks.decoder.batch_size": 16,
    "attacks.whitebox.type": "off",  # (no model on stored features: it cannot run either way)
    "bootstrap_samples": 100,
  }
  result = launch_here(
    "configs/npz.py",
    tmp_path / "cli",
    f"--config.data.path={tmp_path / 'leak.npz'}",
    "--config.model.kind=precomputed",
    "--config.evaluator.kind=off",
    *(f"--config.{k}={v}" for k, v in small.items()),
  )
  assert result.returncode == 0, result.stderr[-3000:]
  cli = json.loads((tmp_path / "cli" / "report.json").read_text())
  config = privjax.audit_config()
  for key, value in small.items():
    group, _, name = key.rpartition(".")
    target = config
    for part in filter(None, group.split(".")):
      target = target[part]
    target[name] = value
  privjax.assess(
    None,
    None,
    arrays["aux_images"],
    arrays["target_images"],
    aux_features=arrays["aux_features"],
    target_features=arrays["target_features"],
    target_labels=arrays["target_labels"],
    config=config,
    workdir=str(tmp_path / "api"),
    progress=False,
  )
  api = json.loads((tmp_path / "api" / "report.json").read_text())
  assert api["config"]["attacks"] == cli["config"]["attacks"]
  assert set(api["attacks"]) == set(cli["attacks"]) == {"decoder", "ridge", "nearest", "blend"}
  for name in api["attacks"]:
    assert api["attacks"][name]["ssim"] == pytest.approx(cli["attacks"][name]["ssim"], abs=1e-6)
  assert api["risk_level"] == cli["risk_level"]
