"""The per-dimension standardisation every attacker, the screening and the utility measures
fit on the auxiliary features (a leaf)."""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Standardizer"]


@dataclasses.dataclass(frozen=True)
class Standardizer:
  """Per-dimension standardisation fitted on the auxiliary features.

  Every attacker learns from standardised features, so the units the features come
  in (a scale, an offset, integer or low-precision storage) never decide the verdict.
  A dimension constant over the auxiliary set keeps scale 1 (it carries nothing).
  """

  mean: np.ndarray  # [D] float64 (a large offset survives it)
  scale: np.ndarray  # [D] float64, > 0

  @classmethod
  def fit(cls, features: np.ndarray) -> Standardizer:
    """Fitted in float64 on features of any dtype; a spread at the resolution of the
    features' own dtype (float32's for float32 and narrower, float64's for float64 and
    integers) is rounding, not signal."""
    features = np.asarray(features)
    wide = features.dtype.kind in "iu" or features.dtype.itemsize > 4
    f = features.astype(np.float64)
    mean = f.mean(axis=0)
    std = f.std(axis=0)
    eps = np.finfo(np.float64 if wide else np.float32).eps
    resolution = 8 * eps * np.maximum(np.abs(mean), 1e-30)
    scale = np.where(std > resolution, std, 1.0)
    return cls(mean, scale)

  def __call__(self, features):
    """[N, D] -> [N, D] float32 standardised (numpy in, numpy out; JAX in, JAX out)."""
    if isinstance(features, np.ndarray):
      out = (features.astype(np.float64) - self.mean) / self.scale
      return out.astype(np.float32)
    mean, scale = self.mean.astype(np.float32), self.scale.astype(np.float32)
    return (features - mean) / scale
