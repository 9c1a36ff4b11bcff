"""One attacker fitted on your own features, outside the audit: the research entry point.

    params, reconstruct = privjax.attack("ridge", aux_features=f, aux_images=x,
                                         key=jax.random.key(0))
    images = jax.jit(reconstruct)(params, target_features)   # [N, H, W, C] in [0, 1]

The features are standardised on the auxiliary set as the audit does (the mean and scale
sit in `params`, so `reconstruct` is a pure function of raw features); the attacker's own
settings choice is made on a held-out `val_fraction` of the auxiliary set drawn from the
key, exactly as in the audit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from privjax.attacks import decoder, nearest, ridge
from privjax.attacks.base import AuxSet, key_seed
from privjax.data.images import check_images
from privjax.errors import ConfigError, DataError
from privjax.runtime.loop import split_validation
from privjax.scoring import metrics
from privjax.scoring.standardizer import Standardizer

__all__ = ["Attack", "attack"]


@flax.struct.dataclass
class Attack:
  """A fitted attacker's params: the standardisation and the attacker's own params."""

  mean: jax.Array  # [D] the auxiliary features' mean
  scale: jax.Array  # [D] their scale (> 0)
  params: object  # the attacker module's `Params`
  reconstruct_fn: Callable = flax.struct.field(pytree_node=False)  # the module's reconstruct


def reconstruct(params: Attack, features: jax.Array) -> jax.Array:
  """[B, D] raw features -> [B, H, W, C] reconstructions in [0, 1]; pure (jit, vmap, grad)."""
  return params.reconstruct_fn(params.params, (features - params.mean) / params.scale)


def _fit_decoder(aux, *, key, settings, mesh):
  """The decoder, its SSIM loss on the audit's default window (shrunk for small images)."""
  size, sigma = metrics.ssim_window(*aux.image_shape[:2])
  return decoder.fit(
    aux, key=key, settings=settings, filter_size=size, filter_sigma=sigma, mesh=mesh
  )


# The attackers that fit from auxiliary pairs alone (the blend and the whitebox need other
# fitted attackers or the model: run them through privjax.assess).
_FIT = {
  "ridge": (lambda aux, **kw: ridge.fit(aux, **kw), ridge.reconstruct),
  "nearest": (
    lambda aux, *, key, settings, mesh: nearest.fit(aux, key=key, settings=settings),
    nearest.reconstruct,
  ),
  "decoder": (_fit_decoder, decoder.reconstruct),
}


def attack(
  name: str,
  *,
  aux_features,
  aux_images,
  key: jax.Array,
  settings: Mapping | None = None,
  val_fraction: float = 0.1,
  mesh=None,
) -> tuple[Attack, Callable[[Attack, jax.Array], jax.Array]]:
  """Fits one attacker on auxiliary (features, image) pairs.

  Args:
    name: "ridge", "nearest" or "decoder".
    aux_features: [N, D] the auxiliary images' features, in the model's own units.
    aux_images: [N, H, W, C] the auxiliary images (uint8, or float in [0, 1]).
    key: a `jax.random` key: the held-out split and every random choice of the fit.
    settings: the attacker's settings (its module's DEFAULTS keys; missing ones default).
    val_fraction: the share of the auxiliary set held out for the attacker's own choices.
    mesh: the device mesh to shard the fit over (None: every device).

  Returns:
    (params, reconstruct): `reconstruct(params, features [B, D]) -> [B, H, W, C]` is pure.
  """
  if name not in _FIT:
    raise ConfigError(f"privjax.attack: name must be one of {sorted(_FIT)}, got {name!r}")
  fit, apply = _FIT[name]
  images = check_images(aux_images, name="aux_images")
  features = np.asarray(aux_features, np.float32)
  if features.ndim != 2 or features.shape[0] != images.shape[0]:
    raise DataError(
      f"aux_features must be [N, D] with one row per auxiliary image ({images.shape[0]}), "
      f"got {list(features.shape)}"
    )
  standardize = Standardizer.fit(features)
  train, val = split_validation(len(features), val_fraction, key_seed(key))
  aux = AuxSet(standardize(features), images, train, val)
  params = fit(aux, key=key, settings=settings, mesh=mesh)
  mean, scale = (jnp.asarray(a, jnp.float32) for a in (standardize.mean, standardize.scale))
  return Attack(mean, scale, params, apply), reconstruct
