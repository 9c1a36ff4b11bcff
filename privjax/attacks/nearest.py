"""`nearest`: the auxiliary image whose features are nearest by cosine; a floor.

Black-box: the adversary looks each target's features up among the auxiliary set's
(standardised) features and answers with that auxiliary image. It learns nothing, so
any attacker that scores below it is too weak to trust.

The functional core: `fit(aux, *, key, settings) -> Params` (the gallery: nothing is
fitted) and the pure `reconstruct(params, features)`, an argmax lookup that jits and vmaps
but has no useful gradient (piecewise constant in the features); `reconstruct_soft` is its
differentiable relaxation, a softmax over the gallery at a temperature.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from privjax.attacks.base import AuxSet, Context, Fitted, read_settings, register
from privjax.scoring.metrics import unit_rows

__all__ = ["Params", "attack", "fit", "reconstruct", "reconstruct_soft"]


@flax.struct.dataclass
class Params:
  """The gallery the lookup answers from (a pytree of arrays)."""

  features: jax.Array  # [G, D] standardised gallery features
  images: jax.Array  # [G, H, W, C] their images in [0, 1]


def _similarities(gallery, queries):
  """[B, G] cosine of each query with each gallery row."""
  return unit_rows(queries) @ unit_rows(gallery).T


def reconstruct(params: Params, features: jax.Array) -> jax.Array:
  """Pure: standardised features [B, D] -> [B, H, W, C], the gallery image nearest each by
  cosine (argmax; the first on a tie).

  Jits and vmaps. It has no useful gradient: the answer is piecewise constant in the
  features (zero gradient almost everywhere) and its gradient with respect to the gallery
  images only selects rows; use `reconstruct_soft` to differentiate.
  """
  idx = jnp.argmax(_similarities(params.features, features), axis=1)
  return jnp.take(params.images, idx, axis=0)


def reconstruct_soft(params: Params, features: jax.Array, *, temperature: float = 0.05):
  """Pure and differentiable: [B, D] -> [B, H, W, C], the gallery images weighted by a
  softmax of the cosines over `temperature` (-> `reconstruct` as the temperature -> 0)."""
  weights = jax.nn.softmax(_similarities(params.features, features) / temperature, axis=1)
  return jnp.einsum("bg,ghwc->bhwc", weights, params.images)


def _gallery(aux: AuxSet, rows) -> Params:
  return Params(features=jnp.asarray(aux.features[rows]), images=jnp.asarray(aux.images[rows]))


def fit(aux: AuxSet, *, key, settings: Mapping | None = None) -> Params:
  """The lookup's params: the whole auxiliary set as the gallery (nothing is fitted).

  Args:
    aux: the auxiliary set (features [N, D] standardised, images [N, H, W, C]).
    key: unused (the lookup draws nothing); accepted for the common signature.
    settings: none are read ({} or None).

  Returns:
    `Params`: features [N, D], images [N, H, W, C].
  """
  del key
  read_settings(settings, {}, name="nearest")
  return _gallery(aux, np.arange(aux.features.shape[0]))


@register("nearest", default_on=True)
def attack(aux: AuxSet, ctx: Context, cfg: ml_collections.ConfigDict) -> Fitted:
  """Looks up the nearest auxiliary image (all of the auxiliary set: nothing is fitted);
  aux.val's held-out answers come from aux.train's gallery (aux.val answers itself
  otherwise)."""
  return Fitted.of(
    reconstruct,
    fit(aux, key=jax.random.key(ctx.seed), settings=cfg),
    mesh=ctx.mesh,
    batch_size=ctx.eval_batch_size,
    held_out_params=lambda: _gallery(aux, aux.train),
    info={"gallery": int(aux.features.shape[0])},
  )
