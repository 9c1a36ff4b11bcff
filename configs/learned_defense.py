"""The default audit, then a learned defense beside the fixed ones: what a transform trained
against the attackers buys, audited by attackers it never saw.

  .venv/bin/privjax --config=configs/learned_defense.py --workdir=runs/learned_defense

`learned` (privjax/defenses/learned.py) trains a small transform g of the features, once
per strength lam, on the DEFENDER's own split (config.data.model_train_split: the images
the builtin model trains on, never the targets or the attacker's auxiliary set),
minimising a classifier's cross-entropy on g's output plus lam times the R^2 of a
closed-form ridge attacker refitted inside the loss at every step. Each trained g is
then audited like every defense: the sweep's attackers re-fit from scratch on the
defended auxiliary features. The page says what it was trained against and audited
with; docs/method.md has the threat model and benchmarks/learned_defense.py the numbers.
"""

import ml_collections

from configs import defense_sweep


def get_config() -> ml_collections.ConfigDict:
  c = defense_sweep.get_config()
  # lam: the in-loss attacker's weight against the utility loss (0: utility alone).
  c.defense.sweep.learned = ml_collections.ConfigDict(
    {"type": "learned", "strengths": (0.0, 1.0, 4.0, 16.0)}
  )
  return c
