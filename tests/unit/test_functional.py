"""The attackers' functional core: `fit(aux, *, key, settings) -> params` and a pure
`reconstruct(params, features)` that jits, vmaps and differentiates; the audit's attackers
(`attack(aux, ctx, cfg)`) are these functions batched over the mesh, bit for bit."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from privjax import attacks
from privjax.attacks import blend, decoder, nearest, ridge, runner, whitebox
from privjax.runtime import parallel
from privjax.scoring.standardizer import Standardizer

_PROJ = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
RIDGE = {"num_features": 40, "bandwidths": (1.0, 2.0)}
DECODER = {
  "num_steps": 30,
  "eval_every": 10,
  "warmup_steps": 5,
  "batch_size": 64,
  "width": 16,
  "hidden": 32,
}
WINDOW = {"filter_size": 3, "filter_sigma": 0.5}
SEED = 3


def _embed(params, images):
  return jnp.tanh(images.reshape(images.shape[0], -1) @ params / 4.0)


@pytest.fixture(scope="module")
def data(digits8):
  """(aux, target features, targets, standardised embedding) of the digits at 8x8."""
  x = digits8[0][:280]
  raw = np.asarray(_embed(_PROJ, x))
  std = Standardizer.fit(raw[:240])
  f = std(raw)
  idx = np.arange(240)
  aux = attacks.AuxSet(f[:240], x[:240], idx[:200], idx[200:])
  return aux, f[240:], x[240:], lambda p, im: jnp.asarray(std(_embed(p, im)))


def _context(fitted=None, model=None, running=()):
  return attacks.Context(
    mesh=parallel.data_mesh(),
    seed=SEED,
    eval_batch_size=32,
    checkpoint_dir=None,
    model=model,
    fitted=fitted,
    running=running,
    **WINDOW,
  )


def _audit(name, aux, ctx, settings):
  """The attacker as the audit runs it (its registered adapter)."""
  own = attacks.own_config(ml_collections.ConfigDict(attacks.with_defaults(name, settings)))
  return attacks.get(name)(aux, ctx, own)


@pytest.fixture(scope="module")
def fitted(data):
  """Each attacker fitted by `fit` with two keys (SEED and SEED + 1), and as the audit
  fits it (seed SEED)."""
  aux = data[0]
  out = {}
  for s in (SEED, SEED + 1):
    key = jax.random.key(s)
    out["ridge", s] = ridge.fit(aux, key=key, settings=RIDGE, eval_batch_size=32)
    out["decoder", s] = decoder.fit(aux, key=key, settings=DECODER, eval_batch_size=32, **WINDOW)
  out["nearest", SEED] = nearest.fit(aux, key=jax.random.key(SEED), settings={})
  audit = {}
  ctx = _context(fitted=lambda n: audit[n], running=("ridge", "decoder", "nearest", "blend"))
  for name, settings in (("ridge", RIDGE), ("decoder", DECODER), ("nearest", {})):
    audit[name] = _audit(name, aux, ctx, settings)
  audit["blend"] = _audit("blend", aux, ctx, {"members": ("ridge", "decoder")})
  out["audit"] = audit
  return out


def _leaves_equal(a, b) -> bool:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  same_structure = jax.tree.structure(a) == jax.tree.structure(b)
  return same_structure and all(
    np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True)
  )


def _stacked(p0, p1):
  return jax.tree.map(lambda a, b: jnp.stack([a, b]), p0, p1)


def _check_gradients(apply, params, features, targets):
  """Finite gradients with respect to the params and the features, not all zero."""

  def loss(p, f):
    return jnp.mean((apply(p, f) - targets) ** 2)

  g_params, g_features = jax.grad(loss, argnums=(0, 1))(params, jnp.asarray(features))
  leaves = [np.asarray(g) for g in jax.tree.leaves(g_params)]
  assert leaves and all(np.all(np.isfinite(g)) for g in leaves)
  assert sum(float(np.abs(g).sum()) for g in leaves) > 0
  assert np.all(np.isfinite(g_features)) and np.abs(np.asarray(g_features)).sum() > 0
  assert g_features.shape == features.shape


def test_key_seed_maps_a_key_back_to_its_int_seed():
  for s in (0, 1, SEED, 2**31 + 5, 2**32 - 1):
    assert attacks.key_seed(jax.random.key(s)) == s
  assert attacks.key_seed(jax.random.PRNGKey(7)) == 7  # a raw uint32 key
  a, b = jax.random.split(jax.random.key(0))
  assert attacks.key_seed(a) != attacks.key_seed(b)
  assert 0 <= attacks.key_seed(a) < 2**32


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ridge", "decoder"])
def test_reconstruct_jits_vmaps_and_differentiates(data, fitted, name):
  aux, tgt_f, targets, _ = data
  module = {"ridge": ridge, "decoder": decoder}[name]
  p0, p1 = fitted[name, SEED], fitted[name, SEED + 1]
  plain = np.asarray(module.reconstruct(p0, jnp.asarray(tgt_f)))
  assert plain.shape == (40, 8, 8, 1) and plain.min() >= 0 and plain.max() <= 1
  jitted = np.asarray(jax.jit(module.reconstruct)(p0, tgt_f))
  np.testing.assert_allclose(jitted, plain, atol=1e-6)
  # Over a batch axis: [2, 20, D] -> [2, 20, H, W, C].
  split = jax.vmap(module.reconstruct, in_axes=(None, 0))(p0, tgt_f.reshape(2, 20, -1))
  np.testing.assert_allclose(np.asarray(split).reshape(plain.shape), plain, atol=1e-6)
  # Over params fitted with two keys.
  both = np.asarray(
    jax.jit(jax.vmap(module.reconstruct, in_axes=(0, None)))(_stacked(p0, p1), tgt_f)
  )
  np.testing.assert_allclose(both[0], plain, atol=1e-6)
  np.testing.assert_allclose(both[1], np.asarray(module.reconstruct(p1, tgt_f)), atol=1e-6)
  assert not np.allclose(both[0], both[1])  # another key: other random features, init, order
  _check_gradients(jax.jit(module.reconstruct), p0, tgt_f, targets)


@pytest.mark.parametrize("name", ["ridge", "decoder", "nearest"])
def test_fit_with_the_seeds_key_reproduces_the_audits_attacker_bit_for_bit(data, fitted, name):
  aux, tgt_f, _, _ = data
  module = {"ridge": ridge, "decoder": decoder, "nearest": nearest}[name]
  audit = fitted["audit"][name]
  assert audit.apply is module.reconstruct
  assert _leaves_equal(fitted[name, SEED], audit.params)
  mesh = parallel.data_mesh()
  ours = attacks.batched(module.reconstruct, fitted[name, SEED], mesh=mesh, batch_size=32)
  assert np.array_equal(ours(tgt_f), audit.reconstruct(tgt_f))
  direct = np.asarray(jax.jit(module.reconstruct)(fitted[name, SEED], tgt_f))
  np.testing.assert_allclose(direct, audit.reconstruct(tgt_f), atol=1e-6)


def test_held_out_params_fit_without_the_validation_images(data, fitted):
  aux = data[0]
  val_f = aux.features[aux.val]
  for name in ("ridge", "nearest"):
    audit = fitted["audit"][name]
    held = audit.held_out_params()
    module = {"ridge": ridge, "nearest": nearest}[name]
    np.testing.assert_array_equal(
      np.asarray(jax.jit(module.reconstruct)(held, val_f)), audit.reconstruct_held_out(val_f)
    )
  assert nearest.fit(aux, key=None, settings={}).images.shape[0] == 240
  assert fitted["audit"]["nearest"].held_out_params().images.shape[0] == 200  # aux.train only


@pytest.mark.slow
def test_nearest_jits_and_its_soft_version_differentiates(data, fitted):
  aux, tgt_f, targets, _ = data
  params = fitted["nearest", SEED]
  assert "no useful gradient" in nearest.reconstruct.__doc__
  out = np.asarray(jax.jit(nearest.reconstruct)(params, aux.features[:16]))
  np.testing.assert_array_equal(out, aux.images[:16])  # each auxiliary image is its own nearest
  soft = jax.jit(nearest.reconstruct_soft, static_argnames="temperature")
  cold = np.asarray(soft(params, aux.features[:16], temperature=1e-4))
  np.testing.assert_allclose(cold, aux.images[:16], atol=1e-4)
  _check_gradients(lambda p, f: nearest.reconstruct_soft(p, f), params, tgt_f, targets)


@pytest.mark.slow
def test_blend_composes_its_members_pure_reconstructs(data, fitted):
  aux, tgt_f, targets, _ = data
  audit = fitted["audit"]
  members = {m: audit[m] for m in ("ridge", "decoder")}
  params = blend.fit(
    aux, key=jax.random.key(SEED), settings={"members": ("ridge", "decoder")}, members=members
  )
  info = audit["blend"].info
  w = np.asarray([*info["weights"], info["offset"]], np.float32)
  np.testing.assert_array_equal(np.asarray(params.weights), w)
  assert _leaves_equal(params.members, (audit["ridge"].params, audit["decoder"].params))
  assert _leaves_equal(params, audit["blend"].params) and audit["blend"].apply is blend.reconstruct
  out = np.asarray(jax.jit(blend.reconstruct)(params, tgt_f))
  # The audit combines in float64 on the host: the same to float32 rounding.
  np.testing.assert_allclose(out, audit["blend"].reconstruct(tgt_f), atol=2e-6)
  split = jax.vmap(blend.reconstruct, in_axes=(None, 0))(params, tgt_f.reshape(2, 20, -1))
  np.testing.assert_allclose(np.asarray(split).reshape(out.shape), out, atol=1e-6)
  _check_gradients(jax.jit(blend.reconstruct), params, tgt_f, targets)
  with pytest.raises(attacks.Skipped, match="fewer than two"):
    blend.fit(
      aux, key=None, settings={"members": ("ridge", "decoder")}, members={"ridge": members["ridge"]}
    )


@pytest.mark.slow
def test_whitebox_is_one_pure_function_of_model_start_and_features(data, fitted):
  aux, tgt_f, targets, embed = data
  model = attacks.Model(embed=embed, params=_PROJ, key="tanh")
  settings = {"init": "ridge", "steps": 10, "checkpoints": 2, "tv_weights": (0.0,), "patience": 0}
  starts = {"ridge": fitted["audit"]["ridge"]}
  params = whitebox.fit(
    aux,
    key=jax.random.key(SEED),
    settings=settings,
    model=model,
    starts=starts,
    eval_batch_size=32,
    **WINDOW,
  )
  assert params.steps == 10 and params.start_apply is ridge.reconstruct
  ctx = _context(fitted=starts.__getitem__, model=model, running=("ridge", "whitebox"))
  audit = _audit("whitebox", aux, ctx, settings)
  assert audit.apply is whitebox.reconstruct and _leaves_equal(params, audit.params)
  out = np.asarray(jax.jit(whitebox.reconstruct)(params, tgt_f))
  np.testing.assert_allclose(out, audit.reconstruct(tgt_f), atol=1e-5)
  _check_gradients(jax.jit(whitebox.reconstruct), params, tgt_f[:8], targets[:8])


def test_a_user_attacker_returning_only_a_pure_function_is_batched_by_the_runner(data):
  aux, tgt_f, _, _ = data
  cfg = ml_collections.ConfigDict(
    {"toy": {"type": "tests.unit.toy_plugins:mean_image_pure", "gain": 0.5}}
  )
  context = {
    "mesh": parallel.data_mesh(),
    "seed": 0,
    "eval_batch_size": 32,
    "model": None,
    **WINDOW,
  }
  (out,) = runner.run_all(
    cfg, aux, tgt_f, context=context, data_key="k", workdir=None, overwrite=False
  )
  assert not out.skipped and out.reconstructions.shape == (40, 8, 8, 1)
  np.testing.assert_allclose(
    out.reconstructions[3], aux.images[aux.train].mean(axis=0) * 0.5, rtol=1e-6
  )
  assert out.info == {"gain": 0.5}
