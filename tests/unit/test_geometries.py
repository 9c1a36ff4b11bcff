"""benchmarks/geometries.py: every transposed-convolution formulation computes the same thing."""

import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_fast_transposed_convolutions_equal_pytorch_semantics():
  """Every formulation computes PyTorch's ConvTranspose2d(k=4, s=2, p=1)."""
  import jax
  import numpy as np

  sys.path.insert(0, REPO_ROOT)
  from benchmarks.geometries import ConvTranspose4x4s2

  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 5, 6, 3)))

  def naive(x, w):  # y[2i - 1 + ky, 2j - 1 + kx] += x[i, j] @ w[ky, kx]
    b, h, wd, _ = x.shape
    y = np.zeros((b, 2 * h + 2, 2 * wd + 2, w.shape[3]))
    for i in range(h):
      for j in range(wd):
        for ky in range(4):
          for kx in range(4):
            y[:, 2 * i + ky, 2 * j + kx] += x[:, i, j] @ w[ky, kx]
    return y[:, 1:-1, 1:-1]

  for mode in ("transpose", "subpixel", "phases", "gemm", "gemm4"):
    layer = ConvTranspose4x4s2(4, mode, use_bias=False)
    params = layer.init(jax.random.key(1), x)
    np.testing.assert_allclose(
      layer.apply(params, x), naive(x, np.asarray(params["params"]["kernel"])), atol=1e-5
    )


@pytest.mark.slow
def test_per_layer_modes_compute_the_same_network():
  import jax
  import numpy as np
  import pytest

  from benchmarks.geometries import BEST_MODE, GEOMETRIES

  for name, g in GEOMETRIES.items():
    z = jax.random.normal(jax.random.key(0), (2, g["in_dim"]))
    # Jitted: one program each, not one compilation per eager operation.
    variables = jax.jit(g["model"]("phases").init)(jax.random.key(1), z)
    want = jax.jit(g["model"]("transpose").apply, static_argnames="train")(
      variables, z, train=False
    )
    got = jax.jit(g["model"](BEST_MODE[name]).apply, static_argnames="train")(
      variables, z, train=False
    )
    np.testing.assert_allclose(got, want, atol=1e-5, err_msg=name)
    with pytest.raises(ValueError, match="comma-separated modes, got 'phases,gemm'"):
      g["model"]("phases,gemm").init(jax.random.key(1), z)
