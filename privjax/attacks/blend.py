"""`blend`: the least-squares combination of other attackers' reconstructions.

Black-box when its members are. Two attackers that err differently (a decoder that
over-fits its few auxiliary images, a ridge regression that blurs) are each beaten by
a weighted sum of both. The weights, one per member and an offset, minimise the pixel
error of the members' held-out reconstructions of the auxiliary validation images
(`Fitted.reconstruct_held_out`), never the targets'; the result is clipped to [0, 1].
Any member alone is one choice of weights, so on validation the blend is never worse
than its best member. Skipped when fewer than two members run.

Its own held-out reconstructions of aux.val (what an attacker starting from it, the
whitebox, chooses its settings on) are cross-fitted: each half of aux.val is combined
with the weights fitted on the other half, from the members' held-out reconstructions,
so no image is reconstructed by anything fitted on it.

The functional core: `fit(aux, *, key, settings, members) -> Params` (the weights and the
members' params) and the pure `reconstruct(params, features)`, which composes the members'
pure reconstructs in jnp (float32) and jits, vmaps and differentiates with respect to both.
The audit combines the members' reconstructions in float64 on the host (`combine`), as it
always has, so its numbers are unchanged; `reconstruct` agrees with it to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from privjax import checks
from privjax.attacks.base import AuxSet, Context, Fitted, Skipped, read_settings, register

__all__ = [
  "DEFAULTS",
  "Params",
  "attack",
  "check",
  "combine",
  "cross_fitted",
  "fit",
  "reconstruct",
  "weights",
]

DEFAULTS = {  # the blend's settings and their defaults
  # The attackers combined (those not running are left out). Each member's reconstructions
  # of the targets are computed again by the blend: a whitebox member would optimise twice.
  "members": ("decoder", "ridge", "nearest"),
}


def check(name, cfg, names) -> None:
  """Raises ConfigError unless `members` names other attackers."""
  del names  # members not running are left out when it runs (fewer than two: skipped)
  members = [cfg.members] if isinstance(cfg.members, str) else cfg.members
  checks.require(
    isinstance(members, (list, tuple))
    and bool(members)
    and all(isinstance(m, str) and m and m != name for m in members),
    f"config.attacks.{name}.members must be a list of other attackers' names, got {cfg.members!r}",
  )


def weights(reconstructions: list[np.ndarray], images: np.ndarray) -> np.ndarray:
  """[K + 1] least-squares weights of K reconstructions and an offset (last) for `images`,
  in float64. Members that agree exactly (a whitebox that kept its start) share their
  weight (lstsq's minimum-norm solution)."""
  columns = [r.astype(np.float64).ravel() for r in reconstructions]
  design = np.stack([*columns, np.ones_like(columns[0])], axis=1)
  return np.linalg.lstsq(design, images.astype(np.float64).ravel(), rcond=None)[0]


def cross_fitted(reconstructions: list[np.ndarray], images: np.ndarray) -> np.ndarray:
  """Each half of the rows (alternate rows) combined with the weights fitted on the other
  half; one row alone is combined with the weights fitted on it (nothing else to fit on)."""
  out = np.empty(images.shape, np.float32)
  halves = [np.arange(0, len(images), 2), np.arange(1, len(images), 2)]
  for this, other in (halves, halves[::-1]):
    if this.size == 0:
      continue
    fit = other if other.size else this
    w = weights([r[fit] for r in reconstructions], images[fit])
    out[this] = combine(w, [r[this] for r in reconstructions])
  return out


def combine(w: np.ndarray, reconstructions: list[np.ndarray]) -> np.ndarray:
  """K reconstructions [N, H, W, C] combined with the weights `w` [K + 1] (offset last), in
  float64; [N, H, W, C] float32 clipped to [0, 1]."""
  out = np.full(reconstructions[0].shape, w[-1], dtype=np.float64)
  for wi, r in zip(w[:-1], reconstructions, strict=True):
    out += wi * r.astype(np.float64)
  return np.clip(out, 0.0, 1.0).astype(np.float32)


@flax.struct.dataclass
class Params:
  """A fitted blend: its members' params and its weights (a pytree of arrays); the members'
  pure reconstructs ride in its structure (static)."""

  members: tuple  # each member's params, in `applies`' order
  weights: jax.Array  # [K + 1] float32: one weight per member, then the offset
  applies: tuple = flax.struct.field(pytree_node=False)  # each member's pure reconstruct


def reconstruct(params: Params, features: jax.Array) -> jax.Array:
  """Pure: standardised features [B, D] -> images [B, H, W, C] in [0, 1].

  The offset plus each member's pure reconstruction times its weight (in member order),
  clipped to [0, 1]; in float32 (the audit's host `combine` sums in float64: the two agree
  to float32 rounding). Jits, vmaps and differentiates with respect to `params` (weights
  and members' params) and `features`.
  """
  out = params.weights[-1]
  for w, apply, member in zip(params.weights[:-1], params.applies, params.members, strict=True):
    out = out + w * apply(member, features)
  return jnp.clip(out, 0.0, 1.0)


class _Fit(NamedTuple):
  members: list[str]  # the members combined, in `settings["members"]` order
  fitted: dict  # name -> the member's Fitted
  weights: np.ndarray  # [K + 1] float64, the offset last
  val_held_out: np.ndarray  # [N_val, H, W, C] the cross-fitted reconstructions of aux.val
  info: dict


def _fit(aux: AuxSet, *, settings: Mapping | None, fitted: Callable, running) -> _Fit:
  """Fits the members' weights on their held-out reconstructions of aux.val (`fit`)."""
  cfg = read_settings(settings, DEFAULTS, name="blend")
  named = [cfg["members"]] if isinstance(cfg["members"], str) else list(cfg["members"])
  members = [m for m in named if m in (running or named)]
  if len(members) < 2:
    raise Skipped(f"fewer than two of its members {named} run")
  fitted = {m: fitted(m) for m in members}
  val_features, val_images = aux.features[aux.val], aux.images[aux.val]
  held_out = [
    fitted[m].reconstruct_held_out(val_features, name=f"attack {m!r}", image_shape=aux.image_shape)
    for m in members
  ]
  w = weights(held_out, val_images)
  mse = {m: float(np.mean((r - val_images) ** 2)) for m, r in zip(members, held_out, strict=True)}
  blended = float(np.mean((combine(w, held_out) - val_images) ** 2))
  val_held_out = cross_fitted(held_out, val_images)
  crossed = float(np.mean((val_held_out - val_images) ** 2))
  logging.info(
    "blend: weights %s, offset %.4f; validation MSE %.5f, %.5f cross-fitted (members: %s)",
    dict(zip(members, np.round(w[:-1], 4).tolist(), strict=True)),
    w[-1],
    blended,
    crossed,
    ", ".join(f"{m} {v:.5f}" for m, v in mse.items()),
  )
  info = {
    "members": members,
    "weights": [float(x) for x in w[:-1]],
    "offset": float(w[-1]),
    "val_mse": blended,
    "cross_fitted_val_mse": crossed,  # each half of aux.val by the weights of the other
    "member_val_mse": mse,
  }
  return _Fit(members, fitted, w, val_held_out, info)


def _params(out: _Fit) -> Params | None:
  """The blend's Params, or None when a member has no pure reconstruct (a user's attacker
  that returned a host function only)."""
  if any(out.fitted[m].apply is None for m in out.members):
    return None
  return Params(
    members=tuple(out.fitted[m].params for m in out.members),
    weights=jnp.asarray(out.weights, jnp.float32),
    applies=tuple(out.fitted[m].apply for m in out.members),
  )


def fit(
  aux: AuxSet, *, key, settings: Mapping | None = None, members: Mapping[str, Fitted]
) -> Params:
  """Fits the blend of fitted `members`; returns its params (for `reconstruct`).

  Args:
    aux: the auxiliary set; the weights minimise the pixel error of the members' held-out
      reconstructions of aux.val.
    key: unused (the least squares draw nothing); accepted for the common signature.
    settings: DEFAULTS' keys: `members`, the names to combine (those not in `members`
      are left out).
    members: name -> the member's `Fitted` (each with `apply` and `params`, as the
      built-in attackers return; `Fitted.reconstruct_held_out` gives its held-out
      reconstructions of aux.val).

  Returns:
    `Params`: the members' params and weights [K + 1] (float32).

  Raises:
    Skipped: fewer than two of the named members are given.
    ValueError: a member has no pure `apply` (a host-only attacker).
  """
  del key
  out = _fit(aux, settings=settings, fitted=members.__getitem__, running=tuple(members))
  params = _params(out)
  if params is None:
    raise ValueError(f"blend.fit: every member needs a pure apply and params; {out.members}")
  return params


@register("blend", defaults=DEFAULTS, check=check, default_on=True)
def attack(aux: AuxSet, ctx: Context, cfg: ml_collections.ConfigDict) -> Fitted:
  """The audit's blend: the members fitted by the run (`ctx.fitted`), combined on the host
  in float64 (`combine`); its pure `apply`/`params` beside it when every member has them."""
  out = _fit(aux, settings=cfg, fitted=ctx.fitted, running=ctx.running)
  members, fitted, w = out.members, out.fitted, out.weights
  val_features = aux.features[aux.val]

  def host_reconstruct(features):
    return combine(w, [fitted[m].reconstruct(features) for m in members])

  def reconstruct_held_out(features):
    """aux.val's features: the cross-fitted blend (else the members' held-out combined)."""
    if features.shape == val_features.shape and np.array_equal(features, val_features):
      return out.val_held_out.copy()
    return combine(w, [fitted[m].reconstruct_held_out(features) for m in members])

  params = _params(out)
  return Fitted(
    host_reconstruct,
    out.info,
    held_out=reconstruct_held_out,
    params=params,
    apply=None if params is None else reconstruct,
  )
