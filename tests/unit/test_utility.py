"""Utility: k-NN identification and the linear probe at their chance levels."""

import numpy as np
import pytest

from privjax.defenses import utility
from privjax.runtime import parallel


@pytest.mark.slow
def test_knn_identification_and_the_probe_at_their_chance_levels():
  rng = np.random.default_rng(0)
  mesh = parallel.data_mesh()
  labels = rng.integers(0, 4, 600)
  centres = rng.standard_normal((4, 8)) * 5
  clustered = (centres[labels] + rng.standard_normal((600, 8))).astype(np.float32)
  noise = rng.standard_normal((600, 8)).astype(np.float32)
  split = (np.arange(0, 350), np.arange(350, 400))
  common = {"mesh": mesh, "samples": 200, "seed": 0}
  for f, low, high in ((clustered, 0.95, 1.0), (noise, 0.15, 0.35)):
    knn = utility.knn_rank1(
      f[:400], labels[:400], f[400:], labels[400:], split=split, batch_size=64, **common
    )
    probe = utility.linear_probe(
      f[:400], labels[:400], f[400:], labels[400:], split=split, batch_size=64, **common
    )
    assert low <= knn["rate"] <= high and low <= probe["rate"] <= high, (knn, probe)
    assert 0.2 < knn["chance"] < 0.3 and 0.2 < probe["chance"] < 0.35
    assert knn["ci"][0] <= knn["rate"] <= knn["ci"][1]
  # A target whose label the gallery lacks cannot be identified: excluded and counted.
  knn = utility.knn_rank1(
    clustered[:400],
    labels[:400],
    clustered[400:],
    np.where(labels[400:] == 3, 9, labels[400:]),
    split=None,
    batch_size=64,
    **common,
  )
  assert knn["excluded"] == int((labels[400:] == 3).sum()) and knn["rate"] > 0.95
