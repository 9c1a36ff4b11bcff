"""Scores against independent references (skimage) and the rank-1 rules."""

import jax
import numpy as np
import pytest
from skimage import data
from skimage.metrics import structural_similarity

from privjax.errors import ConfigError
from privjax.scoring import metrics


def _natural_pairs(channels: int, size: int, rng):
  img = data.astronaut().astype(np.float32) / 255.0  # 512x512x3 natural image
  if channels == 1:
    img = img.mean(axis=-1, keepdims=True)
  corners = [(0, 0), (100, 200), (250, 300), (380, 60), (200, 380)]
  a = np.stack([img[i : i + size * 2 : 2, j : j + size * 2 : 2] for i, j in corners])
  b = np.clip(a + rng.normal(0, 0.08, a.shape).astype(np.float32), 0, 1)
  return a, b


def _skimage_ssim(x, y, filter_sigma):
  return structural_similarity(
    x,
    y,
    gaussian_weights=True,
    sigma=filter_sigma,
    use_sample_covariance=False,
    data_range=1.0,
    channel_axis=-1,
  )


# skimage picks its window from sigma (2 * int(3.5 * sigma + 0.5) + 1): 11 for 1.5,
# 7 for 0.955 (the default config's window at 16x16), 5 for 0.68 (the smoke config).
@pytest.mark.parametrize(
  "channels,size,fs,sigma", [(3, 64, 11, 1.5), (1, 32, 11, 1.5), (1, 16, 7, 0.955), (1, 8, 5, 0.68)]
)
def test_ssim_matches_skimage(channels, size, fs, sigma, rng):
  a, b = _natural_pairs(channels, size, rng)
  ours = np.asarray(metrics.ssim(a, b, filter_size=fs, filter_sigma=sigma))
  ref = np.array([_skimage_ssim(x, y, sigma) for x, y in zip(a, b, strict=True)])
  np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_pairwise_ssim_matches_per_pair_ssim(rng):
  a, b = _natural_pairs(3, 32, rng)
  m = np.asarray(metrics.pairwise_ssim_block(b, a, filter_size=11, filter_sigma=1.5))
  assert m.shape == (5, 5)
  for i in range(5):
    for j in range(5):
      np.testing.assert_allclose(m[i, j], _skimage_ssim(a[j], b[i], 1.5), atol=1e-4)


def test_rank1_identical_queries_score_chance():
  rng = np.random.default_rng(1)
  # Every reconstruction identical: the similarity row is the same for all queries.
  row = rng.normal(size=10)
  hits = metrics.rank1_hits(np.tile(row, (10, 1)))
  assert hits.sum() == 1  # exactly one query's own original is the best: chance, 1/N


def test_rank1_ties_count_against_attacker():
  s = np.eye(4)
  s[2, 3] = 1.0  # query 2 ties its own original with another
  np.testing.assert_array_equal(metrics.rank1_hits(s), [True, True, False, True])


def test_label_chance_and_hits():
  labels = np.array([0, 0, 1, 1])
  assert metrics.label_chance(labels) == pytest.approx(0.5)
  s = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
  best = np.argmax(s, axis=1)
  np.testing.assert_array_equal(metrics.label_hits(best, labels), [True, True, False, True])


@pytest.mark.slow
def test_bootstrap_ci_covers_mean_and_shrinks_with_n():
  rng = np.random.default_rng(2)
  small = rng.normal(0.3, 0.1, 50)
  large = rng.normal(0.3, 0.1, 5000)
  key = jax.random.key(0)
  lo_s, hi_s = metrics.bootstrap_mean_ci(small, key=key, samples=1000)
  lo_l, hi_l = metrics.bootstrap_mean_ci(large, key=key, samples=1000)
  assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
  assert hi_l - lo_l < (hi_s - lo_s) / 3


def test_ssim_window_shrinks_for_small_images():
  assert metrics.ssim_window(64, 64, 11, 1.5) == (11, 1.5)
  size, sigma = metrics.ssim_window(8, 8, 11, 1.5)
  assert size == 7 and sigma == pytest.approx(1.5 * 7 / 11)
  # The shrunk window is the one skimage derives from the shrunk sigma.
  for n in (5, 6, 7, 8, 9, 10):
    size, sigma = metrics.ssim_window(n, n, 11, 1.5)
    assert size == 2 * int(3.5 * sigma + 0.5) + 1
  # Shrunk to 3 pixels, sigma would be 0.41 < 0.5: refused rather than degenerate.
  with pytest.raises(ConfigError, match="sigma would be 0.409 < 0.5 pixel"):
    metrics.ssim_window(3, 3, 11, 1.5)
  assert metrics.ssim_window(3, 3, 3, 0.6) == (3, 0.6)  # a window set for them is kept
  with pytest.raises(ConfigError, match="at least 3x3"):
    metrics.ssim_window(2, 8, 11, 1.5)


def test_squared_distances_match_numpy(rng):
  a, b = rng.uniform(size=(5, 4, 4, 2)), rng.uniform(size=(7, 4, 4, 2))
  ref = ((a.reshape(5, 1, -1) - b.reshape(1, 7, -1)) ** 2).sum(-1)
  np.testing.assert_allclose(metrics.squared_distances(a, b), ref, rtol=1e-5, atol=1e-5)
