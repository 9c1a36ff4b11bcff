"""`learned`: a feature transform g trained against a closed-form ridge attacker.

The defender owns labelled (features, image) pairs. g (linear `x W + b`, or a 2-layer
gelu MLP) is trained with optax Adam to minimise

  utility loss + lam * privacy loss,

- utility loss: the softmax cross-entropy of a linear head (trained jointly, then
  discarded) on g's output rows scaled to unit length (x sqrt(D')): the cosine view the
  audit's k-NN identification takes, so g cannot lower it by rescaling its output, and
  an offset or one inflated dimension that would blur cosine neighbours costs utility;
- privacy loss: the R^2 of a closed-form linear ridge attacker from g's output to the
  pixels, refitted inside the loss at every step: the batch is split in halves A and B,
  g's output standardised per dimension over the batch (as the audit's attackers
  standardise theirs), and R^2 = mean(ridge A -> B, ridge B -> A), the attacker taking
  its best penalty (`ridge_r2`), each floored at 0: the attacker can always predict the
  mean image, so a g that only makes the ridge extrapolate wildly earns nothing (without
  the floor, training drove the in-batch R^2 to -1000 and hid nothing from the audit).
  On images with more than `pixel_components` pixels the in-loss ridge predicts the
  defender's pixels' top principal components instead of every pixel (`_pixel_targets`):
  the directions a linear attacker recovers best, at a fraction of the cost.

The in-loss attacker is linear: a g that hides the images only from it (a nonlinear
code) is caught by the audit, which refits its own attackers on every trained g.

The features are standardised with the defender split's per-dimension mean and std
first (stored in the params). When g's width equals the feature width it starts at the
identity (linear: W = I; MLP: `x + mlp(x)` with the last layer zero), so lam = 0 keeps
the features' use; another width starts from an orthogonal (linear) or lecun-normal
(MLP) init. The whole training is one jitted `lax.scan`; the same key, data and settings
give bitwise the same params.
"""

from __future__ import annotations

import functools
import math
import numbers
import time
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from privjax import checks
from privjax.defenses import transforms
from privjax.errors import ConfigError, DataError, TrainingError

__all__ = ["DEFAULTS", "check", "check_settings", "ridge_r2", "train", "transform"]

DEFAULTS = {
  "hidden": 128,  # 0: g is linear; > 0: a 2-layer gelu MLP of this hidden width.
  "width": 0,  # g's output width D' (0: the feature width D).
  "steps": 1500,  # optax Adam steps.
  "batch_size": 512,  # Defender rows per step (halved for the in-loss ridge's fit/eval).
  "learning_rate": 1e-3,  # Adam's learning rate.
  # In-loss ridge penalties x mean eigenvalue; the best wins (and never below R^2 0).
  "penalties": (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0),
  # The in-loss ridge predicts this many top principal components of the defender's
  # pixels (0: every pixel). A 64x64x3 image has 12,288 pixels: 256 components cut the
  # ridge's products with them 48-fold; an image of fewer pixels is used whole.
  "pixel_components": 256,
}

HELD_OUT_ROWS = 4096  # defender rows (at most) of info's held-out ridge check, 80/20
MIN_ROWS = 8


def check(strength, dim) -> str | None:
  """An error message for a lambda that is not a finite number >= 0, else None."""
  del dim
  ok = isinstance(strength, numbers.Real) and not isinstance(strength, bool)
  if not (ok and math.isfinite(strength) and strength >= 0):
    return f"lam (the in-loss attacker's weight) must be a finite number >= 0, got {strength!r}"
  return None


def check_settings(name: str, settings: Mapping) -> None:
  """Raises ConfigError (naming config.defense.sweep.`name`.<key>) for a bad setting;
  a key `settings` lacks takes its DEFAULTS value."""
  where = f"defense.sweep.{name}"
  get = lambda k: settings.get(k, DEFAULTS[k])
  checks.positive_int(f"{where}.hidden", get("hidden"), zero_ok=True)
  checks.positive_int(f"{where}.width", get("width"), zero_ok=True)
  checks.positive_int(f"{where}.steps", get("steps"))
  checks.positive_int(f"{where}.batch_size", get("batch_size"))
  checks.number(f"{where}.batch_size", get("batch_size"), low=MIN_ROWS)
  lr = get("learning_rate")
  checks.require(
    isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0,
    f"config.{where}.learning_rate must be a finite number > 0, got {lr!r}",
  )
  checks.positive_int(f"{where}.pixel_components", get("pixel_components"), zero_ok=True)
  checks.numbers(f"{where}.penalties", get("penalties"), low=1e-12)
  for i, p in enumerate(get("penalties")):
    checks.require(math.isfinite(p), f"config.{where}.penalties[{i}] must be finite, got {p!r}")


# --- g --------------------------------------------------------------------------------


def _g(net: dict, x: jax.Array) -> jax.Array:
  """g on standardised features x [B, D] -> [B, D']. `net` = {"w": [D, D'], "b": [D']}
  (linear) or {"hidden": {"w": [D, h], "b": [h]}, "out": {"w": [h, D'], "b": [D']}} (MLP,
  residual `x + mlp(x)` exactly when D' == D)."""
  if "hidden" not in net:
    return x @ net["w"] + net["b"]
  h = jax.nn.gelu(x @ net["hidden"]["w"] + net["hidden"]["b"])
  out = h @ net["out"]["w"] + net["out"]["b"]
  return x + out if out.shape[-1] == x.shape[-1] else out


def transform(features, key, *, lam, mean, scale, net):
  """The registered defense: features [B, D] -> defended [B, D'].

  Pure and deterministic: `key` and `lam` (the strength g was trained with) are unused;
  every defense takes `(features, key, **params)` and the strength is one of the params.
  g's architecture (linear or MLP, its widths) is read from the structure and shapes of
  `net` (see `_g`), so one function serves every trained g. mean, scale [D]: the
  defender split's per-dimension mean and std (1 for a constant dimension).
  """
  del key, lam
  return _g(net, (features - mean) / scale).astype(features.dtype)


def _init(key, d: int, width: int, hidden: int) -> dict:
  """g's start: the identity when width == d, else an orthogonal / lecun-normal init."""
  k1, k2 = jax.random.split(key)
  if not hidden:
    w = jnp.eye(d) if width == d else jax.nn.initializers.orthogonal()(k1, (d, width))
    return {"w": w.astype(jnp.float32), "b": jnp.zeros(width, jnp.float32)}
  lecun = jax.nn.initializers.lecun_normal()
  out = jnp.zeros((hidden, width)) if width == d else lecun(k2, (hidden, width))
  return {
    "hidden": {"w": lecun(k1, (d, hidden), jnp.float32), "b": jnp.zeros(hidden, jnp.float32)},
    "out": {"w": out.astype(jnp.float32), "b": jnp.zeros(width, jnp.float32)},
  }


# --- the in-loss attacker ----------------------------------------------------------------


_NS_TOLERANCE = 1e-6  # the Newton-Schulz iteration stops once max |I - A X| is below this
_NS_MAX_STEPS = 64  # ... or after this many steps (enough for a condition number of 1e12)


def _inverse_spd(a: jax.Array) -> jax.Array:
  """a^-1 of a symmetric positive definite a [k, k] by Newton-Schulz iteration.

  Matrix products only: no LAPACK custom call, whose OpenBLAS threads, called from XLA's
  own threads in a long program, left the command line's training waiting forever. From
  X = I / trace(a) the residual R = I - a X squares at each step (X <- X (I + R)).
  """
  eye = jnp.eye(a.shape[0], dtype=a.dtype)
  x = eye / jnp.trace(a)

  def more(s):
    i, _, r = s
    return (i < _NS_MAX_STEPS) & (jnp.max(jnp.abs(r)) > _NS_TOLERANCE)

  def step(s):
    i, x, r = s
    return i + 1, x @ (eye + r), r @ r

  return jax.lax.while_loop(more, step, (0, x, eye - a @ x))[1]


@jax.custom_vjp
def _solve_spd(a: jax.Array, b: jax.Array) -> jax.Array:
  """a^-1 b for a symmetric positive definite a [k, k] and b [k, P] (`_inverse_spd`);
  differentiable in both (the backward pass reuses the inverse)."""
  return _inverse_spd(a) @ b


def _solve_fwd(a, b):
  inverse = _inverse_spd(a)
  x = inverse @ b
  return x, (inverse, x)


def _solve_bwd(res, g):
  inverse, x = res
  gb = inverse @ g  # (the inverse is symmetric)
  return -gb @ x.T, gb


_solve_spd.defvjp(_solve_fwd, _solve_bwd)


def ridge_r2(z_fit, y_fit, z_eval, y_eval, *, penalties) -> jax.Array:
  """The in-loss attacker's best R^2: a closed-form linear ridge with intercept.

  Fits pixels y_fit [n, P] on z_fit [n, D'] (centred; the dual n x n form when D' > n,
  the same solution) for each penalty (x the mean eigenvalue of the centred Gram matrix,
  trace / D', so scaling z changes nothing) and scores it on (z_eval [m, D'], y_eval
  [m, P]): R^2 = 1 - MSE / MSE of predicting y_fit's mean image (predictions unclipped).
  Differentiable in z (and y).

  Returns:
    A float32 scalar: the best R^2 over `penalties` (a sequence or array [K]).
  """
  z_fit, y_fit, z_eval, y_eval = (jnp.asarray(a) for a in (z_fit, y_fit, z_eval, y_eval))
  mu_z, mu_y = z_fit.mean(0), y_fit.mean(0)
  zc, yc, ze = z_fit - mu_z, y_fit - mu_y, z_eval - mu_z
  dual = zc.shape[1] > zc.shape[0]
  gram = zc @ zc.T if dual else zc.T @ zc
  unit = jnp.maximum(jnp.trace(gram) / zc.shape[1], 1e-30)
  rhs = yc if dual else zc.T @ yc
  eye = jnp.eye(gram.shape[0], dtype=gram.dtype)

  def r2(penalty):
    coef = _solve_spd(gram + penalty * unit * eye, rhs)
    pred = (ze @ zc.T @ coef if dual else ze @ coef) + mu_y
    return 1.0 - jnp.mean((pred - y_eval) ** 2) / jnp.mean((y_eval - mu_y) ** 2)

  return jnp.max(jax.vmap(r2)(jnp.asarray(penalties, gram.dtype)))


def _standardize(z_fit, *zs):
  """z_fit and each of zs over z_fit's per-dimension mean and std (differentiable)."""
  mu, var = z_fit.mean(0), z_fit.var(0)
  sd = jnp.sqrt(var + 1e-8 * var.mean() + 1e-30)
  return [(z - mu) / sd for z in (z_fit, *zs)]


def _losses(trainable, x, y, labels, penalties):
  """(cross-entropy, privacy R^2) of g on one batch x [n, D], y [n, P], labels [n]."""
  z = _g(trainable["net"], x)
  u = z * jax.lax.rsqrt(jnp.sum(z * z, -1, keepdims=True) + 1e-12) * jnp.sqrt(z.shape[1])
  logits = u @ trainable["head"]["w"] + trainable["head"]["b"]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  (zs,) = _standardize(z)
  h = x.shape[0] // 2
  a, b, ya, yb = zs[:h], zs[h : 2 * h], y[:h], y[h : 2 * h]
  # The attacker can always predict the mean image (R^2 0): a g that only makes the ridge
  # extrapolate wildly (R^2 far below 0) gains nothing, or the loss would reward it.
  r2 = 0.5 * (
    jnp.maximum(ridge_r2(a, ya, b, yb, penalties=penalties), 0.0)
    + jnp.maximum(ridge_r2(b, yb, a, ya, penalties=penalties), 0.0)
  )
  return ce, r2


# --- training --------------------------------------------------------------------------


# Jitted with the data, lam and the learning rate as arguments: every lam of a sweep
# reuses one program per data shape and architecture.
@functools.partial(jax.jit, static_argnames=("steps", "batch"))
def _train_steps(trainable, x, y, labels, key, lam, penalties, learning_rate, *, steps, batch):
  """`steps` Adam steps on batches of `batch` rows (a fresh permutation of the rows per
  step, from `fold_in(key, step)`): (trained, curve [steps, 2] of (CE, R^2) before each
  step's update)."""
  opt = optax.adam(learning_rate)

  def step(carry, i):
    params, state = carry
    idx = jax.random.permutation(jax.random.fold_in(key, i), x.shape[0])[:batch]

    def loss(p):
      ce, r2 = _losses(p, x[idx], y[idx], labels[idx], penalties)
      return ce + lam * r2, jnp.stack([ce, r2])

    grads, metrics = jax.grad(loss, has_aux=True)(params)
    updates, state = opt.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), metrics

  (trained, _), curve = jax.lax.scan(step, (trainable, opt.init(trainable)), jnp.arange(steps))
  return trained, curve


@jax.jit
def _held_out_r2(net, x_fit, y_fit, x_eval, y_eval, penalties):
  """ridge_r2 of g's output (standardised over the fit rows), fitted on x_fit, on x_eval."""
  z_fit, z_eval = _standardize(_g(net, x_fit), _g(net, x_eval))
  return ridge_r2(z_fit, y_fit, z_eval, y_eval, penalties=penalties)


def _held_out(key, nets: dict, x, y, penalties) -> dict:
  """{name: ridge_r2 of net's output} fitted on a fixed 80% of (at most HELD_OUT_ROWS)
  rows of x [M, D] / y [M, P] drawn with `key`, scored on the other 20%."""
  rows = np.asarray(jax.random.permutation(key, x.shape[0]))[:HELD_OUT_ROWS]
  fit, val = rows[: int(0.8 * len(rows))], rows[int(0.8 * len(rows)) :]
  return {
    name: float(_held_out_r2(net, x[fit], y[fit], x[val], y[val], penalties))
    for name, net in nets.items()
  }


def _inputs(features, images, labels):
  """Checked defender data: (features [M, D] float64, pixels [M, P] float32, class ids
  [M] int32, number of classes); DataError in one line for anything else."""
  f, im, lab = np.asarray(features), np.asarray(images), np.asarray(labels)
  m = f.shape[0] if f.ndim else 0
  got = lambda a: f"got {a.dtype} {list(a.shape)}"
  if f.ndim != 2 or not np.issubdtype(f.dtype, np.number) or not np.all(np.isfinite(f)):
    raise DataError(f"learned defense: features must be finite numbers [M, D], {got(f)}")
  if im.ndim != 4 or im.shape[0] != m or not np.issubdtype(im.dtype, np.floating):
    raise DataError(f"learned defense: images must be float [{m}, H, W, C], {got(im)}")
  if not np.all((im >= 0) & (im <= 1)):
    raise DataError("learned defense: images must be in [0, 1] (with no NaN)")
  if lab.shape != (m,) or not np.issubdtype(lab.dtype, np.integer):
    raise DataError(f"learned defense: labels must be integers [{m}], {got(lab)}")
  classes, ids = np.unique(lab, return_inverse=True)
  if m < MIN_ROWS or len(classes) < 2:
    raise DataError(
      f"learned defense: needs at least {MIN_ROWS} defender rows and 2 classes, got {m} "
      f"rows and {len(classes)} class(es)"
    )
  pixels = im.reshape(m, -1).astype(np.float32)
  return f.astype(np.float64), pixels, ids.astype(np.int32).reshape(m), len(classes)


def _pixel_targets(key, pixels: np.ndarray, components: int) -> tuple[np.ndarray, float]:
  """What the in-loss ridge predicts: (targets [M, k], share of pixel variance they hold).

  pixels [M, P] when `components` is 0 or >= P (share 1.0); else the centred pixels'
  coordinates on their top `components` principal directions, computed (host numpy SVD)
  from at most HELD_OUT_ROWS rows drawn with `key`. The directions are orthonormal, so the
  ridge's squared error on them is its pixel error within their span: the rest of each
  image is out of every linear map's reach from this subspace, and constant in g.
  """
  m, p = pixels.shape
  if not components or components >= min(p, m):
    return pixels, 1.0
  rows = np.asarray(jax.random.permutation(key, m))[:HELD_OUT_ROWS]
  sample = pixels[rows].astype(np.float64)
  mean = sample.mean(0)
  _, sv, vt = np.linalg.svd(sample - mean, full_matrices=False)
  share = float(np.sum(sv[:components] ** 2) / max(np.sum(sv**2), 1e-30))
  targets = (pixels - mean) @ vt[:components].T
  return targets.astype(np.float32), share


def _architecture(net) -> str:
  if "hidden" not in net:
    return "linear {}->{}".format(*net["w"].shape)
  return "mlp {}->{}->{}".format(*net["hidden"]["w"].shape, net["out"]["w"].shape[1])


def train(*, features, images, labels, strength, key, settings) -> tuple[dict, dict]:
  """Trains g on the defender's data (see the module doc).

  Args:
    features: [M, D] float, the defender's features (M >= 8).
    images: [M, H, W, C] float in [0, 1], their images.
    labels: [M] int, their classes (>= 2 distinct; any integer ids).
    strength: lam >= 0, the weight of the in-loss attacker's R^2.
    key: a `jax.random` key: g's init (`fold_in(key, 0)`), the held-out rows (1), the
      batches (2; `fold_in(., step)` per step) and the rows of the pixels' principal
      directions (3).
    settings: DEFAULTS' keys (a missing one takes its default; other keys are ignored).

  Returns:
    (params, info). params: {"mean": [D], "scale": [D] float32, "net": g's params (see
    `_g`)}, what `transform` takes besides lam. info, JSON-ready: wall seconds, steps,
    lambda, defender_rows, architecture, trained_against, in_loss_targets (pixels, or
    how many principal components and their share of the variance), start (CE and R^2 of the first
    batch, before any update), end (their means over the last tenth of the steps, at most
    50), held_out_ridge_r2 {before, after}: ridge_r2 fitted on a fixed 80% of (at most
    4096) defender rows and scored on the other 20%, of the start g and the trained g,
    on every pixel (not the in-loss targets).

  Raises:
    DataError: malformed data. ConfigError: a bad lam or setting. TrainingError: a
    non-finite loss or g.
  """
  began = time.perf_counter()
  x, y, ids, classes = _inputs(features, images, labels)
  m, d = x.shape
  if problem := check(strength, d):
    raise ConfigError(f"learned defense: {problem}")
  cfg = {k: (settings or {}).get(k, v) for k, v in DEFAULTS.items()}
  check_settings("learned", cfg)
  width = cfg["width"] or d
  mean, sd = x.mean(0), x.std(0)
  scale = np.where(sd > 0, sd, 1.0)
  xs = ((x - mean) / scale).astype(np.float32)
  k_init, k_rows, k_steps, k_pca = (jax.random.fold_in(key, i) for i in range(4))
  targets, share = _pixel_targets(k_pca, y, cfg["pixel_components"])
  start = {
    "net": _init(k_init, d, width, cfg["hidden"]),
    "head": {"w": jnp.zeros((width, classes)), "b": jnp.zeros(classes)},
  }
  penalties = jnp.asarray(cfg["penalties"], jnp.float32)
  trained, curve = _train_steps(
    start, xs, jnp.asarray(targets), jnp.asarray(ids), k_steps, jnp.float32(strength), penalties,
    jnp.float32(cfg["learning_rate"]), steps=cfg["steps"], batch=min(cfg["batch_size"], m),
  )  # fmt: skip
  curve, net = np.asarray(curve), jax.device_get(trained["net"])
  if not (np.all(np.isfinite(curve)) and all(np.all(np.isfinite(a)) for a in jax.tree.leaves(net))):
    raise TrainingError(f"learned defense (lam={strength}): the loss or g became non-finite")
  held = _held_out(k_rows, {"before": start["net"], "after": net}, xs, y, penalties)
  tail = curve[-max(1, min(50, len(curve) // 10)) :].mean(0)
  info = {
    "seconds": time.perf_counter() - began,
    "steps": int(cfg["steps"]),
    "lambda": float(strength),
    "defender_rows": int(m),
    "architecture": _architecture(net),
    "trained_against": "ridge (closed form, linear, refitted on every batch)",
    "in_loss_targets": (
      "pixels"
      if targets is y
      else f"top {targets.shape[1]} pixel principal components ({share:.1%} of the variance)"
    ),
    "start": {"utility_loss": float(curve[0, 0]), "privacy_r2": float(curve[0, 1])},
    "end": {"utility_loss": float(tail[0]), "privacy_r2": float(tail[1])},
    "held_out_ridge_r2": held,
  }
  params = {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32), "net": net}
  return params, info


transforms.register(
  "learned",
  param="lam",
  about="lam: weight of the in-loss ridge attacker's R^2 against the utility loss",
  check=check,
  train=train,
  defaults=DEFAULTS,
  check_settings=check_settings,
)(transform)
