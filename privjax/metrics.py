"""Scores: per-image SSIM/PSNR/MSE, all-pairs SSIM, rank-1 identification, bootstrap.

Our SSIM is dm-pix's (`dm_pix.ssim`): the Gaussian SSIM of Wang et al. 2004 with
constants K1=0.01, K2=0.03, data range 1, computed on the "valid" region (no
padding: the window never leaves the image) and averaged over that region and the
channels. It equals skimage's `structural_similarity(gaussian_weights=True,
sigma=..., use_sample_covariance=False, data_range=1)` up to float error. We pass
dm-pix a `filter_fn` that applies the same separable Gaussian as a sum of shifted
slices, which XLA fuses into one loop.

`pairwise_ssim` computes the same SSIM for every (reconstruction, original) pair:
the local means and variances come from the filter per image, and the cross terms
sum_q w_q x_q y_q for all pairs at once are one batched matrix product over
image patches. Its diagonal equals `ssim` (tested).
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


def gaussian_filter_fn(filter_size: int, filter_sigma: float):
  """Returns a valid-mode separable Gaussian filter over the H and W axes of [..., H, W, C]."""
  w = gaussian_weights(filter_size, filter_sigma)

  def filter_fn(z):
    h, wd = z.shape[-3], z.shape[-2]
    ho, wo = h - filter_size + 1, wd - filter_size + 1
    rows = sum(w[i] * z[..., i : i + ho, :, :] for i in range(filter_size))
    return sum(w[i] * rows[..., :, i : i + wo, :] for i in range(filter_size))

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


def _local_stats(x, filter_fn):
  mu = filter_fn(x)
  var = filter_fn(x * x) - mu * mu
  return mu, jnp.maximum(jnp.finfo(jnp.float32).eps ** 2, var)


def _patches(x, k: int):
  """[N, H, W, C] -> [P, N, k*k] patches of k x k windows (P = Ho*Wo*C valid positions)."""
  n, h, w, c = x.shape
  ho, wo = h - k + 1, w - k + 1
  taps = [x[:, i : i + ho, j : j + wo, :] for i in range(k) for j in range(k)]
  p = jnp.stack(taps, axis=-1).reshape(n, ho * wo * c, k * k)
  return jnp.transpose(p, (1, 0, 2))


@functools.partial(jax.jit, static_argnames=("filter_size", "filter_sigma"))
def pairwise_ssim_block(queries, gallery, *, filter_size: int, filter_sigma: float):
  """SSIM of every (query, gallery) pair: [Q, H, W, C] x [G, H, W, C] -> [Q, G].

  Same definition, clipping and constants as `ssim` (dm-pix), so
  `pairwise_ssim_block(a, b)[i, i] == ssim(a, b)[i]` up to float error.
  """
  chex.assert_rank([queries, gallery], 4)
  filter_fn = gaussian_filter_fn(filter_size, filter_sigma)
  w1 = gaussian_weights(filter_size, filter_sigma)
  w2 = jnp.asarray(np.outer(w1, w1).reshape(1, 1, -1))
  mu_q, var_q = _local_stats(queries, filter_fn)  # [Q, Ho, Wo, C]
  mu_g, var_g = _local_stats(gallery, filter_fn)  # [G, Ho, Wo, C]
  q = mu_q.shape[0]
  g = mu_g.shape[0]
  mu_q, var_q = mu_q.reshape(q, -1), var_q.reshape(q, -1)  # [Q, P]
  mu_g, var_g = mu_g.reshape(g, -1), var_g.reshape(g, -1)  # [G, P]
  cross = jnp.einsum(
    "pqk,pgk->qgp",
    _patches(queries, filter_size) * w2,
    _patches(gallery, filter_size),
    precision=jax.lax.Precision.HIGHEST,
  )  # [Q, G, P]: sum over the window of w * x_q * y_g
  mu_qg = mu_q[:, None, :] * mu_g[None, :, :]
  cov = cross - mu_qg
  var_prod = var_q[:, None, :] * var_g[None, :, :]
  cov = jnp.sign(cov) * jnp.minimum(jnp.sqrt(var_prod), jnp.abs(cov))
  c1, c2 = K1**2, K2**2
  numer = (2 * mu_qg + c1) * (2 * cov + c2)
  denom = (mu_q[:, None, :] ** 2 + mu_g[None, :, :] ** 2 + c1) * (
    var_q[:, None, :] + var_g[None, :, :] + c2
  )
  return jnp.mean(numer / denom, axis=-1)


def cosine_similarity_matrix(queries, gallery):
  """Cosine similarity of every (query, gallery) feature pair: [Q, D] x [G, D] -> [Q, G]."""
  q = queries / jnp.maximum(jnp.linalg.norm(queries, axis=-1, keepdims=True), 1e-12)
  g = gallery / jnp.maximum(jnp.linalg.norm(gallery, axis=-1, keepdims=True), 1e-12)
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


def label_hits(similarity: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """[N] bool: the best-matching gallery item of query i has query i's label.

  The best match is the highest-scoring gallery item (lowest index on ties).
  """
  best = np.argmax(np.asarray(similarity), axis=1)
  labels = np.asarray(labels)
  return labels[best] == labels


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
