"""One corrupt feature row never decides: the verdict with up to 1% of the auxiliary rows
corrupted (huge, finite) is never below the verdict on the clean features."""

import ml_collections
import numpy as np
import pytest

import privjax
from privjax import levels
from tests.conftest import only_attackers


def _leak(digits8):
  """The issue's repro: f = tanh(X @ P * 3/8), P a 64 x 16 normal matrix; 600 auxiliary
  images, 120 targets."""
  x, _ = digits8
  f = np.tanh(x.reshape(len(x), -1) @ np.random.default_rng(0).normal(size=(64, 16)) * 3 / 8)
  f = f.astype(np.float32)
  perm = np.random.default_rng(1).permutation(len(x))
  a, t = perm[:600], perm[600:720]
  return x[a], f[a], x[t], f[t]


def _level(aux, f_aux, tgt, f_tgt) -> tuple[str, list]:
  cfg = ml_collections.ConfigDict(
    {
      "attacks": only_attackers(nearest={}, ridge={"num_features": 256}),
      "bootstrap_samples": 200,
    }
  )
  report = privjax.assess(
    None,
    None,
    aux,
    tgt,
    aux_features=f_aux,
    target_features=f_tgt,
    config=cfg,
    progress=False,
  )
  return report.risk_level, report.to_dict()["warnings"]


@pytest.fixture(scope="module")
def clean(digits8):
  return _level(*_leak(digits8))


@pytest.mark.parametrize("trial", range(3))
def test_up_to_one_percent_corrupt_auxiliary_rows_never_lower_the_verdict(digits8, clean, trial):
  aux, f_aux, tgt, f_tgt = _leak(digits8)
  rng = np.random.default_rng(trial)
  f_aux = f_aux.copy()
  bad = rng.choice(len(f_aux), int(rng.integers(1, 7)), replace=False)  # <= 1% of 600
  for i in bad:
    cols = slice(None) if trial != 1 else rng.choice(f_aux.shape[1], 2, replace=False)
    f_aux[i, cols] = rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(6, 15)
  level, warnings = _level(aux, f_aux, tgt, f_tgt)
  assert clean[0] == "high" and not clean[1]
  assert levels.reaches(level, clean[0]), (level, bad)
  assert any(f"{len(bad)} of 600 auxiliary feature rows are extreme" in w for w in warnings)
