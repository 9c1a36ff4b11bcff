"""`ridge`: random-features ridge regression, features -> pixels, in closed form.

Black-box: the adversary needs only auxiliary (features, image) pairs. The regressors
are the (standardised) features themselves and `num_features` random Fourier features
of them (an RBF kernel of bandwidth `bandwidth * sqrt(D)`, Rahimi & Recht 2007); the
regression has an intercept. The bandwidth and the ridge penalty are chosen on the
held-out auxiliary part from `bandwidths` x `penalties` (relative to the mean
eigenvalue of the Gram matrix), then refitted on the whole auxiliary set. The Gram
matrix and the cross products are sums over examples, sharded over the mesh.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from privjax import checks, parallel
from privjax.attacks.base import AuxSet, Context, Fitted, register

DEFAULTS = {
  "num_features": 1024,  # Random Fourier features beside the features themselves.
  "bandwidths": (0.5, 1.0, 2.0),  # RBF bandwidths to try, in units of sqrt(feature dim).
  "penalties": (1e-4, 1e-3, 1e-2, 1e-1, 1.0),  # Ridge penalties to try, x mean eigenvalue.
}


def check(name, cfg, names) -> None:
  del names
  checks.positive_int(f"attacks.{name}.num_features", cfg.num_features)
  checks.numbers(f"attacks.{name}.bandwidths", cfg.bandwidths, low=1e-6)
  checks.numbers(f"attacks.{name}.penalties", cfg.penalties, low=1e-12)


def random_features(x, w, b):
  """[N, D] -> [N, D + M]: the features (scaled by 1/sqrt(D)) beside sqrt(2/M) cos(x w + b)."""
  d, m = x.shape[1], w.shape[1]
  return jnp.concatenate([x / jnp.sqrt(d), jnp.sqrt(2.0 / m) * jnp.cos(x @ w + b)], axis=1)


# Jitted once at import, with the data as arguments (never constants of the program), so
# refitting on new data of the same shapes compiles nothing.
_featurize = jax.jit(random_features)


@functools.partial(jax.jit, static_argnames=("shape",))
def _predict(coef, offset, w, b, x, *, shape):
  """[B, D] standardised features -> [B, *shape] clipped reconstructions."""
  out = random_features(x, w, b) @ coef + offset
  return jnp.clip(out, 0.0, 1.0).reshape(x.shape[0], *shape)


def _centred_products(p, targets, *, mesh):
  """(mean of p, mean of targets, centred p^T p, centred p^T targets), summed over the mesh."""
  mu_p, mu_y = p.mean(0), targets.mean(0)
  pc, yc = p - mu_p, targets - mu_y
  gram = parallel.cross_products(pc, pc, mesh=mesh)
  cross = parallel.cross_products(pc, yc, mesh=mesh)
  return mu_p, mu_y, gram, cross


def _select(regressors: dict, y, aux: AuxSet, penalties, fit):
  """Every (bandwidth, penalty) fitted on aux.train and scored on aux.val: (trials, best
  (val MSE, bandwidth, penalty)); one eigendecomposition per bandwidth serves every penalty."""
  best = (np.inf, None, None)
  trials = []
  for bandwidth, p in regressors.items():
    mu_p, mu_y, gram, cross = fit(p[aux.train], y[aux.train])
    s, v = np.linalg.eigh(gram)
    s = np.maximum(s, 0.0)
    proj = v.T @ cross  # [F, P]
    pv = (p[aux.val] - mu_p) @ v  # [N_val, F]
    scale = max(float(s.mean()), 1e-12)
    for penalty in penalties:
      pred = (pv / (s + penalty * scale)) @ proj + mu_y
      mse = float(np.mean((np.clip(pred, 0, 1) - y[aux.val]) ** 2))
      trials.append({"bandwidth": float(bandwidth), "penalty": float(penalty), "val_mse": mse})
      if mse < best[0]:
        best = (mse, float(bandwidth), float(penalty))
  return trials, best


@register("ridge", defaults=DEFAULTS, check=check)
def attack(aux: AuxSet, ctx: Context, cfg: ml_collections.ConfigDict) -> Fitted:
  """Fits ridge regression on random features of aux.train, selects on aux.val, refits on all."""
  n, d = aux.features.shape
  shape = aux.image_shape
  y = aux.images.reshape(n, -1).astype(np.float64)
  rng = np.random.default_rng((ctx.seed, 13))
  w0 = rng.standard_normal((d, cfg.num_features)).astype(np.float32)
  b = rng.uniform(0, 2 * np.pi, cfg.num_features).astype(np.float32)

  def phi(x, bandwidth):
    w = jnp.asarray(w0 / (bandwidth * np.sqrt(d)))
    fn = functools.partial(_featurize, w=w, b=jnp.asarray(b))
    return parallel.batched_map(fn, [x], batch_size=ctx.eval_batch_size, mesh=ctx.mesh).astype(
      np.float64
    )

  def fit(p, targets):
    return _centred_products(p, targets, mesh=ctx.mesh)

  regressors = {bandwidth: phi(aux.features, bandwidth) for bandwidth in cfg.bandwidths}
  trials, (val_mse, bandwidth, penalty) = _select(regressors, y, aux, cfg.penalties, fit)
  logging.info("ridge: bandwidth %g, penalty %g (validation MSE %.5f)", bandwidth, penalty, val_mse)

  def solved(rows):
    """reconstruct() of the chosen ridge fitted on aux rows `rows`."""
    mu_p, mu_y, gram, cross = fit(regressors[bandwidth][rows], y[rows])
    lam = penalty * max(float(np.trace(gram)) / gram.shape[0], 1e-12)
    coef = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), cross)  # [F, P]
    w = jnp.asarray(w0 / (bandwidth * np.sqrt(d)))
    weights = parallel.replicate(
      (
        jnp.asarray(coef, jnp.float32),
        jnp.asarray(mu_y - mu_p @ coef, jnp.float32),
        w,
        jnp.asarray(b),
      ),
      ctx.mesh,
    )

    def reconstruct(features):
      return parallel.batched_map(
        functools.partial(_predict, *weights, shape=shape),
        [features],
        batch_size=ctx.eval_batch_size,
        mesh=ctx.mesh,
      )

    return reconstruct

  info = {
    "bandwidth": bandwidth,
    "penalty": penalty,
    "val_mse": val_mse,
    "regressors": int(d + cfg.num_features),
    "selection": trials,
  }
  # Refitted on the whole auxiliary set; aux.val's reconstructions come from the fit on
  # aux.train alone (fitted when first asked).
  return Fitted(solved(slice(None)), info, held_out=lambda features: solved(aux.train)(features))
