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
"""

from __future__ import annotations

import ml_collections
import numpy as np
from absl import logging

from privjax import checks
from privjax.attacks.base import AuxSet, Context, Fitted, Skipped, register

DEFAULTS = {
  # The attackers combined (those not running are left out). Each member's reconstructions
  # of the targets are computed again by the blend: a whitebox member would optimise twice.
  "members": ("decoder", "ridge", "nearest"),
}


def check(name, cfg, names) -> None:
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
  out = np.full(reconstructions[0].shape, w[-1], dtype=np.float64)
  for wi, r in zip(w[:-1], reconstructions, strict=True):
    out += wi * r.astype(np.float64)
  return np.clip(out, 0.0, 1.0).astype(np.float32)


@register("blend", defaults=DEFAULTS, check=check, default_on=True)
def attack(aux: AuxSet, ctx: Context, cfg: ml_collections.ConfigDict) -> Fitted:
  """Fits the members' weights on their held-out reconstructions of aux.val."""
  named = [cfg.members] if isinstance(cfg.members, str) else list(cfg.members)
  members = [m for m in named if m in (ctx.running or named)]
  if len(members) < 2:
    raise Skipped(f"fewer than two of its members {named} run")
  fitted = {m: ctx.fitted(m) for m in members}
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

  def reconstruct(features):
    return combine(w, [fitted[m].reconstruct(features) for m in members])

  def reconstruct_held_out(features):
    """aux.val's features: the cross-fitted blend (else the members' held-out combined)."""
    if features.shape == val_features.shape and np.array_equal(features, val_features):
      return val_held_out.copy()
    return combine(w, [fitted[m].reconstruct_held_out(features) for m in members])

  info = {
    "members": members,
    "weights": [float(x) for x in w[:-1]],
    "offset": float(w[-1]),
    "val_mse": blended,
    "cross_fitted_val_mse": crossed,  # each half of aux.val by the weights of the other
    "member_val_mse": mse,
  }
  return Fitted(reconstruct, info, held_out=reconstruct_held_out)
