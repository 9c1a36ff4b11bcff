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
contract the last axis. Its diagonal equals `ssim` (tested); `pairwise_ssim` maps it over
blocks of bounded memory.

The scores here are jnp functions of plain arrays that run under `jax.jit` with no mesh
(privjax.scoring.scores shards the same functions over the devices for scale): SSIM, PSNR
and MSE, rank-1 re-identification (`rank1_hits`, `rank1_rate`), label matches and their
chance (`label_hits`, `label_chance`), the mismatched-pairs baseline, and the percentile
bootstrap CI of a mean with a `jax.random` key (`bootstrap_mean_ci`). `ssim_window` and
`host_float` are host helpers (the window for an image size; a report's float).
"""

from __future__ import annotations

import functools

import chex
import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from privjax.errors import ConfigError

__all__ = [
  "K1",
  "K2",
  "DEFAULT_SSIM_FILTER_SIGMA",
  "DEFAULT_SSIM_FILTER_SIZE",
  "MIN_SSIM_SIGMA",
  "bootstrap_mean_ci",
  "cosine_similarity_matrix",
  "gaussian_filter_fn",
  "gaussian_weights",
  "host_float",
  "image_scores",
  "image_scores_jit",
  "label_chance",
  "label_hits",
  "mismatched_baseline",
  "pairwise_ssim",
  "pairwise_ssim_block",
  "rank1_hits",
  "rank1_rate",
  "squared_distances",
  "ssim",
  "ssim_jit",
  "ssim_window",
  "unit_rows",
]

# The Gaussian SSIM of Wang et al. 2004 (and skimage's `gaussian_weights=True`): an 11x11
# window with sigma 1.5, constants K1=0.01, K2=0.03.
K1 = 0.01  # SSIM's luminance constant: C1 = (K1 * dynamic range)^2
K2 = 0.03  # SSIM's contrast constant: C2 = (K2 * dynamic range)^2
DEFAULT_SSIM_FILTER_SIZE = 11  # the window's side in pixels (odd)
DEFAULT_SSIM_FILTER_SIGMA = 1.5  # the Gaussian's sigma in pixels
MIN_SSIM_SIGMA = 0.5  # pixels: a narrower Gaussian weighs almost only the centre pixel
# Largest [queries, gallery, H, W, C] float32 block of the all-pairs SSIM (16 MiB): blocks
# that stay in the CPU's cache scored 540 x 540 pairs at 64x64x3 2x faster than 128 MiB
# ones on 2 cores (18.6 s vs 38.6 s; 2^21 elements: 19.5 s).
PAIRWISE_SSIM_ELEMENTS = 2**22
_BOOTSTRAP_ELEMENTS = 2**24  # values drawn at once by `bootstrap_mean_ci` (64 MiB)


def ssim_window(
  height: int,
  width: int,
  filter_size: int = DEFAULT_SSIM_FILTER_SIZE,
  filter_sigma: float = DEFAULT_SSIM_FILTER_SIGMA,
) -> tuple[int, float]:
  """Returns the SSIM (filter_size, filter_sigma) to use for images of this size.

  Images smaller than the window get the largest odd window that fits, with sigma
  scaled by the same factor (so the window still spans the same number of standard
  deviations). A window that would need sigma below MIN_SSIM_SIGMA pixels to fit is
  refused: it would weigh almost only the centre pixel, and SSIM would degenerate into
  a per-pixel comparison.

  Raises:
    ConfigError: images smaller than 3x3, or a window that cannot shrink to fit them.
  """
  smallest = min(height, width)
  if filter_size <= smallest:
    return filter_size, filter_sigma
  size = smallest if smallest % 2 == 1 else smallest - 1
  if size < 3:
    raise ConfigError(f"images must be at least 3x3 pixels for SSIM, got {height}x{width}")
  sigma = filter_sigma * size / filter_size
  if sigma < MIN_SSIM_SIGMA:
    raise ConfigError(
      f"config.ssim.filter_size={filter_size} (sigma {filter_sigma}) does not fit "
      f"{height}x{width} images: shrunk to {size} pixels its sigma would be {sigma:.3g} < "
      f"{MIN_SSIM_SIGMA} pixel; set ssim.filter_size <= {size} and ssim.filter_sigma yourself"
    )
  return size, sigma


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
  Memory is O(Q * G * H * W * C): callers block Q and G (`pairwise_ssim`; small blocks
  that stay in the CPU's cache run fastest).
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


def _blocks(x, rows: int):
  """[N, ...] zero-padded to a multiple of `rows` and split: [ceil(N / rows), rows, ...]."""
  pad = -x.shape[0] % rows
  x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
  return x.reshape(-1, rows, *x.shape[1:])


def pairwise_ssim(queries, gallery, *, filter_size: int, filter_sigma: float):
  """SSIM of every (query, gallery) pair, [Q, H, W, C] x [G, H, W, C] -> [Q, G], in blocks.

  `pairwise_ssim_block` mapped (`jax.lax.map`) over blocks of queries and of the gallery,
  each block's pair products at most ~PAIRWISE_SSIM_ELEMENTS floats, so memory is the
  [Q, G] result plus one block whatever Q and G are. Runs under jit on one device;
  privjax.scoring.scores.pairwise_ssim shards the same blocks over a mesh.
  """
  chex.assert_rank([queries, gallery], 4)
  q_n, g_n = queries.shape[0], gallery.shape[0]
  side = max(1, int(np.sqrt(PAIRWISE_SSIM_ELEMENTS / np.prod(gallery.shape[1:]))))
  bq, bg = min(side, q_n), min(side, g_n)
  q_blocks, g_blocks = _blocks(jnp.asarray(queries), bq), _blocks(jnp.asarray(gallery), bg)

  def row(q):  # [bq, ...] -> [ng, bq, bg]
    return jax.lax.map(
      lambda g: pairwise_ssim_block(q, g, filter_size=filter_size, filter_sigma=filter_sigma),
      g_blocks,
    )

  out = jax.lax.map(row, q_blocks)  # [nq, ng, bq, bg]
  out = jnp.transpose(out, (0, 2, 1, 3)).reshape(out.shape[0] * bq, out.shape[1] * bg)
  return out[:q_n, :g_n]


def unit_rows(x):
  """[..., D] rows scaled to unit length (a zero row stays zero)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cosine_similarity_matrix(queries, gallery):
  """Cosine similarity of every (query, gallery) feature pair: [Q, D] x [G, D] -> [Q, G]."""
  q, g = unit_rows(queries), unit_rows(gallery)
  return jnp.matmul(q, g.T, precision=jax.lax.Precision.HIGHEST)


def rank1_hits(similarity):
  """Rank-1 identification of query i against gallery item i, ties against the attacker.

  A jnp function: it runs under `jax.jit` on plain arrays.

  Args:
    similarity: [N, N], row i = query i (a reconstruction) against every gallery
      item (the originals); the true match of query i is gallery item i.

  Returns:
    [N] bool: True where the true match scores strictly higher than every other
    gallery item. If all queries are identical, exactly one query can be a hit, so
    the rate is chance (1/N), never 100%.
  """
  s = jnp.asarray(similarity)
  chex.assert_rank(s, 2)
  chex.assert_equal(s.shape[0], s.shape[1])
  off = jnp.where(jnp.eye(s.shape[0], dtype=bool), -jnp.inf, s)
  return jnp.diagonal(s) > off.max(axis=1)


def rank1_rate(similarity):
  """The rank-1 re-identification rate of [N, N] `similarity` (`rank1_hits`' mean): a
  float scalar, whose chance level is 1 / N."""
  return jnp.mean(rank1_hits(similarity))


def label_hits(best, labels):
  """[N] bool: the best-matching gallery item `best[i]` ([N] int) of query i has query i's
  label (`labels`: [N] int, the gallery's and the queries' alike). Runs under jit."""
  labels = jnp.asarray(labels)
  chex.assert_rank(labels, 1)
  return labels[jnp.asarray(best)] == labels


def mismatched_baseline(similarity):
  """[N] mean similarity of each gallery item i with every query j != i: the no-information
  baseline of `similarity` [N, N] (row j = query j, its true match gallery item j).

  Written with array methods, so a numpy array is computed by numpy in its own dtype (the
  audit's float64 on the host) and a jax array by jnp (under jit: float32).
  """
  n = similarity.shape[0]
  return (similarity.sum(axis=0) - similarity.diagonal()) / (n - 1)


def squared_distances(queries, gallery):
  """[Q, G] squared pixel distances of flattened images, as one matrix product."""
  q = queries.reshape(queries.shape[0], -1)
  g = gallery.reshape(gallery.shape[0], -1)
  cross = jnp.matmul(q, g.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.sum(q * q, axis=1)[:, None] + jnp.sum(g * g, axis=1)[None, :] - 2 * cross


def label_chance(labels):
  """Chance rate of a label match, sum over classes of the squared class frequency: a float
  scalar of [N] int `labels`. Runs under jit (no `unique`: each item's class size is
  counted in the sorted labels, and sum_c (n_c / N)^2 = sum_i n_{label_i} / N^2)."""
  labels = jnp.asarray(labels)
  chex.assert_rank(labels, 1)
  ordered = jnp.sort(labels)
  sizes = jnp.searchsorted(ordered, labels, side="right") - jnp.searchsorted(
    ordered, labels, side="left"
  )
  total = jnp.sum(sizes.astype(jnp.result_type(float)))
  return _divide(total, labels.shape[0] ** 2)


def _divide(numerator, denominator):
  """numerator / denominator rounded once, as numpy divides: XLA turns a division by a
  (broadcast) scalar into a product with its reciprocal, which puts 54 / 100 at 0.53999996."""
  d = jnp.broadcast_to(jnp.asarray(denominator, numerator.dtype), numerator.shape)
  return numerator / jax.lax.optimization_barrier(d)


def bootstrap_mean_ci(values, *, key, samples: int, level: float = 0.95, where=None):
  """Percentile bootstrap confidence interval of the mean of `values`.

  Each of `samples` resamples draws as many values as there are, with replacement, by its
  own key (`jax.random.split(key, samples)`), so the interval depends on the key alone,
  never on how the resamples are batched: at most ~2^24 drawn values exist at once
  (`jax.lax.map` over batches of resamples). Runs under jit (`samples` and `level` are
  Python numbers); called outside jit, it runs one program compiled once per shape.

  Args:
    values: [N] numbers.
    key: a `jax.random` key.
    samples: the number of resamples.
    level: the interval's coverage.
    where: optional [N] bool: the interval of the mean of the values where True (resampled
      among those only; their count may be traced). None: all of them.

  Returns:
    [2] float: the (1 - level) / 2 and (1 + level) / 2 quantiles of the resampled means
    (linear interpolation, numpy's default). NaN when no value is selected.
  """
  v = jnp.asarray(values)
  chex.assert_rank(v, 1)
  where = jnp.ones(v.shape, bool) if where is None else jnp.asarray(where, bool)
  chex.assert_equal_shape([v, where])
  return _bootstrap(v.astype(jnp.result_type(v.dtype, float)), where, key, samples, level)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _bootstrap(v, where, key, samples: int, level: float):
  n = v.shape[0]
  v = v[jnp.argsort(~where, stable=True)]  # the selected values first, in order
  count = where.sum()
  used = jnp.arange(n) < count

  def resampled_sum(k):
    drawn = v[jax.random.randint(k, (n,), 0, count)]
    return jnp.sum(jnp.where(used, drawn, 0.0))

  batch = max(1, min(samples, _BOOTSTRAP_ELEMENTS // max(n, 1)))
  sums = jax.lax.map(resampled_sum, jax.random.split(key, samples), batch_size=batch)
  means = _divide(sums, count)
  alpha = (1.0 - level) / 2
  return _quantiles(jnp.sort(means), (alpha, 1.0 - alpha))


def _quantiles(ordered, qs):
  """[len(qs)] quantiles of the sorted [S] `ordered`, numpy's default "linear" method and
  its interpolation (exact where both neighbours are equal)."""
  out = []
  for q in qs:
    pos = q * (ordered.shape[0] - 1)
    i = min(int(np.floor(pos)), ordered.shape[0] - 2) if ordered.shape[0] > 1 else 0
    t = pos - i
    a, b = ordered[i], ordered[min(i + 1, ordered.shape[0] - 1)]
    out.append(a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t))
  return jnp.stack(out)


def host_float(x) -> float:
  """A host float of a scalar array, the shortest decimal that reads back as the same value
  in the array's own dtype: a float32 0.54 is 0.54, not 0.5399999618530273 (what a report
  shows of a jnp result; a float64 value is unchanged)."""
  return float(str(np.asarray(x)[()]))
