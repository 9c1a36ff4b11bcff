"""Defenses as units: each pure and deterministic given its key, one compiled program for
every strength, bounds refused as one-line config errors, failures one line."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import privjax
from privjax import config as config_lib
from privjax import settings as settings_lib
from privjax.defenses import transforms as defenses
from privjax.errors import ConfigError
from privjax.runtime import parallel

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
  traces = []  # the shapes the defense is traced at

  def noisy(f, key, *, sigma):
    traces.append(f.shape)
    return f + sigma * jax.random.normal(key, f.shape)

  d = defenses.Defense(noisy, "sigma", None, None, "sigma")
  mesh = parallel.data_mesh()
  seen = []
  for sigma in (0.1, 0.5, 2.0, 8.0):
    defenses.apply(
      d, features, jax.random.key(0), {"sigma": sigma}, mesh=mesh, batch_size=64, name="d"
    )
    seen.append(len(traces))
  # At the first strength: the sweep's program (one row at a time under vmap) and the
  # purity probe's two (a batch of PROBE_ROWS rows, one row alone); no strength retraces.
  assert sorted(traces) == [(1, 16), (1, 16), (defenses.PROBE_ROWS, 16)]
  assert seen == [3, 3, 3, 3]


def _checked(sweep, dim=None, **defense):
  c = config_lib.for_images((8, 8, 1), {"defense": {"sweep": sweep, **defense}})
  config_lib.validate(c)
  settings_lib.check_sweep(c, dim)


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


def test_a_defense_sweep_config_builds(tmp_path):
  from configs import defense_sweep

  c = defense_sweep.get_config()
  audit_cfg = ml_collections.ConfigDict(c.to_dict())
  for key in ("data", "model", "evaluator"):
    del audit_cfg[key]
  checked = config_lib.for_images((16, 16, 1), audit_cfg)
  config_lib.validate(checked)
  settings_lib.check_sweep(checked, dim=c.model.embed_dim)
  assert sum(len(e.strengths) for e in checked.defense.sweep.values()) == 12


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


TOY_DEFENSES = '''
import itertools

import jax.numpy as jnp
import numpy as np

_calls = itertools.count()


def batch_centred(features, key, *, strength):
    """Centres on the batch's mean: what a row becomes depends on the other rows."""
    return strength * (features - features.mean(axis=0))


def batch_scaled(features, key, *, strength):
    """Divides by the batch's std: a row alone is 0 / 0."""
    return features / (strength * features.std(axis=0))


def host_noise(features, key, *, strength):
    """Noise drawn on the host when traced, not from the key."""
    return features + strength * np.random.default_rng().normal(size=features.shape)


def counted(features, key, *, strength):
    """State: each trace adds its own count."""
    return features + strength * next(_calls)
'''


@pytest.mark.parametrize(
  "fn, match",
  [
    ("batch_centred", r"the same 4 rows beside other rows in a batch \(same key\)"),
    ("batch_scaled", r"the same 4 rows beside other rows in a batch \(same key\)"),
    ("host_noise", r"row 0 alone and in the sweep's batches \(same key\)"),
    ("counted", r"row 0 alone and in the sweep's batches \(same key\)"),
  ],
)
def test_a_user_defense_that_is_not_pure_per_row_is_refused_in_one_line(
  fn, match, features, tmp_path, monkeypatch
):
  (tmp_path / "toy_defenses.py").write_text(TOY_DEFENSES)
  monkeypatch.syspath_prepend(str(tmp_path))
  d = defenses.get(f"toy_defenses:{fn}", "strength")
  with pytest.raises(privjax.ModelError, match=match) as e:
    defenses.apply(
      d,
      features,
      jax.random.key(0),
      {"strength": 1.0},
      mesh=parallel.data_mesh(),
      batch_size=64,
      name="mine",
    )
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith("defense mine is not a pure function of each feature vector")


@pytest.mark.parametrize(
  "kind, strengths",
  [
    ("none", (0.0,)),
    ("gaussian_noise", (0.0, 0.5, 32.0)),
    ("normalize_noise", (0.0, 2.0)),
    ("quantize", (1, 16)),
    ("pca_truncate", (1, 16)),
  ],
)
@pytest.mark.parametrize("rows", [1, 2, 203])
def test_every_builtin_defense_passes_the_purity_probe(kind, strengths, rows, features):
  for strength in strengths:
    out = _apply(kind, features[:rows], strength, fit_on=features)
    assert out.shape == (rows, 16)


@pytest.mark.parametrize(
  ("returned", "match"),
  [
    ([1.0], r"defense bad's train must return \(params, info\), two dicts, got \(list, dict\)"),
    ({"w": 1.0}, r"defense bad's training info must be JSON-ready"),
  ],
)
def test_a_learning_defense_that_returns_the_wrong_things_is_one_line(returned, match):
  import jax

  from privjax.defenses import sweep
  from privjax.errors import ModelError

  info = {} if isinstance(returned, list) else {"curve": np.zeros(2)}

  def train(**kw):
    del kw
    return returned, info

  bad = defenses.Defense(lambda f, k, **p: f, "lam", None, None, "lam", train=train, defaults={})
  own = sweep.Defender(np.zeros((8, 2)), np.zeros((8, 2, 2, 1)), np.arange(8) % 2, "own")
  with pytest.raises(ModelError, match=match) as e:
    sweep._trained_point(None, None, bad, {}, 1.0, own, key=jax.random.key(0), name="bad")
  assert "\n" not in str(e.value)
