"""The verdict: a privacy-risk level from the audit's numbers and documented thresholds.

The verdict rests on the two model-independent measures: the SSIM gain over the
no-information baseline (its 95% CI lower bound, so noise never raises the level)
and image-space rank-1 re-identification. The type-I rate (re-identification by the
audited model itself) is reported but never decides: a decoder can reproduce a
low-dimensional embedding without reproducing the image.

  high    gain CI low >= risk.high_ssim_gain, or image re-id >= risk.high_image_reid
          and >= risk.medium_reid_over_chance x chance
  medium  gain CI low >= risk.medium_ssim_gain, or image re-id >= risk.medium_image_reid
          and >= risk.medium_reid_over_chance x chance
  low     otherwise
"""

from __future__ import annotations

import math

from privjax.errors import TrainingError


def verdict(*, ssim_gain_ci_low: float, image_reid_rate: float, reid_chance: float, thresholds):
  """Returns (level, reasons): level in {"low", "medium", "high"}, reasons a list of strings."""
  t = thresholds
  if not all(math.isfinite(v) for v in (ssim_gain_ci_low, image_reid_rate, reid_chance)):
    raise TrainingError(
      f"cannot judge: a non-finite score (SSIM gain CI low {ssim_gain_ci_low}, image re-id "
      f"{image_reid_rate}, chance {reid_chance}); no verdict is given from NaN"
    )
  gain = f"SSIM gain over baseline, 95% CI lower bound {ssim_gain_ci_low:.3f}"
  reid = (
    f"image-space rank-1 re-identification {image_reid_rate:.3f} "
    f"({image_reid_rate / reid_chance:.1f}x chance {reid_chance:.4f})"
  )
  over_chance = image_reid_rate >= t.medium_reid_over_chance * reid_chance
  reid_high = image_reid_rate >= t.high_image_reid and over_chance
  if ssim_gain_ci_low >= t.high_ssim_gain or reid_high:
    reasons = []
    if ssim_gain_ci_low >= t.high_ssim_gain:
      reasons.append(f"{gain} >= high threshold {t.high_ssim_gain}")
    if reid_high:
      reasons.append(
        f"{reid} >= high threshold {t.high_image_reid} and >= {t.medium_reid_over_chance}x chance"
      )
    return "high", reasons
  reid_medium = image_reid_rate >= t.medium_image_reid and over_chance
  if ssim_gain_ci_low >= t.medium_ssim_gain or reid_medium:
    reasons = []
    if ssim_gain_ci_low >= t.medium_ssim_gain:
      reasons.append(f"{gain} >= medium threshold {t.medium_ssim_gain} (< high {t.high_ssim_gain})")
    if reid_medium:
      reasons.append(
        f"{reid} >= medium threshold {t.medium_image_reid} and >= "
        f"{t.medium_reid_over_chance}x chance (< high {t.high_image_reid})"
      )
    return "medium", reasons
  return "low", [
    f"{gain} < medium threshold {t.medium_ssim_gain}",
    f"{reid} below medium threshold {t.medium_image_reid} or {t.medium_reid_over_chance}x chance",
  ]


_SEVERITY = {"low": 0, "medium": 1, "high": 2}


def most_severe(results: dict) -> str:
  """The name of the most severe attacker: {name: (level, gain CI low, image re-id)}.

  A security audit errs toward the attacker: the highest level decides; among equals,
  the larger gain lower bound, then the larger image re-identification rate.
  """
  return max(results, key=lambda n: (_SEVERITY[results[n][0]], results[n][1], results[n][2]))
