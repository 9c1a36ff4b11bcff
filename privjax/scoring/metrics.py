"""Scores: per-image SSIM/PSNR/MSE, all-pairs SSIM, rank-1 identification, bootstrap.

Our SSIM is dm-pix's (`dm_pix.ssim`): the Gaussian SSIM of Wang et al. 2004 with
constants K1=0.01, K2=0.03, data range 1, computed on the "valid" region (no
padding: the window never leaves the image) and averaged over that region and the
channels. It equals skimage's `structural_similarity(gaussian_weights=True,
sigma=..., use_sample_covariance=False, data_range=1)` up to float error. We pass
dm-pix a `filter_fn` that applies the same separable Gaussian as two products with
banded matrices, which XLA runs at BLAS speed.

`pairwise_ssim_block` computes the same SSIM for every (reconstruction, original)
pair: local means and variances are filtered once per image, the cross terms of all
pairs in one pass of the same banded matrices, channels first so that both products
contract the last axis. Its diagonal equals `ssim` (tested).
"""

from __future__ import annotations

import functools

import chex
import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

K1, K2 = 0.01, 0.03


def gaussian_weights(filter_size: int, filter_sigma: float) -> np.ndarray:
  """The 1-D normalised Gaussian window dm-pix uses, as a numpy float32 array."""
  half = filter_size // 2
  shift = (2 * half - filter_size + 1) / 2
  f = np.exp(-0.5 * ((np.arange(filter_size) - half + shift) / filter_sigma) ** 2)
  return (f / f.sum()).astype(np.float32)


def _band(n: int, filter_size: int, filter_sigma: float) -> np.ndarray:
  """[n - k + 1, n]: row i holds the Gaussian weights at columns i .. i + k - 1."""
  w = gaussian_weights(filter_size, filter_sigma)
  m = np.zeros((n - filter_size + 1, n), np.float32)
  for i in range(n - filter_size + 1):
    m[i, i : i + filter_size] = w
  return m


def gaussian_filter_fn(filter_size: int, filter_sigma: float):
  """Returns a valid-mode separable Gaussian filter over the H and W axes of [..., H, W, C].

  Each 1-D pass is a product with a banded [H - k + 1, H] matrix of the Gaussian
  weights: the same sums as a sliding window, computed as two matrix products, which
  XLA runs at BLAS speed (8x faster than dm-pix's default `jnp.convolve` filter at
  32x32 on 2 CPU cores; see benchmarks/).
  """

  def filter_fn(z):
    hi = jax.lax.Precision.HIGHEST
    z = jnp.einsum(
      "hH,...HWc->...hWc", _band(z.shape[-3], filter_size, filter_sigma), z, precision=hi
    )
    return jnp.einsum(
      "wW,...hWc->...hwc", _band(z.shape[-2], filter_size, filter_sigma), z, precision=hi
    )

  return filter_fn


def _channels_first_filter(filter_size: int, filter_sigma: float):
  """The same filter on [..., C, H, W], returning [..., C, Wo, Ho] (transposed): both
  passes contract the last axis, so XLA needs no transposes of the large pair tensors
  around the products (1.2x faster than `gaussian_filter_fn` on them at 64x64x3)."""

  def filter_fn(z):
    hi = jax.lax.Precision.HIGHEST
    z = jnp.matmul(z, _band(z.shape[-1], filter_size, filter_sigma).T, precision=hi)
    z = jnp.swapaxes(z, -1, -2)
    return jnp.matmul(z, _band(z.shape[-1], filter_size, filter_sigma).T, precision=hi)

  return filter_fn


def ssim(a, b, *, filter_size: int, filter_sigma: float):
  """Per-image dm-pix SSIM of [N, H, W, C] images in [0, 1]; returns [N]."""
  return dm_pix.ssim(
    a,
    b,
    max_val=1.0,
    filter_size=filter_size,
    filter_sigma=filter_sigma,
    filter_fn=gaussian_filter_fn(filter_size, filter_sigma),
  )


def image_scores(originals, reconstructions, *, filter_size: int, filter_sigma: float):
  """Per-image scores of a batch: {"ssim", "psnr", "mse"}, each [N]."""
  return {
    "ssim": ssim(originals, reconstructions, filter_size=filter_size, filter_sigma=filter_sigma),
    "psnr": dm_pix.psnr(originals, reconstructions),
    "mse": dm_pix.mse(originals, reconstructions),
  }


# Jitted once, the SSIM window static, for callers that map them over batches: every call
# with the same shapes and window reuses one compiled program.
ssim_jit = jax.jit(ssim, static_argnames=("filter_size", "filter_sigma"))
image_scores_jit = jax.jit(image_scores, static_argnames=("filter_size", "filter_sigma"))


def _local_stats(x, filter_fn):
  mu = filter_fn(x)
  var = filter_fn(x * x) - mu * mu
  return mu, jnp.maximum(jnp.finfo(jnp.float32).eps ** 2, var)


@functools.partial(jax.jit, static_argnames=("filter_size", "filter_sigma"))
def pairwise_ssim_block(queries, gallery, *, filter_size: int, filter_sigma: float):
  """SSIM of every (query, gallery) pair: [Q, H, W, C] x [G, H, W, C] -> [Q, G].

  Same definition, clipping and constants as `ssim` (dm-pix), so
  `pairwise_ssim_block(a, b)[i, i] == ssim(a, b)[i]` up to float error. Local means
  and variances are filtered once per image; the cross terms filter(x_q * y_g) of all
  Q * G pairs go through the banded-matrix filter as two large matrix products.
  Memory is O(Q * G * H * W * C): callers block Q and G (small blocks that stay in
  the CPU's cache run fastest: scoring.py).
  """
  chex.assert_rank([queries, gallery], 4)
  filter_fn = _channels_first_filter(filter_size, filter_sigma)
  queries = jnp.transpose(queries, (0, 3, 1, 2))  # [Q, C, H, W]
  gallery = jnp.transpose(gallery, (0, 3, 1, 2))
  mu_q, var_q = _local_stats(queries, filter_fn)  # [Q, C, Wo, Ho]
  mu_g, var_g = _local_stats(gallery, filter_fn)  # [G, C, Wo, Ho]
  limit = jnp.sqrt(var_q)[:, None] * jnp.sqrt(var_g)[None]  # [Q, G, C, Wo, Ho]
  mu_q, var_q = mu_q[:, None], var_q[:, None]  # [Q, 1, C, Wo, Ho]
  mu_g, var_g = mu_g[None], var_g[None]  # [1, G, C, Wo, Ho]
  mu_qg = mu_q * mu_g
  cov = jnp.clip(filter_fn(queries[:, None] * gallery[None]) - mu_qg, -limit, limit)
  c1, c2 = K1**2, K2**2
  numer = (2 * mu_qg + c1) * (2 * cov + c2)
  denom = (mu_q**2 + mu_g**2 + c1) * (var_q + var_g + c2)
  return jnp.mean(numer / denom, axis=(2, 3, 4))


def unit_rows(x):
  """[..., D] rows scaled to unit length (a zero row stays zero)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cosine_similarity_matrix(queries, gallery):
  """Cosine similarity of every (query, gallery) feature pair: [Q, D] x [G, D] -> [Q, G]."""
  q, g = unit_rows(queries), unit_rows(gallery)
  return jnp.matmul(q, g.T, precision=jax.lax.Precision.HIGHEST)


def rank1_hits(similarity: np.ndarray) -> np.ndarray:
  """Rank-1 identification of query i against gallery item i, ties against the attacker.

  Args:
    similarity: [N, N], row i = query i (a reconstruction) against every gallery
      item (the originals); the true match of query i is gallery item i.

  Returns:
    [N] bool: True where the true match scores strictly higher than every other
    gallery item. If all queries are identical, exactly one query can be a hit, so
    the rate is chance (1/N), never 100%.
  """
  s = np.asarray(similarity, np.float64)
  chex.assert_rank(s, 2)
  chex.assert_equal(s.shape[0], s.shape[1])
  diag = np.diag(s).copy()
  off = s.copy()
  np.fill_diagonal(off, -np.inf)
  return diag > off.max(axis=1)


def label_hits(best: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """[N] bool: the best-matching gallery item `best[i]` of query i has query i's label."""
  labels = np.asarray(labels)
  return labels[np.asarray(best)] == labels


def squared_distances(queries, gallery):
  """[Q, G] squared pixel distances of flattened images, as one matrix product."""
  q = queries.reshape(queries.shape[0], -1)
  g = gallery.reshape(gallery.shape[0], -1)
  cross = jnp.matmul(q, g.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.sum(q * q, axis=1)[:, None] + jnp.sum(g * g, axis=1)[None, :] - 2 * cross


def label_chance(labels: np.ndarray) -> float:
  """Chance rate of a label match: sum over classes of the squared class frequency."""
  _, counts = np.unique(np.asarray(labels), return_counts=True)
  p = counts / counts.sum()
  return float(np.sum(p * p))


def bootstrap_mean_ci(values: np.ndarray, *, samples: int, seed: int, level: float = 0.95):
  """Percentile bootstrap confidence interval of the mean of `values` ([N])."""
  v = np.asarray(values, np.float64)
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, v.shape[0], size=(samples, v.shape[0]))
  means = v[idx].mean(axis=1)
  alpha = (1.0 - level) / 2
  return [float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))]
