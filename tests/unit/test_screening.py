"""privjax/stages/screening.py: corrupt feature rows are flagged, real features are not."""

import numpy as np
import pytest

from privjax.scoring.standardizer import Standardizer
from privjax.stages import screening


def _tanh_features(digits8, seed=0, d=16):
  x = digits8[0].reshape(len(digits8[0]), -1)
  p = np.random.default_rng(seed).normal(size=(x.shape[1], d))
  return np.tanh(x @ p * 3 / 8).astype(np.float32)


def _relu_features(digits8, seed=0, d=64):
  """Sparse, heavy-tailed features like a CNN's: about half of each dimension is zero."""
  x = digits8[0].reshape(len(digits8[0]), -1)
  rng = np.random.default_rng(seed)
  h = np.maximum(x @ rng.normal(size=(x.shape[1], 128)) - 1.0, 0)
  return (np.maximum(h @ rng.normal(size=(128, d)) * 0.1, 0) * 1e3).astype(np.float32)


@pytest.mark.parametrize("make", [_tanh_features, _relu_features])
def test_real_features_have_no_extreme_rows(digits8, make):
  f = make(digits8)
  s = screening.screen(f[:1200], f[1200:])
  assert len(s.aux_extreme) == 0 and len(s.target_extreme) == 0
  assert s.keep.all() and s.warnings() == []


@pytest.mark.parametrize("trial", range(6))
def test_up_to_one_percent_corrupt_rows_are_exactly_the_flagged_ones(digits8, trial):
  rng = np.random.default_rng(trial)
  f = (_tanh_features if trial % 2 else _relu_features)(digits8, seed=trial)
  aux, tgt = f[:1200].copy(), f[1200:].copy()
  k = int(rng.integers(1, 13))  # <= 1% of 1200
  bad = rng.choice(1200, k, replace=False)
  for i in bad:  # a whole row, or a few of its values, huge and of either sign
    cols = slice(None) if rng.random() < 0.5 else rng.choice(f.shape[1], 3, replace=False)
    aux[i, cols] = rng.choice([-1, 1]) * 10.0 ** rng.uniform(4, 15)
  tgt[5] = 1e12
  s = screening.screen(aux, tgt)
  np.testing.assert_array_equal(s.aux_extreme, np.sort(bad))
  np.testing.assert_array_equal(s.target_extreme, [5])
  assert s.target_flags()[5] == "extreme" and (s.target_flags() == "ok").sum() == len(tgt) - 1
  # What the attackers then learn from is the clean data's standardisation.
  kept = Standardizer.fit(aux[s.keep])
  clean = Standardizer.fit(np.delete(f[:1200], bad, axis=0))
  np.testing.assert_allclose(kept.mean, clean.mean)
  np.testing.assert_allclose(kept.scale, clean.scale)


def test_the_warning_names_count_rows_and_what_was_done(digits8):
  f = _tanh_features(digits8)
  aux = f[:1200].copy()
  aux[[7, 99]] = 1e15
  (line,) = screening.screen(aux, f[1200:]).warnings()
  assert line.startswith("2 of 1200 auxiliary feature rows are extreme")
  assert "rows 7, 99" in line and "left out" in line


def test_many_rows_are_listed_in_short():
  f = np.random.default_rng(0).normal(size=(2000, 8))
  f[:15] = 1e9
  (line,) = screening.screen(f, f[:0]).warnings()
  assert "rows 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... (5 more)" in line


def test_robust_scale_ignores_units_and_constant_dimensions():
  rng = np.random.default_rng(1)
  f = rng.normal(size=(500, 4))
  f[:, 1] = 3.0  # constant
  f[:400, 2] = 0.0  # mostly zero: its scale comes from the values that move
  c1, s1 = screening.robust_scale(f)
  c2, s2 = screening.robust_scale(f * 1e6 + 5)
  np.testing.assert_allclose(c2, c1 * 1e6 + 5)
  np.testing.assert_allclose(s2, s1 * 1e6)
  assert np.all(s1 > 0)
  np.testing.assert_array_equal(
    screening.screen(f, f).aux_extreme, screening.screen(f * 1e6 + 5, f).aux_extreme
  )
