"""The learned defense (privjax/defenses/learned.py): g trained against an in-loss ridge
keeps the features' use at lam = 0, cuts a held-out ridge's R^2 at a large lam, is one
pure jittable transform whatever its architecture, and is bitwise reproducible."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import Ridge

from privjax.defenses import learned, transforms
from privjax.errors import ConfigError, DataError

# Small and quick: a residual gelu MLP, 300 Adam steps on 1,200 digits.
SETTINGS = {"hidden": 64, "steps": 300, "batch_size": 256, "learning_rate": 3e-3}
DEFENDER_ROWS = 1200


@pytest.fixture(scope="module")
def data(digits8):
  """Digits through a fixed "model": tanh of a random projection of the pixels to D = 32,
  split into the defender's rows and held-out queries."""
  images, labels = digits8
  rng = np.random.default_rng(0)
  proj = rng.standard_normal((64, 32)) / 2
  features = np.tanh(images.reshape(len(images), -1) @ proj).astype(np.float32)
  perm = rng.permutation(len(images))
  return features, images, labels, perm[:DEFENDER_ROWS], perm[DEFENDER_ROWS:]


def _train(data, lam, key=0, **settings):
  features, images, labels, own, _ = data
  return learned.train(
    features=features[own],
    images=images[own],
    labels=labels[own],
    strength=lam,
    key=jax.random.key(key),
    settings={**SETTINGS, **settings},
  )


@pytest.fixture(scope="module")
def trained(data):
  """{lam: (params, info)} for lam 0 and 10 (one compiled program serves both)."""
  return {lam: _train(data, lam) for lam in (0.0, 10.0)}


def _defend(params, features):
  return np.asarray(jax.jit(learned.transform)(features, None, lam=0.0, **params))


def _knn(gallery, gallery_labels, queries, query_labels) -> float:
  """Rank-1 identification by cosine, as the audit's knn_rank1."""
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  best = np.argmax(unit(queries) @ unit(gallery).T, axis=1)
  return float(np.mean(gallery_labels[best] == query_labels))


def _probe(x, labels, xq, query_labels) -> float:
  """A standardised least-squares linear probe (one-hot targets, a small ridge)."""
  mu, sd = x.mean(0), x.std(0) + 1e-6
  a = np.c_[(x - mu) / sd, np.ones(len(x))]
  w = np.linalg.solve(a.T @ a + 1e-3 * len(x) * np.eye(a.shape[1]), a.T @ np.eye(10)[labels])
  return float(np.mean(np.argmax(np.c_[(xq - mu) / sd, np.ones(len(xq))] @ w, 1) == query_labels))


def _utility(data, defended=None):
  features, _, labels, own, held = data
  f = features if defended is None else defended
  args = (f[own], labels[own], f[held], labels[held])
  return _knn(*args), _probe(*args)


def test_it_registers_as_a_trained_defense():
  d = transforms.get("learned")
  assert d.param == "lam" and d.train is learned.train and d.fit is None
  assert d.defaults == learned.DEFAULTS and d.check_settings is learned.check_settings


@pytest.mark.slow
def test_lambda_zero_keeps_the_features_use(data, trained):
  params, info = trained[0.0]
  knn_raw, probe_raw = _utility(data)
  knn, probe = _utility(data, _defend(params, data[0]))
  # Measured: k-NN 0.935 raw -> 0.958, probe 0.889 -> 0.945 (the identity start, then CE).
  assert knn >= knn_raw - 0.03 and probe >= probe_raw - 0.03, (knn_raw, knn, probe_raw, probe)
  assert info["architecture"] == "mlp 32->64->32" and info["defender_rows"] == DEFENDER_ROWS
  assert info["end"]["utility_loss"] < 0.5 * info["start"]["utility_loss"]


@pytest.mark.slow
def test_a_large_lambda_cuts_the_held_out_ridge(trained):
  free, private = trained[0.0][1], trained[10.0][1]
  # Both start from the identity: the same untrained R^2.
  assert free["held_out_ridge_r2"]["before"] == private["held_out_ridge_r2"]["before"]
  # Measured: after 0.48 (lam 0), 0.12 (lam 10); before 0.72.
  assert private["held_out_ridge_r2"]["after"] < free["held_out_ridge_r2"]["after"] - 0.2
  assert private["end"]["privacy_r2"] < free["end"]["privacy_r2"] - 0.2
  assert np.isfinite(private["end"]["utility_loss"])
  assert private["lambda"] == 10.0 and isinstance(private["seconds"], float)


def test_pixel_targets_are_the_top_principal_coordinates(rng):
  # Rank-5 images plus a little noise: 5 components hold nearly all the variance.
  pixels = (rng.standard_normal((300, 5)) @ rng.standard_normal((5, 200))).astype(np.float32)
  pixels += 0.05 * rng.standard_normal(pixels.shape).astype(np.float32)
  key = jax.random.key(0)
  for k in (0, 200, 500):  # every pixel: the pixels themselves
    same, share = learned._pixel_targets(key, pixels, k)
    assert same is pixels and share == 1.0
  targets, share = learned._pixel_targets(key, pixels, 5)
  assert targets.shape == (300, 5) and targets.dtype == np.float32
  # Orthonormal directions: the targets' variance is the variance they hold (all rows used).
  total = pixels.astype(np.float64).var(0).sum()
  assert targets.astype(np.float64).var(0).sum() / total == pytest.approx(share, rel=1e-4)
  assert 0.99 < share < 1.0
  one, _ = learned._pixel_targets(key, pixels, 1)
  np.testing.assert_allclose(np.abs(one[:, 0]), np.abs(targets[:, 0]), rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_an_in_loss_ridge_on_components_still_cuts_the_pixel_ridge(data, trained):
  _, info = _train(data, 10.0, pixel_components=16)
  assert info["in_loss_targets"].startswith("top 16 pixel principal components")
  assert trained[10.0][1]["in_loss_targets"] == "pixels"  # 64 pixels < 256: all of them
  # Measured: held-out R^2 on every pixel 0.72 -> 0.10 (16 components hold 85% of the
  # variance); lam 0 ends at 0.48.
  assert info["held_out_ridge_r2"]["after"] < trained[0.0][1]["held_out_ridge_r2"]["after"] - 0.2


@pytest.fixture(scope="module")
def narrow(data):
  """A linear g of width 16, a few steps only (its own compiled program)."""
  return _train(data, 1.0, hidden=0, width=16, steps=5)


@pytest.mark.slow
def test_the_width_setting_is_honoured(data, narrow):
  params, info = narrow
  assert info["architecture"] == "linear 32->16" and info["steps"] == 5
  assert params["net"]["w"].shape == (32, 16) and params["mean"].shape == (32,)
  out = _defend(params, data[0][:7])
  assert out.shape == (7, 16) and out.dtype == np.float32


@pytest.mark.slow
def test_the_same_key_gives_bitwise_the_same_params(data, narrow):
  params, _ = narrow
  again, _ = _train(data, 1.0, hidden=0, width=16, steps=5)
  other, _ = _train(data, 1.0, hidden=0, width=16, steps=5, key=1)
  same = jax.tree.map(np.array_equal, params, again)
  assert all(jax.tree.leaves(same)), same
  assert not np.array_equal(params["net"]["w"], other["net"]["w"])


def _nets(rng):
  """g's params as `train` lays them out, one of each architecture (see learned._g)."""
  n = lambda *shape: rng.standard_normal(shape).astype(np.float32) / np.sqrt(shape[0])
  return {
    "identity": {"w": np.eye(32, dtype=np.float32), "b": np.zeros(32, np.float32)},
    "linear 32->16": {"w": n(32, 16), "b": n(1, 16)[0]},
    "mlp 32->8->16": {
      "hidden": {"w": n(32, 8), "b": n(1, 8)[0]},
      "out": {"w": n(8, 16), "b": n(1, 16)[0]},
    },
    "mlp residual": {
      "hidden": {"w": n(32, 8), "b": n(1, 8)[0]},
      "out": {"w": n(8, 32), "b": n(1, 32)[0]},
    },
  }


@pytest.mark.slow
def test_transform_jits_and_differentiates_for_every_architecture(data, trained, rng):
  f = jnp.asarray(data[0][:7])
  mean, scale = trained[0.0][0]["mean"], trained[0.0][0]["scale"]
  fn = jax.jit(learned.transform)
  grad = jax.jit(
    jax.grad(lambda x, net: fn(x, None, lam=1.0, mean=mean, scale=scale, net=net).sum())
  )
  for name, net in _nets(rng).items():
    out = fn(f, jax.random.key(3), lam=1.0, mean=mean, scale=scale, net=net)
    width = 16 if "16" in name else 32
    assert out.shape == (7, width) and out.dtype == jnp.float32, name
    g = grad(f, net)
    assert g.shape == f.shape and np.all(np.isfinite(g)) and np.abs(g).max() > 0, name
  x = (f - mean) / scale
  net = _nets(rng)["mlp residual"]
  h = jax.nn.gelu(x @ net["hidden"]["w"] + net["hidden"]["b"])
  residual = fn(f, None, lam=0.0, mean=mean, scale=scale, net=net)
  np.testing.assert_allclose(residual, x + h @ net["out"]["w"] + net["out"]["b"], atol=1e-5)
  identity = fn(f, None, lam=0.0, mean=mean, scale=scale, net=_nets(rng)["identity"])
  np.testing.assert_allclose(identity, x, atol=1e-6)


@jax.jit
def _ridge_r2(z_fit, y_fit, z_eval, y_eval, penalties):
  return learned.ridge_r2(z_fit, y_fit, z_eval, y_eval, penalties=penalties)


def _golden_r2(z_fit, y_fit, z_eval, y_eval, penalty) -> float:
  """sklearn's Ridge at penalty x the mean eigenvalue of the centred Gram matrix."""
  zc = z_fit - z_fit.mean(0)
  alpha = penalty * np.sum(zc * zc) / z_fit.shape[1]
  pred = Ridge(alpha=alpha).fit(z_fit, y_fit).predict(z_eval)
  return 1 - np.mean((pred - y_eval) ** 2) / np.mean((y_eval - y_fit.mean(0)) ** 2)


@pytest.mark.parametrize("dim", [6, 90])  # the primal form, and the dual (D' > n)
def test_ridge_r2_matches_sklearn(rng, dim):
  z = rng.standard_normal((100, dim))
  y = np.tanh(z[:, :4] @ rng.standard_normal((4, 12))) + 0.3 * rng.standard_normal((100, 12))
  for penalty in (1e-2, 1.0):
    got = _ridge_r2(z[:60], y[:60], z[60:], y[60:], [penalty])
    want = _golden_r2(z[:60], y[:60], z[60:], y[60:], penalty)
    np.testing.assert_allclose(float(got), want, atol=2e-4)


def test_ridge_r2_sees_a_linear_code_and_not_noise_and_ignores_scale(rng):
  z = rng.standard_normal((400, 8)).astype(np.float32)
  y = z @ rng.standard_normal((8, 20)).astype(np.float32) + 0.5
  r2 = lambda z, p=(1e-6, 1e-3): float(_ridge_r2(z[:200], y[:200], z[200:], y[200:], p))
  assert r2(z) > 0.999
  assert r2(rng.standard_normal((400, 8)).astype(np.float32)) < 0.05
  assert abs(r2(z, (1e-1, 1.0)) - r2(10 * z, (1e-1, 1.0))) < 1e-5
  grad = jax.jit(
    jax.grad(lambda z: learned.ridge_r2(z[:200], y[:200], z[200:], y[200:], penalties=(0.1,)))
  )
  g = grad(jnp.asarray(z))
  assert g.shape == z.shape and np.all(np.isfinite(g)) and np.abs(g).max() > 0


def test_bad_input_is_one_line(data):
  features, images, labels, _, _ = data
  base = dict(strength=1.0, key=jax.random.key(0), settings=SETTINGS)
  with pytest.raises(DataError, match="2 classes"):
    learned.train(features=features[:50], images=images[:50], labels=np.zeros(50, int), **base)
  with pytest.raises(DataError, match="at least 8"):
    learned.train(features=features[:5], images=images[:5], labels=labels[:5], **base)
  with pytest.raises(
    DataError, match=r"images must be float \[50, H, W, C\], got float32 \[40, 8, 8, 1\]"
  ):
    learned.train(features=features[:50], images=images[:40], labels=labels[:50], **base)
  with pytest.raises(DataError, match="labels must be integers"):
    learned.train(features=features[:50], images=images[:50], labels=labels[:50] * 1.0, **base)
  with pytest.raises(DataError, match=r"features must be finite numbers \[M, D\]"):
    learned.train(features=features[:50, 0], images=images[:50], labels=labels[:50], **base)
  assert "must be a finite number >= 0" in learned.check(-1, 64)
  assert learned.check(float("nan"), 64) and learned.check("1", 64)
  assert learned.check(0, 64) is None and learned.check(10.0, None) is None
  with pytest.raises(ConfigError, match=r"^config\.defense\.sweep\.mine\.hidden .*-1"):
    learned.check_settings("mine", {"hidden": -1})
  for key, bad in [("width", 1.5), ("steps", 0), ("batch_size", 4), ("learning_rate", 0)]:
    with pytest.raises(ConfigError, match=rf"config\.defense\.sweep\.mine\.{key}"):
      learned.check_settings("mine", {key: bad})
  with pytest.raises(ConfigError, match=r"penalties\[1\]"):
    learned.check_settings("mine", {"penalties": (0.1, -1.0)})
  learned.check_settings("mine", {**learned.DEFAULTS, "type": "learned"})  # all fine
