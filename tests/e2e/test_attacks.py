"""The attackers in whole audits: the verdict from the most severe, no invented leakage,
user attackers, units of stored features, attack strength."""

import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

import privjax
from tests.conftest import only_attackers, tiny_config

_PROJ = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)


def _tanh_features(images):
  return np.tanh(images.reshape(images.shape[0], -1) @ _PROJ / 4.0)


def _config(num_steps=150, **attacks):
  cfg = tiny_config(num_steps=num_steps, eval_every=50)
  chosen = attacks or {"decoder": {}, "ridge": {}, "nearest": {}}
  own = {
    n: dict(cfg.attacks[n].to_dict() if n in cfg.attacks else {}, **e) for n, e in chosen.items()
  }
  cfg.attacks = only_attackers(**own)
  return cfg


def _stored(x, n_aux, n_targets, cfg, **kwargs):
  """A stored-features audit of tanh features: aux x[:n_aux], targets the next n_targets."""
  end = n_aux + n_targets
  return privjax.assess(
    None,
    None,
    x[:n_aux],
    x[n_aux:end],
    config=cfg,
    aux_features=_tanh_features(x[:n_aux]),
    target_features=_tanh_features(x[n_aux:end]),
    **kwargs,
  )


def _attack_rows(report):
  return report.to_dict()["attacks"]


def test_a_tiny_decoder_loses_to_ridge_and_the_verdict_follows_ridge(digits8):
  x, _ = digits8
  cfg = _config(num_steps=20, decoder={}, ridge={})
  cfg.attacks.decoder.width, cfg.attacks.decoder.hidden = 1, 1
  cfg.attacks.decoder.learning_rate = 1e-4
  report = privjax.assess(
    lambda p, im: jnp.tanh(im.reshape(im.shape[0], -1) @ p / 4.0),
    jnp.asarray(_PROJ),
    x[:500],
    x[500:600],
    config=cfg,
  )
  r, rows = report.to_dict(), _attack_rows(report)
  assert rows["ridge"]["ssim_gain_ci"][0] > rows["decoder"]["ssim_gain_ci"][0] + 0.1
  assert r["deciding_attack"] == "ridge" and r["risk_level"] == rows["ridge"]["risk_level"]
  for key in ("ssim", "psnr", "ssim_gain", "ssim_gain_ci", "image_reid_rate", "reid_rate"):
    assert r[key] == rows["ridge"][key]
  assert r["risk_reasons"][0].startswith("ridge attacker:")


@pytest.mark.parametrize(
  "name,embed",
  [
    ("constant", lambda p, im: jnp.ones((im.shape[0], 8), jnp.float32)),
    # An image hash: a chaotic function of the pixels, with no smooth relation to the image.
    ("hash", lambda p, im: jnp.sin(1e4 * im.reshape(im.shape[0], -1) @ p)),
  ],
)
def test_no_attacker_invents_leakage(digits8, name, embed):
  x, _ = digits8
  cfg = _config(
    num_steps=100,
    decoder={},
    ridge={},
    nearest={},
    whitebox={"steps": 20, "tv_weights": (0.0,)},
    blend={},
  )
  report = privjax.assess(embed, jnp.asarray(_PROJ), x[:300], x[300:400], config=cfg)
  rows = _attack_rows(report)
  assert set(rows) == {"decoder", "ridge", "nearest", "whitebox", "blend"}
  for attack, row in rows.items():
    assert row["risk_level"] == "low", (name, attack, row["risk_reasons"])
  assert report.risk_level == "low"
  if name == "constant":
    assert any("validation loss flat" in w for w in rows["decoder"]["warnings"])


def test_a_user_attacker_by_import_path(digits8, tmp_path, monkeypatch):
  (tmp_path / "toy_attack.py").write_text(
    textwrap.dedent("""
      import numpy as np
      from privjax import attacks

      def mean_image(aux, ctx, cfg):
        mean = aux.images[aux.train].mean(axis=0)
        return attacks.Fitted(
          lambda f: np.broadcast_to(mean, (len(f), *mean.shape)) * cfg.gain, {"gain": cfg.gain}
        )
    """)
  )
  monkeypatch.syspath_prepend(str(tmp_path))
  x, _ = digits8
  cfg = _config(mine={"type": "toy_attack:mean_image", "gain": 1.0}, nearest={})
  report = _stored(x, 300, 60, cfg)
  rows = _attack_rows(report)
  assert rows["mine"]["type"] == "toy_attack:mean_image" and rows["mine"]["info"] == {"gain": 1.0}
  assert rows["mine"]["image_reid_rate"] <= 1 / 60  # identical reconstructions: chance, 1/N
  assert abs(rows["mine"]["ssim_gain"]) < 1e-6
  assert report.to_dict()["deciding_attack"] == "nearest"
  del sys.modules["toy_attack"]


def test_whitebox_is_skipped_on_stored_features_with_the_reason(digits8):
  x, _ = digits8
  cfg = _config(num_steps=60, nearest={}, whitebox={"init": "mean", "steps": 5})
  report = _stored(x, 300, 60, cfg)
  row = _attack_rows(report)["whitebox"]
  assert "stored features" in row["skipped"] and "ssim" not in row
  assert report.to_dict()["deciding_attack"] == "nearest"


def test_whitebox_improves_on_its_start_through_the_model(digits8):
  x, _ = digits8
  cfg = _config(whitebox={"init": "mean", "steps": 150, "tv_weights": (0.0, 0.01)})
  report = privjax.assess(
    lambda p, im: jnp.tanh(im.reshape(im.shape[0], -1) @ p / 4.0),
    jnp.asarray(_PROJ),
    x[:300],
    x[300:400],
    config=cfg,
  )
  row = _attack_rows(report)["whitebox"]
  assert row["ssim_gain_ci"][0] > 0.2  # from the mean image, through the gradients alone
  assert [s["tv_weight"] for s in row["info"]["selection"]] == [0.0, 0.01]
  assert row["info"]["tv_weight"] in (0.0, 0.01)


@pytest.fixture(scope="module")
def natural(digits8):
  """A stored-features audit at the features' natural units."""
  x, _ = digits8
  f = _tanh_features(x[:460])
  return x, f, _stored_audit(x, f)


def _stored_audit(x, f):
  cfg = _config(num_steps=150)
  return privjax.assess(
    None, None, x[:400], x[400:460], config=cfg, aux_features=f[:400], target_features=f[400:]
  )


@pytest.mark.parametrize(
  "units",
  [
    "scale 1e4",
    "scale 1e-3",
    "offset 1e3",
    "scale -50 offset 7",
    "uint8 0-255",
    "float16",
    "float64 offset 1e8",
    "float64 offset 1e12",
    "int64 1e6 offset 1e15",
  ],
)
def test_units_never_decide_the_verdict(natural, units):
  x, f, reference = natural
  if units == "uint8 0-255":  # a realistic leaked database: features quantised to bytes
    lo, hi = f.min(), f.max()
    g = np.round((f - lo) / (hi - lo) * 255).astype(np.uint8)
  elif units == "float16":
    g = f.astype(np.float16)
  elif units.startswith("float64"):  # an offset float32 could not hold beside the signal
    g = f.astype(np.float64) + float(units.split()[-1])
  elif units.startswith("int64"):  # integers of large magnitude
    g = np.round(f.astype(np.float64) * 1e6).astype(np.int64) + 10**15
  else:
    words = units.split()
    scale = float(words[1]) if words[0] == "scale" else 1.0
    offset = float(words[-1]) if "offset" in words else 0.0
    g = (f * scale + offset).astype(np.float32)
  report = _stored_audit(x, g)
  assert report.risk_level == reference.risk_level == "high"
  for name, row in _attack_rows(report).items():
    ref = _attack_rows(reference)[name]
    assert row["risk_level"] == ref["risk_level"]
    assert abs(row["ssim"] - ref["ssim"]) < 0.03, (units, name, row["ssim"], ref["ssim"])


def test_a_training_batch_larger_than_the_auxiliary_set_runs_and_is_flagged(digits8):
  x, _ = digits8
  cfg = _config(num_steps=40)
  cfg.attacks.decoder.batch_size = 128
  report = _stored(x, 60, 40, cfg)
  r = report.to_dict()
  assert set(r["attacks"]) == {"decoder", "ridge", "nearest"}
  # Every attacker learns from aux: each fact once, for all of them, in the numbers the
  # page's headline uses (60 auxiliary images).
  assert [w for w in r["warnings"] if "data-starved" in w] == [
    "all attackers: data-starved: fitted on 54 of the 60 auxiliary images (6 held out for "
    "model selection; < 200 to fit on): an attacker with more similar images may recover more"
  ]
  assert sum("all attackers: model selection on only 6 held-out" in w for w in r["warnings"]) == 1
  assert r["num_aux"] == 60


def test_attack_strength_reruns_the_attackers_on_nested_parts(digits8, tmp_path):
  x, _ = digits8
  cfg = _config(num_steps=60, decoder={}, ridge={})
  cfg.attack_strength = {"aux_fractions": (0.1, 0.5, 1.0)}
  report = _stored(x, 400, 60, cfg, workdir=str(tmp_path))
  r = report.to_dict()
  assert [row["num_aux"] for row in r["attack_strength"]] == [40, 200, 400]
  assert r["attack_strength"][-1]["attacks"]["ridge"] == {
    k: v
    for k, v in r["attacks"]["ridge"].items()
    if k in r["attack_strength"][0]["attacks"]["ridge"]
  }
  ridge = [row["attacks"]["ridge"]["ssim"] for row in r["attack_strength"]]
  assert ridge[0] < ridge[-1]  # more data, more leakage
  assert (tmp_path / "attack_strength.png").read_bytes()[:4] == b"\x89PNG"
  assert (tmp_path / "checkpoints" / "aux0.1-decoder").is_dir()


def test_an_attack_strength_part_too_small_to_fit_on_is_refused(digits8):
  x, _ = digits8
  cfg = _config(num_steps=20, ridge={})
  cfg.attack_strength = {"aux_fractions": (0.001, 1.0)}
  with pytest.raises(privjax.ConfigError, match=r"aux_fractions\[0\]=0.001 leaves 0 of the 300"):
    _stored(x, 300, 60, cfg)
