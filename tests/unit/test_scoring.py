"""Scoring: shortlist identification agrees with exact identification; the shortlist in blocks."""

import numpy as np
import pytest

import privjax


@pytest.mark.slow
def test_shortlist_identification_agrees_with_exact(digits8):
  from privjax import config as config_lib
  from privjax import settings as settings_lib
  from privjax.runtime import parallel
  from privjax.scoring import scores as scoring

  x, _ = digits8
  targets = x[:300]
  rng = np.random.default_rng(0)
  recon = np.clip(targets + rng.normal(0, 0.25, targets.shape), 0, 1).astype(np.float32)
  cfg = config_lib.for_images(targets.shape[1:], None)
  own = np.asarray(
    privjax.scoring.metrics.ssim(
      targets, recon, filter_size=cfg.ssim.filter_size, filter_sigma=cfg.ssim.filter_sigma
    )
  )
  mesh = parallel.data_mesh()
  exact = scoring.identify(recon, targets, own, settings=settings_lib.scoring(cfg), mesh=mesh)
  cfg.reid.exact_max_targets = 100  # force the shortlist
  cfg.reid.baseline_samples = 200
  short = scoring.identify(recon, targets, own, settings=settings_lib.scoring(cfg), mesh=mesh)
  assert exact["exact"] and not short["exact"]
  assert 0.2 < exact["hits"].mean() < 1.0  # a non-trivial case
  assert np.mean(exact["hits"] == short["hits"]) >= 0.97
  assert np.mean(exact["best"] == short["best"]) >= 0.97
  assert abs(exact["baseline"].mean() - short["baseline"].mean()) < 0.01


@pytest.mark.parametrize("block_rows", [0, 7, 64])
def test_the_shortlist_in_blocks_is_the_k_nearest_of_all_targets(block_rows):
  from privjax.runtime import parallel
  from privjax.scoring import metrics
  from privjax.scoring import scores as scoring

  rng = np.random.default_rng(1)
  targets = rng.random((150, 6, 6, 2), dtype=np.float32)
  recon = rng.random((90, 6, 6, 2), dtype=np.float32)
  got = scoring.shortlist(
    recon, targets, 5, batch_size=32, mesh=parallel.data_mesh(), block_rows=block_rows
  )
  d = np.asarray(metrics.squared_distances(recon, targets))
  np.testing.assert_array_equal(got, np.argsort(d, axis=1, kind="stable")[:, :5])
