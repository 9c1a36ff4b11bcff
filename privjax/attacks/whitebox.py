"""`whitebox`: the adversary who holds the model's weights inverts it by gradient descent.

For each target, optimise an image (through a sigmoid, so it stays in [0, 1]) to
minimise the squared distance between the model's standardised features of it and
the target's, plus `tv_weight` times its total variation (an image prior). The
optimisation starts from another attacker's reconstruction or the mean auxiliary image
("mean"): of the starts in `init`, the one whose own held-out reconstructions of the
auxiliary validation images are best (SSIM) before any step; a start that is skipped
is left out, and "mean" stands in when none runs. The prior weight (among `tv_weights`,
zero allowed) and the step count are then chosen on the same held-out images, never on
the targets. Batched, jitted once, data-parallel over the mesh (each image's optimisation
is independent). Skipped, with the reason in the report, when the audited model is
not a differentiable JAX function (stored features, say).

The functional core: the per-target optimisation is `invert`, one pure function of (model
params, start images, target features) whose optax Adam loop runs in `lax.fori_loop`,
jitted once. `fit(aux, *, key, settings, model, starts) -> Params` makes the choices above
and returns the model's params, the chosen start's params and prior weight, and the pure
`reconstruct(params, features)` is the start's pure reconstruction followed by `invert`: one
function of (model params, start params, target features) that jits and differentiates.
The audit runs the same steps from its start's host reconstructions (a blend's combine is
float64 on the host), batched over the mesh, so its numbers are unchanged.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from privjax import checks
from privjax.attacks.base import (
  AuxSet,
  Context,
  Fitted,
  Model,
  Skipped,
  key_seed,
  read_settings,
  register,
)
from privjax.runtime import parallel
from privjax.scoring import metrics

__all__ = [
  "ADAM_EPS",
  "DEFAULTS",
  "Params",
  "advance",
  "attack",
  "check",
  "choose",
  "fit",
  "invert",
  "logits",
  "reconstruct",
  "schedule",
  "starts",
  "still_rising",
  "total_variation",
]

DEFAULTS = {
  # The attackers whose reconstructions may start the optimisation ("mean": the mean
  # auxiliary image); the one best on aux validation before any step is optimised. Those
  # not running are left out; a single name is allowed.
  "init": ("blend", "ridge", "decoder"),
  # Most Adam steps per image; the number used is chosen on aux validation. On the default
  # digits, from the blend: 200 steps SSIM 0.957, 400 steps 0.960 for twice the time.
  "steps": 200,
  "checkpoints": 8,  # Step counts tried: steps * k / checkpoints for k = 0..checkpoints.
  # The fewest steps whose validation SSIM is within this of the best are used (0: the best).
  "tolerance": 0.0,
  # Stop the search after this many step counts in a row that beat no earlier one (0: try
  # every count); see docs/method.md.
  "patience": 2,
  "learning_rate": 0.05,  # Adam's step size on the image logits.
  "tv_weights": (0.0, 1e-3),  # Total-variation prior weights; one is chosen on aux validation.
}


def check(name, cfg, names) -> None:
  """Raises ConfigError for a setting the whitebox attacker cannot take."""
  others = [n for n in names if n != name]
  checks.require(
    bool(starts(cfg.init, others)),
    f"config.attacks.{name}.init must be 'mean' or another configured attacker {others} (or "
    f"a list of them), got {cfg.init!r}",
  )
  checks.positive_int(f"attacks.{name}.steps", cfg.steps)
  checks.positive_int(f"attacks.{name}.checkpoints", cfg.checkpoints)
  checks.number(f"attacks.{name}.learning_rate", cfg.learning_rate, low=1e-12)
  checks.number(f"attacks.{name}.tolerance", cfg.tolerance, low=0.0)
  checks.positive_int(f"attacks.{name}.patience", cfg.patience, zero_ok=True)
  checks.numbers(f"attacks.{name}.tv_weights", cfg.tv_weights, low=0.0)


def starts(init, running) -> list[str]:
  """The configured starts that can run: "mean" and the running attackers among `init`."""
  names = [init] if isinstance(init, str) else list(init)
  return [n for n in names if n == "mean" or n in running]


_EPS = 1e-3  # initial images are clipped to [eps, 1 - eps] before the logit
# Adam's eps: a pixel whose gradient is at float32 noise level (a saturated or unused pixel)
# would otherwise take full-size steps in the direction of that noise (Adam divides by the
# gradient's own size), and the result would depend on the device count's summation order.
ADAM_EPS = 1e-6


def total_variation(x):
  """[B, H, W, C] -> [B] mean absolute difference of neighbouring pixels."""
  dh = jnp.abs(x[:, 1:] - x[:, :-1]).mean(axis=(1, 2, 3))
  dw = jnp.abs(x[:, :, 1:] - x[:, :, :-1]).mean(axis=(1, 2, 3))
  return dh + dw


def schedule(steps: int, checkpoints: int) -> tuple[int, ...]:
  """The step counts tried on validation: 0, then `checkpoints` counts up to `steps` (every
  step count when there are fewer steps than checkpoints)."""
  checkpoints = min(checkpoints, steps)
  return tuple(sorted({0, *(round(steps * k / checkpoints) for k in range(1, checkpoints + 1))}))


def invert(embed, params, start, features, tv_weight, *, steps, learning_rate: float):
  """Images whose features under `embed(params, .)` approach `features`, from `start`.

  Args:
    embed: `(params, [B, H, W, C]) -> [B, D]`, differentiable.
    params: the model's params.
    start: [B, H, W, C] initial images in [0, 1].
    features: [B, D] the features to match.
    steps: a tuple of increasing Adam step counts (the first may be 0).
    learning_rate: Adam's step size on the image logits.
    tv_weight: weight of the total-variation prior, one per image [B] (or a scalar).

  Returns:
    [B, len(steps), H, W, C]: each image after each step count, in [0, 1] (step 0 is
    `start` itself, unclipped).
  """
  tx = optax.adam(learning_rate, eps=ADAM_EPS)
  z0 = logits(start)

  def objective(z):
    x = jax.nn.sigmoid(z)
    distance = jnp.mean((embed(params, x) - features) ** 2, axis=1)
    return jnp.sum(distance + tv_weight * total_variation(x))  # images are independent

  def step(_, carry):
    z, opt_state = carry
    updates, opt_state = tx.update(jax.grad(objective)(z), opt_state, z)
    return optax.apply_updates(z, updates), opt_state

  carry, done, out = (z0, tx.init(z0)), 0, []
  for n in steps:  # a short static list: one loop per stretch between step counts
    carry = jax.lax.fori_loop(done, n, step, carry) if n > done else carry
    out.append(start if n == 0 else jax.nn.sigmoid(carry[0]))
    done = n
  return jnp.stack(out, axis=1)


def advance(embed, params, z, mu, nu, count, features, tv_weight, *, steps, learning_rate):
  """`steps` more of `invert`'s Adam steps on image logits, from an explicit state.

  Args:
    embed, params, features, tv_weight, learning_rate: as in `invert`.
    z: [B, H, W, C] image logits (sigmoid gives the images).
    mu, nu: [B, H, W, C] Adam's first and second moments.
    count: [B] int32 Adam's step count so far (the same in every row; row 0 is read).
    steps: how many steps to take (static).

  Returns:
    (z, mu, nu, images) after the steps, images = sigmoid(z): the same numbers one longer
    `invert` run reaches.
  """
  tx = optax.adam(learning_rate, eps=ADAM_EPS)
  adam, *rest = tx.init(z)
  state = (adam._replace(count=count[0], mu=mu, nu=nu), *rest)

  def objective(z):
    x = jax.nn.sigmoid(z)
    distance = jnp.mean((embed(params, x) - features) ** 2, axis=1)
    return jnp.sum(distance + tv_weight * total_variation(x))

  def step(_, carry):
    z, opt_state = carry
    updates, opt_state = tx.update(jax.grad(objective)(z), opt_state, z)
    return optax.apply_updates(z, updates), opt_state

  z, (adam, *_) = jax.lax.fori_loop(0, steps, step, (z, state))
  return z, adam.mu, adam.nu, jax.nn.sigmoid(z)


def logits(images):
  """[B, H, W, C] images in [0, 1] -> the logits `invert` starts from."""
  x = jnp.clip(images, _EPS, 1 - _EPS)
  return jnp.log(x) - jnp.log1p(-x)


# Jitted once: a rerun with the same model function, settings and shapes compiles nothing.
_invert = jax.jit(invert, static_argnames=("embed", "steps", "learning_rate"))
_advance = jax.jit(advance, static_argnames=("embed", "steps", "learning_rate"))


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


def _selection(advance_fn, aux: AuxSet, ctx: Context, name, begin, tv_weights, steps, patience):
  """Each prior weight's mean image error and SSIM on the held-out aux images from the start
  `begin` (`name`'s), per step count: every weight in one batched optimisation, advanced
  one stretch (between step counts) at a time; step 0 is the start itself, so the choice
  never ends worse than it began there. The search stops early once `patience` stretches
  in a row improve on no earlier step count (0: never), and logs its progress."""
  val_features, val_images = aux.features[aux.val], aux.images[aux.val]
  n, c = len(aux.val), len(tv_weights)
  truth = np.concatenate([val_images] * c)
  features = np.concatenate([val_features] * c)
  weights = np.repeat(np.asarray(tv_weights, np.float32), n)
  start = np.concatenate([begin] * c)
  z = np.asarray(jax.jit(logits)(start))
  mu, nu = np.zeros_like(z), np.zeros_like(z)
  ssim, mse = [], []  # per step count: [C * n]

  def record(images):
    ssim.append(_ssim(images, truth, ctx))
    mse.append(((images - truth) ** 2).mean(axis=(1, 2, 3)))
    return float(ssim[-1].reshape(c, n).mean(axis=1).max())

  t = time.perf_counter()
  best, since, done = record(start), 0, 0
  for k, target in enumerate(steps[1:], start=1):
    count = np.full(len(z), done, np.int32)
    z, mu, nu, images = advance_fn([z, mu, nu, count, features, weights], target - done)
    done = target
    score = record(images)
    since = 0 if score > best else since + 1
    best = max(best, score)
    _log_search(done, steps[-1], score, best, time.perf_counter() - t)
    if patience and since >= patience and k < len(steps) - 1:
      logging.info(
        "whitebox: the last %d step counts improved on no earlier one: search stopped at %d "
        "of %d steps (config.attacks.whitebox.patience)",
        since,
        done,
        steps[-1],
      )
      break
  seconds = round(time.perf_counter() - t, 3)
  return _selection_rows(name, tv_weights, n, list(steps[: len(ssim)]), ssim, mse, seconds)


def _log_search(done: int, total: int, score: float, best: float, elapsed: float) -> None:
  """Logs the step search's progress: `done` of `total` steps after `elapsed` seconds."""
  logging.info(
    "whitebox: choosing steps: %d of %d done (held-out SSIM %.4f, best %.4f); %.0fs, about "
    "%.0fs left",
    done,
    total,
    score,
    best,
    elapsed,
    elapsed * (total - done) / done,
  )


def _selection_rows(name, tv_weights, n, tried, ssim, mse, seconds) -> list[dict]:
  """`_selection`'s result: per prior weight, its mean mse and SSIM on the `n` held-out images
  per step count `tried`, from `ssim` and `mse` (per step count: [len(tv_weights) * n],
  weight-major)."""
  c = len(tv_weights)
  ssim_ = np.stack(ssim, axis=1).reshape(c, n, len(tried))
  mse_ = np.stack(mse, axis=1).reshape(c, n, len(tried))
  return [
    {
      "init": name,
      "tv_weight": float(w),
      "steps": tried,
      "val_mse": [float(v) for v in mse_[i].mean(axis=0)],
      "val_ssim": [float(v) for v in ssim_[i].mean(axis=0)],
      "seconds": seconds,  # of the whole batched optimisation
    }
    for i, w in enumerate(tv_weights)
  ]


def _ssim(images, truth, ctx: Context) -> np.ndarray:
  """[N] SSIM of each image against its truth, in the audit's window, over the mesh."""
  score = functools.partial(
    metrics.ssim_jit, filter_size=ctx.filter_size, filter_sigma=ctx.filter_sigma
  )
  return parallel.batched_map(score, [images, truth], batch_size=ctx.eval_batch_size, mesh=ctx.mesh)


def _opening(val_starts: dict, aux: AuxSet, ctx: Context) -> dict:
  """Each start's mean SSIM on the held-out aux images, before any step (in `init` order)."""
  truth = aux.images[aux.val]
  return {name: float(np.mean(_ssim(recs, truth, ctx))) for name, recs in val_starts.items()}


def choose(selection: list[dict], tolerance: float = 0.0) -> dict:
  """The (prior weight, step count) of least validation image error (1 - SSIM, the audit's
  measure), or the fewest steps within `tolerance` of it; fewer steps on a tie."""
  points = [
    {"init": r.get("init"), "tv_weight": r["tv_weight"], "steps": n, "val_mse": m, "val_ssim": s}
    for r in selection
    for n, m, s in zip(r["steps"], r["val_mse"], r["val_ssim"], strict=True)
  ]
  best = max(p["val_ssim"] for p in points)
  near = [p for p in points if p["val_ssim"] >= best - tolerance]
  return min(near, key=lambda p: (p["steps"], -p["val_ssim"]))


def still_rising(val_ssim) -> bool:
  """Whether a validation curve (SSIM per step count, evenly spaced) rose over its last
  stretch at more than half its average rate from the start: more steps would likely
  reconstruct better."""
  total = val_ssim[-1] - val_ssim[0]
  return total > 0 and val_ssim[-1] - val_ssim[-2] > 0.5 * total / (len(val_ssim) - 1)


def _compiled(model, learning_rate: float):
  """(run, more): `invert` and `advance` for `model.embed` at `learning_rate`, compiled once
  per embed function, settings and shapes (the module's jits); an unhashable embed callable
  is jitted for this attack only."""
  try:
    hash(model.embed)
    run = functools.partial(_invert, model.embed, learning_rate=learning_rate)
    more = functools.partial(_advance, model.embed, learning_rate=learning_rate)
  except TypeError:
    run, more = (
      jax.jit(
        functools.partial(fn, model.embed, learning_rate=learning_rate),
        static_argnames=("steps",),
      )
      for fn in (invert, advance)
    )
  return run, more


def _start_fn(aux: AuxSet, ctx: Context) -> Callable:
  """`start(name, features, held_out=False)`: the images the optimisation of `features`
  starts from: the mean auxiliary image ("mean"), or attacker `name`'s reconstructions
  (held out: as if it never fitted aux.val)."""
  mean_image = aux.images[aux.train].mean(axis=0)

  def start(name, features, held_out=False):
    if name == "mean":
      return np.broadcast_to(mean_image, (features.shape[0], *aux.image_shape)).copy()
    init = ctx.fitted(name)
    if held_out:
      return init.reconstruct_held_out(
        features, name=f"attack {name!r}", image_shape=aux.image_shape
      )
    return init.reconstruct(features)

  return start


def _optimise_fn(run, params, ctx: Context) -> Callable:
  """`optimise(starts, features, tv_weights, steps)`: `invert`, batched over the mesh."""

  def optimise(starts, features, tv_weights, steps):
    def fn(s, f, w):
      return run(params, s, f, w, steps=steps)

    return parallel.batched_map(
      fn, [starts, features, tv_weights], batch_size=ctx.eval_batch_size, mesh=ctx.mesh
    )

  return optimise


def _advance_fn(more, params, ctx: Context) -> Callable:
  """`advance_fn(arrays, steps)`: `advance`, batched over the mesh."""

  def advance_fn(arrays, steps):
    """(z, mu, nu, images) after `steps` more steps of each row (batched over the mesh)."""

    def fn(z, mu, nu, count, f, w):
      return more(params, z, mu, nu, count, f, w, steps=steps)

    return parallel.batched_map(fn, arrays, batch_size=ctx.eval_batch_size, mesh=ctx.mesh)

  return advance_fn


def _val_starts(start: Callable, init, running, val_features) -> tuple[dict, dict]:
  """The held-out reconstructions of the aux val features by each start of `init` that
  runs (in `init` order; "mean" stands in when none does), and those left out (skipped),
  with why."""
  named = [init] if isinstance(init, str) else list(init)
  val_starts, left_out = {}, {}
  for name in starts(init, running or named):
    try:
      val_starts[name] = start(name, val_features, held_out=True)
    except Skipped as e:  # that attacker did not run: the others (or "mean") start
      left_out[name] = str(e)
      logging.info("whitebox: start %s left out (skipped: %s)", name, e)
  if not val_starts:
    val_starts["mean"] = start("mean", val_features)
  return val_starts, left_out


def _log_plan(first: str, opening: dict, cfg, num_val: int) -> None:
  """Logs the chosen start and the search for its prior weight and steps about to run."""
  logging.info(
    "whitebox: from %s (held-out validation SSIM before any step: %s); choosing its prior "
    "weight (%s) and steps (0-%d) on %d held-out auxiliary images: %d optimisations of %d "
    "steps through the model",
    first,
    ", ".join(f"{n} {v:.4f}" for n, v in opening.items()),
    ", ".join(f"{w:g}" for w in cfg.tv_weights),
    cfg.steps,
    num_val,
    len(cfg.tv_weights) * num_val,
    cfg.steps,
  )


def _log_choice(chosen: dict, num_val: int) -> None:
  logging.info(
    "whitebox: from %s, %d steps at tv_weight %g, chosen on %d held-out auxiliary images by "
    "image error (SSIM %.4f, MSE %.5f)",
    chosen["init"],
    chosen["steps"],
    chosen["tv_weight"],
    num_val,
    chosen["val_ssim"],
    chosen["val_mse"],
  )


def _reconstructor(start: Callable, optimise: Callable, chosen: dict, timing: dict) -> Callable:
  """`reconstruct(features)`: from the chosen start, the chosen steps at the chosen prior
  weight (none: the start itself); records its time in `timing`."""

  def reconstruct(features):
    t = time.perf_counter()
    begin = start(chosen["init"], features)
    if chosen["steps"]:
      logging.info("whitebox: %d images, %d steps each", len(features), chosen["steps"])
    if chosen["steps"] == 0:  # no optimisation beat the start on validation: keep it
      out = begin
    else:
      w = np.full(len(features), chosen["tv_weight"], np.float32)
      out = optimise(begin, features, w, (chosen["steps"],))[:, 0]
    seconds = time.perf_counter() - t
    timing.update(
      seconds=round(seconds, 3),
      image_steps_per_second=round(chosen["steps"] * len(features) / seconds, 1),
    )
    return out

  return reconstruct


def _warnings(selection: list[dict], chosen: dict, cfg) -> tuple[str, ...]:
  """Why the whitebox numbers may understate the leakage: its validation SSIM still rising
  at its most steps."""
  curve = next(r for r in selection if r["tv_weight"] == chosen["tv_weight"])
  if chosen["steps"] == cfg.steps and still_rising(curve["val_ssim"]):
    return (
      f"whitebox: its held-out validation SSIM was still rising at its most steps "
      f"({cfg.steps}); more steps (config.attacks.whitebox.steps) would likely reconstruct "
      f"better",
    )
  return ()


@flax.struct.dataclass
class Params:
  """A fitted whitebox attacker: the model's params, the chosen start's params and the
  chosen prior weight (a pytree of arrays); the model's embedding, the start's pure
  reconstruct and the step count and size ride in its structure (static)."""

  model: Any  # the audited model's params
  start: Any  # the start's params; for the mean auxiliary image, that image [H, W, C]
  tv_weight: jax.Array  # [] float32 weight of the total-variation prior
  embed: Callable = flax.struct.field(pytree_node=False)  # (model, [B, H, W, C]) -> [B, D]
  start_apply: Callable | None = flax.struct.field(pytree_node=False)  # None: the mean image
  steps: int = flax.struct.field(pytree_node=False)  # Adam steps per image (0: the start)
  learning_rate: float = flax.struct.field(pytree_node=False)


def reconstruct(params: Params, features: jax.Array) -> jax.Array:
  """Pure: standardised features [B, D] -> images [B, H, W, C] in [0, 1].

  The start's pure reconstruction of `features` (or the mean auxiliary image), then
  `params.steps` Adam steps of `invert` through `params.embed` at the chosen prior weight:
  one function of (model params, start params, target features) with the optimisation in
  `lax.fori_loop`. Jits, vmaps and differentiates (through the optimisation) with respect
  to `params` and `features`.
  """
  b = features.shape[0]
  if params.start_apply is None:
    start = jnp.broadcast_to(params.start, (b, *params.start.shape))
  else:
    start = params.start_apply(params.start, features)
  if params.steps == 0:
    return start
  w = jnp.broadcast_to(params.tv_weight, (b,))
  out = invert(
    params.embed,
    params.model,
    start,
    features,
    w,
    steps=(params.steps,),
    learning_rate=params.learning_rate,
  )
  return out[:, 0]


class _Fit(NamedTuple):
  chosen: dict  # the chosen start, prior weight and steps (`choose`)
  reconstruct: Callable  # host features -> images (the audit's)
  params: Params | None  # None: the start has no pure reconstruct, or embed is unhashable
  info: dict
  warnings: tuple[str, ...]


def _params(aux: AuxSet, ctx: Context, cfg, chosen: dict) -> Params | None:
  """The chosen attacker's `Params`, when it can be one pure function: its start has a pure
  `apply` (or is the mean image) and the model's embedding is hashable (static under jit)."""
  model = ctx.model
  try:
    hash(model.embed)
  except TypeError:
    return None
  if chosen["init"] == "mean":
    start, start_apply = jnp.asarray(aux.images[aux.train].mean(axis=0)), None
  else:
    fitted = ctx.fitted(chosen["init"])
    if fitted.apply is None:
      return None
    start, start_apply = fitted.params, fitted.apply
  return Params(
    model=model.params,
    start=start,
    tv_weight=jnp.asarray(chosen["tv_weight"], jnp.float32),
    embed=model.embed,
    start_apply=start_apply,
    steps=int(chosen["steps"]),
    learning_rate=float(cfg.learning_rate),
  )


def _fit(aux: AuxSet, ctx: Context, cfg: ml_collections.ConfigDict) -> _Fit:
  """Chooses the start, prior weight and step count on aux.val by image error (`fit`)."""
  model = ctx.model  # never None: needs_model=True makes the runner skip it on stored features
  _check_differentiable(model, aux.image_shape)
  run, more = _compiled(model, cfg.learning_rate)
  start = _start_fn(aux, ctx)
  val_starts, left_out = _val_starts(start, cfg.init, ctx.running, aux.features[aux.val])
  opening = _opening(val_starts, aux, ctx)
  first = max(opening, key=opening.get)  # the first named wins a tie
  _log_plan(first, opening, cfg, len(aux.val))
  selection = _selection(
    _advance_fn(more, model.params, ctx),
    aux,
    ctx,
    first,
    val_starts[first],
    cfg.tv_weights,
    schedule(cfg.steps, cfg.checkpoints),
    cfg.patience,
  )
  chosen = choose(selection, cfg.tolerance)
  _log_choice(chosen, len(aux.val))
  timing = {}
  reconstruct_host = _reconstructor(start, _optimise_fn(run, model.params, ctx), chosen, timing)
  info = {
    "init": chosen["init"],
    "steps": int(chosen["steps"]),
    "max_steps": int(cfg.steps),
    "learning_rate": float(cfg.learning_rate),
    "tv_weight": chosen["tv_weight"],
    "val_mse": chosen["val_mse"],
    "val_ssim": chosen["val_ssim"],
    "starts": opening,  # each start's held-out validation SSIM before any step
    "starts_left_out": left_out,  # the named starts that were skipped, and why
    "selection": selection,
    "timing": timing,
  }
  params = _params(aux, ctx, cfg, chosen)
  return _Fit(chosen, reconstruct_host, params, info, _warnings(selection, chosen, cfg))


def fit(
  aux: AuxSet,
  *,
  key,
  settings: Mapping | None = None,
  model: Model,
  starts: Mapping[str, Fitted],
  filter_size: int,
  filter_sigma: float,
  mesh=None,
  eval_batch_size: int = 256,
) -> Params:
  """Fits the whitebox attacker: its start, prior weight and step count chosen on aux.val.

  Args:
    aux: the auxiliary set (the choices are made on aux.val, from the starts' held-out
      reconstructions of it).
    key: a `jax.random` key (the choice draws nothing; accepted for the common signature).
    settings: DEFAULTS' keys (missing ones take their defaults); `init` names starts among
      `starts` or "mean".
    model: the audited model: `embed(params, [B, H, W, C]) -> [B, D]` standardised,
      differentiable (hashable, so it can be static under jit), and its params.
    starts: name -> the start's `Fitted` (with `apply` and `params` for a pure
      `reconstruct`; a start not given is left out, as a skipped one is).
    filter_size, filter_sigma: the SSIM window the choice is scored in.
    mesh: the data mesh the optimisations are sharded over (None: every device).
    eval_batch_size: the batch of the optimisations.

  Returns:
    `Params` for `reconstruct`.

  Raises:
    Skipped: the model is not differentiable JAX.
    ValueError: the chosen start has no pure `apply`, or `model.embed` is unhashable.
  """

  def fitted(name):
    if name not in starts:
      raise Skipped(f"{name} is not among the starts given")
    return starts[name]

  ctx = Context(
    mesh=parallel.data_mesh() if mesh is None else mesh,
    seed=key_seed(key),
    eval_batch_size=eval_batch_size,
    filter_size=filter_size,
    filter_sigma=filter_sigma,
    checkpoint_dir=None,
    model=model,
    fitted=fitted,
    running=tuple(starts),
  )
  cfg = ml_collections.ConfigDict(read_settings(settings, DEFAULTS, name="whitebox"))
  out = _fit(aux, ctx, cfg)
  if out.params is None:
    raise ValueError(
      f"whitebox.fit: the chosen start {out.chosen['init']!r} has no pure apply, or the "
      "model's embed is unhashable"
    )
  return out.params


@register(
  "whitebox",
  defaults=DEFAULTS,
  check=check,
  default_on=True,
  needs_model=True,
  models_defense=False,
)
def attack(aux: AuxSet, ctx: Context, cfg: ml_collections.ConfigDict) -> Fitted:
  """Chooses the prior weight and step count on aux.val by image error; then optimises
  from the chosen start's host reconstructions, batched over the mesh (its pure
  `apply`/`params` beside it when the start has them)."""
  out = _fit(aux, ctx, cfg)
  return Fitted(
    out.reconstruct,
    out.info,
    out.warnings,
    params=out.params,
    apply=None if out.params is None else reconstruct,
  )
