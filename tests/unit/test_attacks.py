"""The attackers as units: their config checks, and refitting and scoring on new data of
the same shapes compiles nothing."""

import functools

import ml_collections
import numpy as np
import pytest

import privjax
from privjax import attacks
from privjax import config as config_lib
from privjax import settings as settings_lib
from privjax.runtime import parallel
from privjax.scoring import scores as scoring
from privjax.scoring.standardizer import Standardizer
from privjax.stages import extraction
from tests.compiles import counting

_PROJ = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)


def _tanh_features(images):
  return np.tanh(images.reshape(images.shape[0], -1) @ _PROJ / 4.0)


@pytest.mark.parametrize(
  "attacks,message",
  [
    ({"x": {"type": "nope"}}, "unknown attack type 'nope'"),
    (
      {"x": {"type": "no_such_module_xyz:fn"}},
      "config.attacks.x.type='no_such_module_xyz:fn': cannot import module",
    ),
    ({"ridge": {"num_features": 0}}, "config.attacks.ridge.num_features must be a positive"),
    ({"ridge": {"bandwidths": ()}}, "config.attacks.ridge.bandwidths must be a non-empty list"),
    ({"ridge": {"penalties": (1.0, -1.0)}}, "config.attacks.ridge.penalties[1] must be a number"),
    ({"ridge": {"lambda": 1}}, "unknown config key 'attacks.ridge.lambda'"),
    (
      {"decoder": {"type": "off"}, "whitebox": {"init": "decoder"}},
      "config.attacks.whitebox.init must be 'mean' or another",
    ),
    (
      {"whitebox": {"init": "mean", "steps": -1}},
      "config.attacks.whitebox.steps must be a positive integer",
    ),
    (
      {"whitebox": {"init": "mean", "tv_weights": (-0.1,)}},
      "config.attacks.whitebox.tv_weights[0] must be",
    ),
    (
      {"whitebox": {"init": "mean", "learning_rate": 0}},
      "config.attacks.whitebox.learning_rate must be",
    ),
    (
      {n: {"type": "off"} for n in ("decoder", "ridge", "nearest", "whitebox", "blend")},
      "every attacker is 'off'",
    ),
    ({}, "config.attacks must be a non-empty group"),
    ({"blend": {"members": ("ridge", "blend")}}, "config.attacks.blend.members must be a list"),
  ],
)
def test_bad_attack_configs_are_one_line_errors(attacks, message):
  with pytest.raises(privjax.ConfigError) as e:
    config_lib.validate(
      config_lib.for_images((8, 8, 1), ml_collections.ConfigDict({"attacks": attacks}))
    )
  assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_refitting_and_scoring_on_new_data_of_the_same_shapes_compiles_nothing(digits8):
  # Sizes no other test uses, so the warm-up round compiles whatever the test order.
  x, _ = digits8
  n_aux, n_tgt = 216, 44
  mesh = parallel.data_mesh()
  cfg = config_lib.for_images(x.shape[1:], ml_collections.ConfigDict({"eval_batch_size": 48}))
  cfg.bootstrap_samples = 50
  shortlist = ml_collections.ConfigDict(cfg.to_dict())  # the shortlist path of identify
  shortlist.reid.exact_max_targets, shortlist.reid.shortlist = 10, 5
  shortlist.reid.baseline_samples = 6
  ctx = attacks.Context(
    mesh=mesh,
    seed=0,
    eval_batch_size=cfg.eval_batch_size,
    filter_size=cfg.ssim.filter_size,
    filter_sigma=cfg.ssim.filter_sigma,
    checkpoint_dir=None,
    model=None,
    fitted=None,
  )
  settings = {"ridge": {"num_features": 40, "bandwidths": (1.0, 2.0)}, "nearest": {}}

  def one_round(start):
    images = x[start : start + n_aux + n_tgt]
    std = Standardizer.fit(_tanh_features(images[:n_aux]))
    f = std(_tanh_features(images))
    split = np.arange(n_aux)
    aux = attacks.AuxSet(f[:n_aux], images[:n_aux], split[:-24], split[-24:])
    out = {}
    for name, own in settings.items():
      own = attacks.own_config(ml_collections.ConfigDict(attacks.with_defaults(name, own)))
      recon = attacks.get(name)(aux, ctx, own).reconstruct(f[n_aux:])
      targets = images[n_aux:]
      out[name] = [
        scoring.score(recon, targets, settings=settings_lib.scoring(c), mesh=mesh)
        for c in (cfg, shortlist)
      ]
    return out

  with counting() as warm:
    first = one_round(0)
  with counting() as again:
    second = one_round(900)
  assert warm.count > 0  # the counter sees compilations
  assert again.count == 0, again.names
  for name in settings:  # fresh data: fresh answers, not a stale program's
    assert first[name][0].summary()["ssim"] != second[name][0].summary()["ssim"]
    assert not second[name][1].exact


@pytest.mark.parametrize("offset", [0.0, 1e8, 1e12])
def test_standardisation_keeps_the_signal_under_a_large_offset_in_float64(offset):
  f = np.random.default_rng(0).uniform(-1, 1, size=(300, 8))
  stored = extraction.check_features(f + offset, 300, name="aux_features")
  assert stored.dtype == np.float64
  z = Standardizer.fit(stored)(stored)
  # Equal up to float64's resolution at the offset (1.2e-4 at 1e12 on a spread of 2).
  np.testing.assert_allclose(z, Standardizer.fit(f)(f), atol=2e-3)


def test_standardisation_treats_float32_rounding_as_no_signal():
  f = np.full((50, 2), 1e8, np.float32)
  f[::2, 1] = np.nextafter(np.float32(1e8), np.float32(2e8))  # one float32 step apart
  std = Standardizer.fit(f)
  assert (std.scale == 1.0).all()  # the spread is rounding at float32 resolution


@pytest.mark.parametrize("n,f", [(60, 20), (20, 60)])  # primal (tall), dual (wide)
def test_ridge_solves_the_same_regression_in_either_form(n, f):
  from privjax.attacks import ridge

  rng = np.random.default_rng(0)
  p, y = rng.normal(size=(n, f)), rng.normal(size=(n, 5))
  spectrum = ridge._spectrum(p, y, mesh=parallel.data_mesh())
  assert (spectrum.pc is not None) == (f > n)
  pc, yc = p - p.mean(0), y - y.mean(0)
  lam = 0.1 * np.trace(pc.T @ pc) / f
  coef = np.linalg.solve(pc.T @ pc + lam * np.eye(f), pc.T @ yc)
  np.testing.assert_allclose(spectrum.coef(0.1), coef, rtol=1e-7, atol=1e-10)
  new = rng.normal(size=(7, f))
  np.testing.assert_allclose(
    spectrum.predict(spectrum.coordinates(new), 0.1),
    (new - p.mean(0)) @ coef + y.mean(0),
    rtol=1e-7,
    atol=1e-10,
  )


def test_ridge_refuses_a_fit_larger_than_the_host_before_it_starts(digits8, monkeypatch):
  from privjax.runtime import memory

  monkeypatch.setattr(memory, "available", lambda: 2**20)  # 1 MiB
  x, _ = digits8
  f = _tanh_features(x[:100])
  aux = attacks.AuxSet(f, x[:100], np.arange(80), np.arange(80, 100))
  ctx = attacks.Context(
    mesh=parallel.data_mesh(),
    seed=0,
    eval_batch_size=32,
    filter_size=3,
    filter_sigma=0.5,
    checkpoint_dir=None,
    model=None,
    fitted=None,
  )
  own = attacks.own_config(ml_collections.ConfigDict(attacks.with_defaults("ridge", {})))
  needs = r"ridge for 100 auxiliary .* needs about .* GiB; this host has"
  with pytest.raises(privjax.ModelError, match=needs):
    attacks.get("ridge")(aux, ctx, own)


def _context(mesh):
  return {
    "mesh": mesh,
    "seed": 0,
    "eval_batch_size": 64,
    "filter_size": 3,
    "filter_sigma": 0.5,
    "model": None,
  }


def test_the_cheap_attackers_run_first_and_a_stop_skips_the_rest(digits8):
  from privjax.attacks import runner

  x = digits8[0][:300]
  f = _tanh_features(x)
  aux = attacks.AuxSet(f[:240], x[:240], np.arange(216), np.arange(216, 240))
  cfg = ml_collections.ConfigDict(
    {
      "decoder": attacks.with_defaults("decoder", {"num_steps": 50}),
      "nearest": attacks.with_defaults("nearest", {}),
      "ridge": attacks.with_defaults("ridge", {"num_features": 40}),
      # Combines the decoder, so it waits for it even though it trains nothing itself.
      "blend": attacks.with_defaults("blend", {}),
    }
  )
  seen = []

  def after(outcome):
    seen.append(outcome.name)
    return "stopped here" if len(seen) == 2 else ""

  outcomes = runner.run_all(
    cfg,
    aux,
    f[240:],
    context=_context(parallel.data_mesh()),
    data_key="k",
    workdir=None,
    overwrite=False,
    after=after,
  )
  assert seen == ["nearest", "ridge"]  # the decoder trains: it (and its blend) come last
  assert [o.name for o in outcomes] == ["blend", "decoder", "nearest", "ridge"]  # config order
  for skipped in outcomes[:2]:
    assert skipped.skipped == "stopped here" and skipped.reconstructions is None
  assert outcomes[3].reconstructions.shape == (60, 8, 8, 1)


def test_each_attacker_runs_after_the_attackers_it_uses():
  from privjax.attacks import runner

  cfg = config_lib.for_images((8, 8, 1), ml_collections.ConfigDict()).attacks
  assert list(cfg) == ["blend", "decoder", "nearest", "ridge", "whitebox"]  # config order
  # The cheap ones first; the blend after the decoder it combines (its seconds are its own),
  # the whitebox after the blend it may start from.
  assert runner._order(cfg, list(cfg)) == ["nearest", "ridge", "decoder", "blend", "whitebox"]
  cfg.whitebox.init = ("ridge",)  # starting from ridge only, it waits for nothing heavy
  cfg.blend.members = ("ridge", "nearest")
  assert runner._order(cfg, list(cfg)) == ["nearest", "ridge", "blend", "decoder", "whitebox"]


def test_blend_weights_recover_a_known_combination():
  from privjax.attacks import blend

  rng = np.random.default_rng(0)
  a, b = rng.uniform(size=(2, 30, 8, 8, 1))
  w = blend.weights([a, b], 0.3 * a + 0.6 * b + 0.05)
  np.testing.assert_allclose(w, [0.3, 0.6, 0.05], atol=1e-9)
  # Two members that agree exactly (a whitebox that kept its start) are one direction.
  w = blend.weights([a, a], 0.5 * a)
  np.testing.assert_allclose(blend.combine(w, [a, a]), 0.5 * a, atol=1e-6)


def test_blend_beats_its_members_on_validation_and_combines_their_reconstructions(digits8):
  from privjax.attacks import blend, runner

  x = digits8[0][:300]
  f = _tanh_features(x)
  aux = attacks.AuxSet(f[:240], x[:240], np.arange(200), np.arange(200, 240))
  cfg = ml_collections.ConfigDict(
    {
      "nearest": attacks.with_defaults("nearest", {}),
      "ridge": attacks.with_defaults("ridge", {"num_features": 40}),
      "blend": attacks.with_defaults("blend", {"members": ("ridge", "nearest", "decoder")}),
    }
  )
  run = functools.partial(
    runner.run_all, aux=aux, target_features=f[240:], data_key="k", workdir=None, overwrite=False
  )
  outcomes = {o.name: o for o in run(cfg, context=_context(parallel.data_mesh()))}
  info = outcomes["blend"].info
  assert info["members"] == ["ridge", "nearest"]  # the decoder is not running
  # On validation it is no worse than its best member (each member alone is a choice).
  assert info["val_mse"] <= min(info["member_val_mse"].values())
  w = np.array([*info["weights"], info["offset"]])
  members = [outcomes[m].reconstructions for m in info["members"]]
  np.testing.assert_allclose(
    outcomes["blend"].reconstructions, blend.combine(w, members), atol=1e-6
  )
  # Its held-out reconstructions of aux.val are cross-fitted: each half combined by the
  # weights fitted on the other half, from the members' held-out reconstructions.
  fitted = {}
  ctx = attacks.Context(
    **_context(parallel.data_mesh()),
    checkpoint_dir=None,
    fitted=lambda n: fitted[n],
    running=("nearest", "ridge", "blend"),
  )
  for name in ("ridge", "nearest"):
    fitted[name] = attacks.get(name)(aux, ctx, attacks.own_config(cfg[name]))
  own = attacks.get("blend")(aux, ctx, attacks.own_config(cfg.blend))
  val_f, val_x = aux.features[aux.val], aux.images[aux.val]
  held = [fitted[m].reconstruct_held_out(val_f) for m in ("ridge", "nearest")]
  expected = np.empty_like(val_x)
  for this, other in (
    (slice(0, None, 2), slice(1, None, 2)),
    (slice(1, None, 2), slice(0, None, 2)),
  ):
    w_other = blend.weights([h[other] for h in held], val_x[other])
    expected[this] = blend.combine(w_other, [h[this] for h in held])
  np.testing.assert_allclose(own.reconstruct_held_out(val_f), expected, atol=1e-6)
  assert own.info["cross_fitted_val_mse"] == pytest.approx(np.mean((expected - val_x) ** 2))
  # In-sample members (nearest answers aux.val with the images themselves) never enter it.
  assert not np.allclose(own.reconstruct_held_out(val_f), own.reconstruct(val_f))
  cfg.ridge.type = "off"  # one member left: nothing to blend
  alone = {o.name: o for o in run(cfg, context=_context(parallel.data_mesh()))}["blend"]
  assert "fewer than two of its members" in alone.skipped


def _stored_audit(digits8, monkeypatch, **overrides):
  """A black-box audit of informative stored features; counts the scoring calls."""
  x = digits8[0][:400]
  f = _tanh_features(x)
  calls = []
  score = scoring.score
  monkeypatch.setattr(scoring, "score", lambda *a, **k: calls.append(1) or score(*a, **k))
  config = ml_collections.ConfigDict(
    dict(
      {
        "bootstrap_samples": 100,
        "attacks": {
          "ridge": {"num_features": 40},
          "decoder": {"num_steps": 40, "eval_every": 20, "warmup_steps": 10},
        },
      },
      **overrides,
    )
  )
  report = privjax.assess(
    None,
    None,
    x[:300],
    x[300:],
    aux_features=f[:300],
    target_features=f[300:],
    config=config,
    progress=False,
  )
  return report.to_dict(), len(calls)


@pytest.mark.slow
def test_fast_verdict_skips_the_attackers_left_once_the_verdict_is_high(digits8, monkeypatch):
  report, _ = _stored_audit(digits8, monkeypatch, fast_verdict=True)
  assert report["risk_level"] == "high" and report["deciding_attack"] == "nearest"
  assert "ssim" in report["attacks"]["nearest"]  # the first to run, already high
  for name in ("ridge", "decoder"):
    skipped = report["attacks"][name]
    assert "config.fast_verdict" in skipped["skipped"] and "ssim" not in skipped, skipped
  full, _ = _stored_audit(digits8, monkeypatch)  # by default every attacker runs
  assert all("ssim" in full["attacks"][n] for n in ("nearest", "ridge", "decoder"))


def test_an_attacker_returning_anothers_reconstructions_is_scored_once(digits8, monkeypatch):
  off = {"decoder": {"type": "off"}, "blend": {"type": "off"}}
  twice = {"attacks": {**off, "again": {"type": "nearest"}}}
  report, calls = _stored_audit(digits8, monkeypatch, **twice)
  assert calls == 2  # nearest and ridge; "again" reuses nearest's scores
  assert report["attacks"]["again"]["ssim"] == report["attacks"]["nearest"]["ssim"]


def test_a_round_larger_than_the_host_is_refused_before_any_attacker_runs(digits8, monkeypatch):
  from privjax.runtime import memory

  monkeypatch.setattr(memory, "available", lambda: 2**16)  # 64 KiB
  from privjax.attacks import runner

  ran = []
  monkeypatch.setattr(runner, "run_all", lambda *a, **k: ran.append(a))
  with pytest.raises(privjax.DataError, match=r"attacking 100 targets of 64 pixels with 5 .*"):
    _stored_audit(digits8, monkeypatch)
  assert not ran


@pytest.mark.parametrize(
  "best_mse, flat",
  [(0.0295, True), (0.0300, True), (0.0200, False)],
)
def test_the_flat_warning_compares_held_out_mse_whatever_the_loss(best_mse, flat):
  """A log loss is negative: the warning reads the held-out mse, not a fraction of it."""
  from privjax.attacks.decoder import training_warnings

  convergence = {
    "history": [{"step": 200, "val_loss": -3.6}, {"step": 300, "val_loss": -3.9}],
    "best_val_loss": -3.9,  # Far "below" the mean image's: a negative-loss comparison
    "mean_image_val_loss": -3.5,  # would call every one of these decoders learned.
    "best_val_mse": best_mse,
    "mean_image_val_mse": 0.0300,
    "mismatched_val_mse": 0.0300,  # its own reconstructions of other images
    "mismatched_val_mse_se": 0.0002,
    "best_step": 300,
    "stopped": "early stopping",
  }
  cfg = ml_collections.ConfigDict({"warmup_steps": 100})
  warned = any("validation loss flat" in w for w in training_warnings(convergence, cfg))
  assert warned == flat
