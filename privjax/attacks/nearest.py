"""`nearest`: the auxiliary image whose features are nearest by cosine; a floor.

Black-box: the adversary looks each target's features up among the auxiliary set's
(standardised) features and answers with that auxiliary image. It learns nothing, so
any attacker that scores below it is too weak to trust.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from privjax.attacks.base import AuxSet, Context, Fitted, register
from privjax.runtime import parallel
from privjax.scoring.metrics import unit_rows


@jax.jit
def _nearest(gallery, queries):
  """[B] index of each query's nearest gallery row by cosine (the gallery an argument, so a
  new auxiliary set of the same shape reuses the compiled program)."""
  return jnp.argmax(unit_rows(queries) @ unit_rows(gallery).T, axis=1)


@register("nearest", default_on=True)
def attack(aux: AuxSet, ctx: Context, cfg: ml_collections.ConfigDict) -> Fitted:
  """Looks up the nearest auxiliary image (all of the auxiliary set: nothing is fitted)."""
  del cfg

  def lookup(rows):
    gallery = parallel.replicate(jnp.asarray(aux.features[rows]), ctx.mesh)
    images = aux.images[rows]

    def reconstruct(features):
      idx = parallel.batched_map(
        functools.partial(_nearest, gallery),
        [features],
        batch_size=ctx.eval_batch_size,
        mesh=ctx.mesh,
      )
      return images[np.asarray(idx)]

    return reconstruct

  every = np.arange(aux.features.shape[0])
  return Fitted(
    lookup(every),
    {"gallery": int(aux.features.shape[0])},
    held_out=lambda features: lookup(aux.train)(features),  # aux.val answers itself otherwise
  )
