"""The whitebox attacker's choice of steps and prior on held-out auxiliary images, and the
held-out reconstructions its starts come from."""

import re

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from privjax import attacks
from privjax.attacks import whitebox
from privjax.errors import ModelError
from privjax.runtime import parallel
from privjax.scoring.standardizer import Standardizer

_PROJ = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)


def _embed(params, images):
  return jnp.tanh(images.reshape(images.shape[0], -1) @ params / 4.0)


def _context(model=None, fitted=None):
  return attacks.Context(
    mesh=parallel.data_mesh(),
    seed=0,
    eval_batch_size=64,
    filter_size=3,
    filter_sigma=0.5,
    checkpoint_dir=None,
    model=model,
    fitted=fitted,
  )


def _aux(x, n=240, n_val=40):
  std = Standardizer.fit(np.asarray(_embed(_PROJ, x[:n])))
  f = std(np.asarray(_embed(_PROJ, x[:n])))
  idx = np.arange(n)
  return attacks.AuxSet(f, x[:n], idx[:-n_val], idx[-n_val:]), std


def _with_model(x, fitted):
  """(aux, standardizer, context) with the tanh projection as a differentiable model and
  `fitted(name)` for the other attackers."""
  aux, std = _aux(x)
  model = attacks.Model(
    embed=lambda p, im: jnp.asarray(std(_embed(p, im))), params=_PROJ, key="tanh"
  )
  return aux, std, _context(model=model, fitted=fitted)


def _fit(name, aux, ctx, **settings):
  own = attacks.own_config(ml_collections.ConfigDict(attacks.with_defaults(name, settings)))
  return attacks.get(name)(aux, ctx, own)


def _curve(tv_weight, ssims, init="ridge"):
  steps = list(range(0, 50 * len(ssims), 50))
  return {
    "init": init,
    "tv_weight": tv_weight,
    "steps": steps,
    "val_mse": [0.0] * len(ssims),
    "val_ssim": ssims,
  }


def test_choice_keeps_the_start_when_no_optimisation_beats_it_on_validation():
  # The adversarial-detail case: the features get closer while the images get worse.
  chosen = whitebox.choose([_curve(0.0, [0.42, 0.35, 0.30]), _curve(1e-3, [0.42, 0.40, 0.33])])
  assert chosen["steps"] == 0 and chosen["val_ssim"] == 0.42


def test_choice_takes_the_best_or_the_fewest_steps_within_the_tolerance():
  selection = [_curve(0.0, [0.80, 0.90, 0.940, 0.949]), _curve(1e-3, [0.80, 0.93, 0.950, 0.94])]
  assert whitebox.choose(selection) == {
    "init": "ridge",
    "tv_weight": 1e-3,
    "steps": 100,
    "val_mse": 0.0,
    "val_ssim": 0.950,
  }
  near = whitebox.choose(selection, tolerance=0.02)
  assert (near["tv_weight"], near["steps"]) == (1e-3, 50)  # 0.93 >= 0.95 - 0.02


@pytest.mark.parametrize("steps,checkpoints,expected", [(400, 8, 9), (5, 5, 6), (10, 3, 4)])
def test_schedule_starts_at_zero_and_ends_at_the_most_steps(steps, checkpoints, expected):
  s = whitebox.schedule(steps, checkpoints)
  assert s[0] == 0 and s[-1] == steps and len(s) == expected and list(s) == sorted(set(s))


@pytest.mark.slow
def test_invert_returns_the_start_then_images_whose_features_approach_the_target(digits8):
  x, _ = digits8
  start = np.full((8, *x.shape[1:]), 0.5, np.float32)
  features = _embed(_PROJ, jnp.asarray(x[:8]))
  out = np.asarray(
    whitebox.invert(
      _embed, _PROJ, start, features, steps=(0, 20, 80), learning_rate=0.05, tv_weight=0.0
    )
  )
  assert out.shape == (8, 3, *x.shape[1:]) and out.min() >= 0 and out.max() <= 1
  np.testing.assert_array_equal(out[:, 0], start)
  gaps = [float(jnp.mean((_embed(_PROJ, out[:, k]) - features) ** 2)) for k in range(3)]
  assert gaps[2] < gaps[1] < gaps[0]


def test_held_out_reconstructions_never_saw_the_validation_images(digits8):
  x, _ = digits8
  aux, _ = _aux(x)
  ctx = _context()
  val_f, val_x = aux.features[aux.val], aux.images[aux.val]
  nearest = _fit("nearest", aux, ctx)
  assert np.array_equal(nearest.reconstruct(val_f), val_x)  # in-sample: itself
  held = nearest.reconstruct_held_out(val_f)
  assert not any(np.array_equal(h, v) for h, v in zip(held, val_x, strict=True))
  ridge = _fit("ridge", aux, ctx, num_features=200, bandwidths=(1.0,), penalties=(1e-3,))
  in_sample = np.mean((ridge.reconstruct(val_f) - val_x) ** 2)
  assert np.mean((ridge.reconstruct_held_out(val_f) - val_x) ** 2) > 1.2 * in_sample


@pytest.mark.slow
def test_whitebox_started_from_a_lookup_still_optimises(digits8):
  # Started from nearest, whose in-sample answer on aux.val is the image itself, a choice
  # judged on in-sample starts would keep the start (0 steps) and understate the attack.
  x, _ = digits8
  fitted = {}
  aux, std, ctx = _with_model(x, lambda name: fitted[name])
  fitted["nearest"] = _fit("nearest", aux, ctx)
  wb = _fit("whitebox", aux, ctx, init="nearest", steps=60, checkpoints=3, tv_weights=(0.0,))
  assert wb.info["steps"] > 0
  curve = wb.info["selection"][0]
  assert curve["val_ssim"][curve["steps"].index(wb.info["steps"])] > curve["val_ssim"][0]
  targets = x[300:340]
  start = fitted["nearest"].reconstruct(std(np.asarray(_embed(_PROJ, targets))))
  out = wb.reconstruct(std(np.asarray(_embed(_PROJ, targets))))
  assert np.mean((out - targets) ** 2) < np.mean((start - targets) ** 2)


def test_whitebox_starts_from_the_best_held_out_start_and_leaves_out_a_skipped_one(digits8):
  x, _ = digits8
  fitted = {}

  def fit(name):
    if name not in fitted:
      raise attacks.Skipped(f"{name} did not run")
    return fitted[name]

  aux, _, ctx = _with_model(x, fit)
  fitted["nearest"] = _fit("nearest", aux, ctx)
  fitted["ridge"] = _fit("ridge", aux, ctx, num_features=200, bandwidths=(1.0,), penalties=(1e-3,))
  settings = dict(steps=20, checkpoints=2, tv_weights=(0.0,))
  wb = _fit("whitebox", aux, ctx, init=("decoder", "nearest", "ridge"), **settings)
  info = wb.info
  assert info["starts_left_out"] == {"decoder": "decoder did not run"}
  assert list(info["starts"]) == ["nearest", "ridge"]
  assert info["init"] == max(info["starts"], key=info["starts"].get)
  assert [r["init"] for r in info["selection"]] == [info["init"]]  # only the best is optimised
  assert info["selection"][0]["val_ssim"][0] == pytest.approx(info["starts"][info["init"]])
  # No named start runs: the mean auxiliary image stands in (the attack still runs).
  alone = _fit("whitebox", aux, ctx, init="decoder", **settings)
  assert alone.info["init"] == "mean" and list(alone.info["starts"]) == ["mean"]


@pytest.mark.parametrize(
  "curve,rising",
  [
    ([0.90, 0.93, 0.94, 0.945], False),  # flattening: the last stretch adds little
    ([0.90, 0.91, 0.92, 0.93], True),  # still climbing at its average rate
    ([0.90, 0.89, 0.88, 0.87], False),  # optimising only hurts
    ([0.90, 0.90, 0.90], False),
  ],
)
def test_still_rising_flags_a_curve_cut_short(curve, rising):
  assert whitebox.still_rising(curve) is rising


@pytest.mark.parametrize(
  "held_out,why",
  [
    (lambda f: np.full((len(f), 8, 8, 1), np.nan, np.float32), "with non-finite values"),
    (lambda f: np.zeros((len(f), 4, 4, 1), np.float32), "float32 [40, 4, 4, 1]"),
    (lambda f: np.zeros((len(f), 8, 8, 1), np.uint8), "uint8 [40, 8, 8, 1]"),
  ],
)
def test_a_start_whose_held_out_images_are_not_images_is_refused_in_one_line(
  digits8, held_out, why
):
  # A NaN start would lose (or, first in the list, win) the choice of start silently.
  x, _ = digits8
  fitted = {}
  aux, _, ctx = _with_model(x, lambda name: fitted[name])
  plain = _fit("nearest", aux, ctx)
  fitted["mine"] = attacks.Fitted(plain.reconstruct, held_out=held_out)
  expected = "attack 'mine': its held-out reconstructions must be .*" + re.escape(why)
  with pytest.raises(ModelError, match=expected):
    _fit("whitebox", aux, ctx, init="mine", steps=4, checkpoints=2, tv_weights=(0.0,))


@pytest.mark.slow
def test_advancing_in_stretches_reaches_what_one_long_inversion_reaches(digits8):
  x, _ = digits8
  start = np.full((8, *x.shape[1:]), 0.5, np.float32)
  features = _embed(_PROJ, jnp.asarray(x[:8]))
  w = jnp.zeros(8, jnp.float32)
  whole = np.asarray(
    whitebox.invert(_embed, _PROJ, start, features, w, steps=(0, 7, 20), learning_rate=0.05)
  )
  z = whitebox.logits(start)
  mu = nu = jnp.zeros_like(z)
  done = 0
  for k, n in enumerate((7, 20), start=1):
    count = jnp.full(8, done, jnp.int32)
    z, mu, nu, images = whitebox.advance(
      _embed, _PROJ, z, mu, nu, count, features, w, steps=n - done, learning_rate=0.05
    )
    np.testing.assert_allclose(np.asarray(images), whole[:, k], rtol=0, atol=1e-6)
    done = n


def test_the_search_stops_once_more_steps_stop_helping(digits8, caplog):
  # A start that is the held-out image itself cannot be improved on: every stretch is worse
  # than step 0, so after `patience` stretches the search stops, keeping the start.
  x, _ = digits8
  fitted = {}
  aux, _, ctx = _with_model(x, lambda name: fitted[name])
  plain = _fit("nearest", aux, ctx)
  fitted["oracle"] = attacks.Fitted(plain.reconstruct, held_out=plain.reconstruct)
  caplog.set_level("INFO")
  settings = dict(init="oracle", steps=80, checkpoints=8, tv_weights=(0.0, 1e-3))
  wb = _fit("whitebox", aux, ctx, patience=2, **settings)
  assert wb.info["steps"] == 0
  assert [r["steps"] for r in wb.info["selection"]] == [[0, 10, 20]] * 2
  assert "search stopped at 20 of 80 steps" in caplog.text
  assert "choosing steps: 10 of 80 done" in caplog.text and "left" in caplog.text
  every = _fit("whitebox", aux, ctx, patience=0, **settings)
  assert every.info["selection"][0]["steps"] == list(range(0, 90, 10))
  # The curve the stopped search saw is the start of the full one.
  np.testing.assert_allclose(
    wb.info["selection"][0]["val_ssim"], every.info["selection"][0]["val_ssim"][:3], atol=1e-6
  )
