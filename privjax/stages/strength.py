"""Attacker strength against its data: every attacker re-run on nested random parts of
the auxiliary set (config.attack_strength.aux_fractions), its leakage reported per part,
so a reader sees whether more auxiliary data would have recovered more.
"""

from __future__ import annotations

import numpy as np

from privjax.stages.attack_round import Result, Round

__all__ = ["part_size", "run"]


def part_size(fraction: float, n: int) -> int:
  """How many of n auxiliary images an attack_strength fraction keeps."""
  return int(round(fraction * n))


def run(round_: Round, aux, f_aux, f_tgt, full: Result, *, fractions, seed: int) -> list:
  """Per fraction {aux_fraction, num_aux, attacks: name -> scores summary}; a fraction's
  part includes every smaller one's; fraction 1.0 is the audit's own round (`full`)."""
  strength = []
  perm = np.random.default_rng((seed, 17)).permutation(aux.shape[0])
  for fraction in fractions:
    part = np.sort(perm[: part_size(fraction, aux.shape[0])])
    if fraction == 1.0:
      scores = full.scores
    else:
      scores = round_.run(aux[part], f_aux[part], f_tgt, stage=f"aux{fraction:g}-").scores
    strength.append(
      {
        "aux_fraction": float(fraction),
        "num_aux": int(len(part)),
        "attacks": {n: sc.summary() for n, sc in scores.items()},
      }
    )
  return strength
