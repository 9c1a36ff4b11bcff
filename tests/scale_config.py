"""The smoke audit with a two-point defense sweep: the scale tests' config (test_scale.py)."""

import ml_collections

from configs import smoke


def get_config() -> ml_collections.ConfigDict:
  c = smoke.get_config()
  c.defense.sweep = ml_collections.ConfigDict(
    {"gaussian_noise": {"strengths": (1.0,)}, "pca_truncate": {"strengths": (4,)}}
  )
  return c
