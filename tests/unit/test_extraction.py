"""The purity probe: a model differing at its own compute precision across batch shapes is
accepted (bfloat16 on TPUs and GPUs), an impure one is refused with its tolerance named."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privjax import extraction, parallel
from privjax.errors import ModelError

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
