"""The default audit, then what three feature-level defenses buy: a privacy-utility sweep.

  privjax --config=configs/defense_sweep.py --workdir=runs/defense_sweep

Each defense runs at four strengths. At every point the ridge and nearest attackers are
re-fitted on the DEFENDED auxiliary features (adaptive: they know the defense) and, for
contrast, the undefended attackers attack the defended targets (non-adaptive); utility
is k-NN identification of the targets against the labelled auxiliary gallery and a
linear probe, both on the defended features. Output beside the report: sweep.json,
privacy_utility.png, and a line naming the best trade-off (the point with the highest
utility whose verdict is "low"). A killed sweep resumes at the first unfinished point.

The whitebox attacker does not model a defense, and the decoder costs about a minute a
point here, so the sweep's attackers are the two that refit in seconds; the report
warns when the audit's deciding attacker is not among them. Add more with
--config.defense.attacks='("ridge", "nearest", "decoder")'.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  c = default.get_config()
  c.defense.sweep = ml_collections.ConfigDict(
    {
      # Noise std in units of each feature dimension's std on the auxiliary set.
      "gaussian_noise": {"strengths": (0.5, 2.0, 8.0, 32.0)},
      # Bits per dimension over the auxiliary set's range of it.
      "quantize": {"strengths": (6, 3, 2, 1)},
      # Principal directions of the auxiliary features kept (of the model's 64).
      "pca_truncate": {"strengths": (16, 4, 2, 1)},
    }
  )
  c.defense.attacks = ("ridge", "nearest")
  return c
