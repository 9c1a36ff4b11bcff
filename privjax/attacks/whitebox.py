"""`whitebox`: the adversary who holds the model's weights inverts it by gradient descent.

For each target, optimise an image (through a sigmoid, so it stays in [0, 1]) to
minimise the squared distance between the model's standardised features of it and
the target's, plus `tv_weight` times its total variation (an image prior). The
optimisation starts from another attacker's reconstruction (`init`, the decoder's by
default) or from the mean auxiliary image (`init="mean"`). The prior weight is chosen
among `tv_weights` (zero allowed) on the held-out auxiliary images, never on the
targets. Batched, jitted once, data-parallel over the mesh (each image's optimisation
is independent). Skipped, with the reason in the report, when the audited model is
not a differentiable JAX function (stored features, say).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from privjax import checks, metrics, parallel
from privjax.attacks.base import AuxSet, Context, Fitted, Skipped, register

DEFAULTS = {
  "init": "decoder",  # The attacker whose reconstructions start the optimisation, or "mean".
  "steps": 400,  # Adam steps per image.
  "learning_rate": 0.05,  # Adam's step size on the image logits.
  "tv_weights": (0.0, 1e-3),  # Total-variation prior weights; one is chosen on aux validation.
}


def check(name, cfg, names) -> None:
  others = [n for n in names if n != name]
  checks.require(
    cfg.init == "mean" or cfg.init in others,
    f"config.attacks.{name}.init must be 'mean' or another configured attacker {others}, "
    f"got {cfg.init!r}",
  )
  checks.positive_int(f"attacks.{name}.steps", cfg.steps)
  checks.number(f"attacks.{name}.learning_rate", cfg.learning_rate, low=1e-12)
  checks.numbers(f"attacks.{name}.tv_weights", cfg.tv_weights, low=0.0)


_EPS = 1e-3  # initial images are clipped to [eps, 1 - eps] before the logit


def total_variation(x):
  """[B, H, W, C] -> [B] mean absolute difference of neighbouring pixels."""
  dh = jnp.abs(x[:, 1:] - x[:, :-1]).mean(axis=(1, 2, 3))
  dw = jnp.abs(x[:, :, 1:] - x[:, :, :-1]).mean(axis=(1, 2, 3))
  return dh + dw


def invert(embed, params, start, features, *, steps: int, learning_rate: float, tv_weight):
  """Images whose features under `embed(params, .)` approach `features`, from `start`.

  Args:
    embed: `(params, [B, H, W, C]) -> [B, D]`, differentiable.
    params: the model's params.
    start: [B, H, W, C] initial images in [0, 1].
    features: [B, D] the features to match.
    steps: Adam steps.
    learning_rate: Adam's step size on the image logits.
    tv_weight: weight of the total-variation prior.

  Returns:
    [B, H, W, C] images in [0, 1].
  """
  tx = optax.adam(learning_rate)
  z0 = jnp.log(jnp.clip(start, _EPS, 1 - _EPS)) - jnp.log1p(-jnp.clip(start, _EPS, 1 - _EPS))

  def objective(z):
    x = jax.nn.sigmoid(z)
    distance = jnp.mean((embed(params, x) - features) ** 2, axis=1)
    return jnp.sum(distance + tv_weight * total_variation(x))  # images are independent

  def step(_, carry):
    z, opt_state = carry
    updates, opt_state = tx.update(jax.grad(objective)(z), opt_state, z)
    return optax.apply_updates(z, updates), opt_state

  z, _ = jax.lax.fori_loop(0, steps, step, (z0, tx.init(z0)))
  return jax.nn.sigmoid(z)


# Jitted once: a rerun with the same model function, settings and shapes compiles nothing.
_invert = jax.jit(invert, static_argnames=("embed", "steps", "learning_rate"))


def _check_differentiable(model, image_shape) -> None:
  """Raises Skipped, with the reason, unless a gradient traces through the model."""
  sample = jnp.zeros((1, *image_shape), jnp.float32)
  try:
    jax.eval_shape(jax.grad(lambda x: jnp.sum(model.embed(model.params, x))), sample)
  except Exception as e:  # any failure to trace a gradient means "not differentiable JAX"
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise Skipped(
      f"the audited model is not differentiable JAX ({type(e).__name__}: {first})"
    ) from e


def _selection(optimise, aux: AuxSet, ctx: Context, tv_weights) -> list[dict]:
  """Each prior weight's mean SSIM on the held-out auxiliary images (and its seconds)."""
  val_features, val_images = aux.features[aux.val], aux.images[aux.val]
  score = functools.partial(
    metrics.ssim_jit, filter_size=ctx.filter_size, filter_sigma=ctx.filter_sigma
  )
  selection = []
  for w in tv_weights:
    t = time.perf_counter()
    rec = optimise(val_features, w)
    seconds = time.perf_counter() - t
    s = float(
      np.mean(
        parallel.batched_map(
          score, [rec, val_images], batch_size=ctx.eval_batch_size, mesh=ctx.mesh
        )
      )
    )
    selection.append({"tv_weight": float(w), "val_ssim": s, "seconds": round(seconds, 3)})
  return selection


@register("whitebox", defaults=DEFAULTS, check=check, needs_model=True, models_defense=False)
def attack(aux: AuxSet, ctx: Context, cfg: ml_collections.ConfigDict) -> Fitted:
  """Chooses the prior weight on aux.val; reconstructs by optimising through the model."""
  model = ctx.model  # never None: needs_model=True makes the runner skip it on stored features
  _check_differentiable(model, aux.image_shape)
  settings = {"steps": cfg.steps, "learning_rate": cfg.learning_rate}
  try:  # compiled once per embed function, settings and shapes
    hash(model.embed)
    run = functools.partial(_invert, model.embed, **settings)
  except TypeError:  # an unhashable callable: jitted for this attack only
    run = jax.jit(functools.partial(invert, model.embed, **settings))
  mean_image = aux.images[aux.train].mean(axis=0)

  def start(features):
    if cfg.init == "mean":
      return np.broadcast_to(mean_image, (features.shape[0], *aux.image_shape)).copy()
    return ctx.fitted(cfg.init).reconstruct(features)

  def optimise(features, tv_weight):
    fn = lambda s, f: run(model.params, s, f, tv_weight=jnp.float32(tv_weight))  # noqa: E731
    return parallel.batched_map(
      fn, [start(features), features], batch_size=ctx.eval_batch_size, mesh=ctx.mesh
    )

  selection = _selection(optimise, aux, ctx, cfg.tv_weights)
  chosen = max(selection, key=lambda r: r["val_ssim"])
  logging.info(
    "whitebox: tv_weight %g chosen on %d held-out auxiliary images (SSIM %.4f)",
    chosen["tv_weight"],
    len(aux.val),
    chosen["val_ssim"],
  )
  timing = {}

  def reconstruct(features):
    t = time.perf_counter()
    out = optimise(features, chosen["tv_weight"])
    seconds = time.perf_counter() - t
    timing.update(
      seconds=round(seconds, 3),
      image_steps_per_second=round(cfg.steps * len(features) / seconds, 1),
    )
    return out

  info = {
    "init": cfg.init,
    "steps": int(cfg.steps),
    "learning_rate": float(cfg.learning_rate),
    "tv_weight": chosen["tv_weight"],
    "selection": selection,
    "timing": timing,
  }
  return Fitted(reconstruct, info)
