"""The purity probe: a model differing at its own compute precision across batch shapes is
accepted (bfloat16 on TPUs and GPUs), an impure one is refused with its tolerance named."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privjax.errors import ModelError
from privjax.runtime import parallel
from privjax.stages import extraction

_W = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)


def _model(dtype, jitter):
  """`x @ W` computed in `dtype`, off by `jitter` (relative) in batches other than 32: the
  summation-order effect of a batch-shape-dependent kernel, or a genuine impurity."""

  def embed(p, x):
    f = x.reshape(x.shape[0], -1).astype(dtype) @ p.astype(dtype)
    off = jitter if x.shape[0] != 32 else 0.0
    return f.astype(jnp.float32) * (1.0 + off)

  return jax.jit(embed)


def _probe(embed, tolerance=0.0):
  images = np.random.default_rng(1).uniform(size=(32, 8, 8, 1)).astype(np.float32)
  mesh = parallel.data_mesh()
  params = parallel.replicate(jnp.asarray(_W), mesh)
  extraction.check_deterministic(
    embed, params, images, mesh=mesh, batch_size=32, tolerance=tolerance
  )


def test_compute_precision_finds_the_narrowest_float():
  assert extraction.compute_precision(_model(jnp.float32, 0.0), _W, (8, 8, 1)) == (
    "float32",
    1e-4,
  )
  assert extraction.compute_precision(_model(jnp.bfloat16, 0.0), _W, (8, 8, 1)) == (
    "bfloat16",
    2**-7,
  )


def test_bfloat16_jitter_across_batch_shapes_is_accepted():
  _probe(_model(jnp.bfloat16, 0.004))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_a_one_percent_difference_is_refused_with_its_tolerance(dtype):
  with pytest.raises(ModelError, match=r"above .* of it \(the tolerance of a model computing in"):
    _probe(_model(dtype, 0.01))


def test_bfloat16_sized_jitter_in_a_float32_model_is_refused_unless_allowed():
  with pytest.raises(ModelError, match="raise --config.purity_tolerance"):
    _probe(_model(jnp.float32, 0.004))
  _probe(_model(jnp.float32, 0.004), tolerance=0.01)


@pytest.mark.parametrize(
  "features",
  [
    np.ones((5, 3), np.complex64) * (1 + 2j),  # the signal in the imaginary part
    np.full((5, 3), None, dtype=object),
    np.full((5, 3), "0.5"),
    np.zeros((5, 3), "datetime64[s]"),
  ],
  ids=["complex", "object", "string", "datetime"],
)
def test_stored_features_that_are_not_real_numbers_are_refused_in_one_line(features):
  import warnings

  from privjax.errors import DataError

  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no ComplexWarning: refused, never cast
    with pytest.raises(DataError, match=r"aux_features must be real numbers .* got dtype") as e:
      extraction.check_features(features, 5, name="aux_features")
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.int32, np.float16, np.float64])
def test_stored_real_features_are_accepted(dtype):
  out = extraction.check_features(np.ones((5, 3), dtype), 5, name="aux_features")
  assert out.shape == (5, 3) and out.dtype.kind == "f"


def test_a_model_returning_complex_features_is_refused(digits8):
  x = digits8[0][:40]
  with pytest.raises(ModelError, match="real features .* got dtype complex64"):
    extraction.extract_features(
      jax.jit(lambda p, im: im.reshape(im.shape[0], -1).astype(jnp.complex64) @ p),
      jnp.ones((64, 4), jnp.complex64),
      x,
      mesh=parallel.data_mesh(),
      batch_size=16,
      name="aux_images",
    )
