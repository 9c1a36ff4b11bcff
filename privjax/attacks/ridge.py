"""`ridge`: random-features ridge regression, features -> pixels, in closed form.

Black-box: the adversary needs only auxiliary (features, image) pairs. The regressors
are the (standardised) features themselves and `num_features` random Fourier features
of them (an RBF kernel of bandwidth `bandwidth * sqrt(D)`, Rahimi & Recht 2007); the
regression has an intercept. The bandwidth and the ridge penalty are chosen on the
held-out auxiliary part from `bandwidths` x `penalties` (relative to the mean
eigenvalue of the Gram matrix), then refitted on the whole auxiliary set. The Gram
matrix and the cross products are sums over examples, sharded over the mesh; when the
regressors outnumber the auxiliary images the same regression is solved in its dual
(kernel) form, whose cost grows with the images, not the feature width. A fit that would
not fit in the host's available memory is refused, with its size, before it starts.

The functional core: `fit(aux, *, key, settings) -> Params` and the pure
`reconstruct(params, features)`, which jits, vmaps and differentiates in both arguments.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from privjax import checks
from privjax.attacks.base import AuxSet, Context, Fitted, key_seed, read_settings, register
from privjax.errors import ModelError
from privjax.runtime import memory, parallel

__all__ = [
  "DEFAULTS",
  "Params",
  "attack",
  "check",
  "fit",
  "memory_needed",
  "random_features",
  "reconstruct",
]

DEFAULTS = {
  "num_features": 1024,  # Random Fourier features beside the features themselves.
  "bandwidths": (0.5, 1.0, 2.0),  # RBF bandwidths to try, in units of sqrt(feature dim).
  "penalties": (1e-4, 1e-3, 1e-2, 1e-1, 1.0),  # Ridge penalties to try, x mean eigenvalue.
}


def check(name, cfg, names) -> None:
  """Raises ConfigError for a setting ridge cannot take."""
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


@flax.struct.dataclass
class Params:
  """A fitted ridge: the regressors' random projection and the regression on them.

  A pytree of arrays; the image shape rides in its structure (static under jit and vmap).
  """

  coef: jax.Array  # [D + M, P] float32 coefficients (P = H * W * C pixels)
  offset: jax.Array  # [P] float32 intercept
  w: jax.Array  # [D, M] float32 random projection, over bandwidth * sqrt(D)
  b: jax.Array  # [M] float32 random phases in [0, 2 pi)
  image_shape: tuple[int, int, int] = flax.struct.field(pytree_node=False)


def reconstruct(params: Params, features: jax.Array) -> jax.Array:
  """Pure: standardised features [B, D] -> images [B, H, W, C] in [0, 1].

  The regression of `random_features(features)` on the pixels, clipped to [0, 1] (the
  gradient is zero at a clipped pixel). Jits, vmaps (over a batch axis, or over params
  fitted with two keys) and differentiates with respect to `params` and `features`.
  """
  out = random_features(features, params.w, params.b) @ params.coef + params.offset
  return jnp.clip(out, 0.0, 1.0).reshape(features.shape[0], *params.image_shape)


@dataclasses.dataclass(frozen=True)
class _Spectrum:
  """Ridge regression of centred targets on centred regressors P [n, F] through one
  eigendecomposition in the smaller space: the F x F Gram P^T P, or, when the regressors
  outnumber the examples, the n x n kernel P P^T (the dual form; the same solution, since
  (P^T P + l I)^-1 P^T = P^T (P P^T + l I)^-1). Every penalty reuses it."""

  mu_p: np.ndarray  # [F]
  mu_y: np.ndarray  # [P]
  s: np.ndarray  # [K] eigenvalues (K = min(n, F)), clipped at 0
  v: np.ndarray  # [K, K] eigenvectors
  proj: np.ndarray  # [K, P] eigenvectors^T (P^T Y or Y)
  pc: np.ndarray | None  # [n, F] centred regressors in the dual form, else None
  scale: float  # the mean eigenvalue of the Gram matrix, trace / F (penalties' unit)

  def coordinates(self, p):
    """New rows [m, F] in the eigenbasis: [m, K]."""
    centred = p - self.mu_p
    return (centred if self.pc is None else centred @ self.pc.T) @ self.v

  def predict(self, coords, penalty):
    return (coords / (self.s + penalty * self.scale)) @ self.proj + self.mu_y

  def coef(self, penalty):
    """[F, P] coefficients of the centred regression."""
    inner = (self.v / (self.s + penalty * self.scale)) @ self.proj
    return inner if self.pc is None else self.pc.T @ inner


def memory_needed(n: int, f: int, pixels: int) -> int:
  """Bytes the ridge fit holds at once: the eigendecomposition (two K x K, K = min(n, F)),
  the regressors and, for the fit, its F x P coefficients, in float64."""
  k = min(n, f)
  return 8 * (2 * k * k + n * f + f * pixels + n * pixels)


def _spectrum(p, y, *, mesh) -> _Spectrum:
  mu_p, mu_y = p.mean(0), y.mean(0)
  pc, yc = p - mu_p, y - mu_y
  dual = p.shape[1] > p.shape[0]
  if dual:  # sums over the regressors, sharded over the mesh
    gram, cross = parallel.cross_products(pc.T, pc.T, mesh=mesh), yc
  else:  # sums over the examples, sharded over the mesh
    gram, cross = (parallel.cross_products(pc, m, mesh=mesh) for m in (pc, yc))
  s, v = np.linalg.eigh(gram)
  s = np.maximum(s, 0.0)
  scale = max(float(s.sum()) / p.shape[1], 1e-12)
  return _Spectrum(mu_p, mu_y, s, v, v.T @ cross, pc if dual else None, scale)


def _select(regressors: dict, y, aux: AuxSet, penalties, mesh):
  """Every (bandwidth, penalty) fitted on aux.train and scored on aux.val: (trials, best
  (val MSE, bandwidth, penalty)); one eigendecomposition per bandwidth serves every penalty."""
  best = (np.inf, None, None)
  trials = []
  for bandwidth, p in regressors.items():
    spectrum = _spectrum(p[aux.train], y[aux.train], mesh=mesh)
    coords = spectrum.coordinates(p[aux.val])
    for penalty in penalties:
      pred = spectrum.predict(coords, penalty)
      mse = float(np.mean((np.clip(pred, 0, 1) - y[aux.val]) ** 2))
      trials.append({"bandwidth": float(bandwidth), "penalty": float(penalty), "val_mse": mse})
      if mse < best[0]:
        best = (mse, float(bandwidth), float(penalty))
  return trials, best


def _check_memory(n: int, d: int, num_features: int, pixels: int) -> None:
  """Refuses, with its size, a fit that would not fit in the host's available memory."""
  memory.check(
    memory_needed(n, d + num_features, pixels),
    f"ridge for {n} auxiliary images and {d + num_features} regressors ({d} features + "
    f"attacks.ridge.num_features) at {pixels} pixels",
    "lower attacks.ridge.num_features or switch the attacker off",
    ModelError,
  )


class _Fit(NamedTuple):
  params: Params  # refitted on the whole auxiliary set
  held_out: Callable[[], Params]  # the same choice fitted on aux.train alone
  info: dict  # JSON-ready: what it chose (bandwidth, penalty) and every trial


def _fit(aux: AuxSet, *, key, settings: Mapping, mesh, eval_batch_size: int) -> _Fit:
  """Fits ridge regression on random features of aux.train, selects on aux.val, refits on
  all (`fit`); aux.train's fit is solved when `held_out()` is first called."""
  cfg = read_settings(settings, DEFAULTS, name="ridge")
  n, d = aux.features.shape
  shape = aux.image_shape
  y = aux.images.reshape(n, -1).astype(np.float64)
  rng = np.random.default_rng((key_seed(key), 13))
  w0 = rng.standard_normal((d, cfg["num_features"])).astype(np.float32)
  b = rng.uniform(0, 2 * np.pi, cfg["num_features"]).astype(np.float32)

  def phi(x, bandwidth):
    w = jnp.asarray(w0 / (bandwidth * np.sqrt(d)))
    fn = functools.partial(_featurize, w=w, b=jnp.asarray(b))
    return parallel.batched_map(fn, [x], batch_size=eval_batch_size, mesh=mesh).astype(np.float64)

  _check_memory(n, d, cfg["num_features"], y.shape[1])
  regressors = {bandwidth: phi(aux.features, bandwidth) for bandwidth in cfg["bandwidths"]}
  trials, (val_mse, bandwidth, penalty) = _select(regressors, y, aux, cfg["penalties"], mesh)
  logging.info("ridge: bandwidth %g, penalty %g (validation MSE %.5f)", bandwidth, penalty, val_mse)

  def solved(rows) -> Params:
    """The chosen ridge fitted on aux rows `rows`."""
    spectrum = _spectrum(regressors[bandwidth][rows], y[rows], mesh=mesh)
    coef, mu_p, mu_y = spectrum.coef(penalty), spectrum.mu_p, spectrum.mu_y  # coef [F, P]
    return Params(
      coef=jnp.asarray(coef, jnp.float32),
      offset=jnp.asarray(mu_y - mu_p @ coef, jnp.float32),
      w=jnp.asarray(w0 / (bandwidth * np.sqrt(d))),
      b=jnp.asarray(b),
      image_shape=shape,
    )

  info = {
    "bandwidth": bandwidth,
    "penalty": penalty,
    "val_mse": val_mse,
    "regressors": int(d + cfg["num_features"]),
    "selection": trials,
  }
  return _Fit(solved(slice(None)), lambda: solved(aux.train), info)


def fit(
  aux: AuxSet,
  *,
  key,
  settings: Mapping | None = None,
  mesh=None,
  eval_batch_size: int = 256,
) -> Params:
  """Fits the ridge attacker; returns its params (for `reconstruct`).

  Args:
    aux: the auxiliary set: features [N, D] standardised, images [N, H, W, C] in [0, 1],
      and its split (bandwidth and penalty chosen on aux.val, then refitted on all).
    key: a `jax.random` key; the random features are drawn with numpy from
      `key_seed(key)` (the audit passes `jax.random.key(config.seed)`).
    settings: DEFAULTS' keys (missing ones take their defaults).
    mesh: the data mesh the sums are sharded over (None: every device).
    eval_batch_size: the batch the random features are computed in.

  Returns:
    `Params`: coef [D + M, P], offset [P], w [D, M], b [M] (M = num_features).
  """
  mesh = parallel.data_mesh() if mesh is None else mesh
  return _fit(aux, key=key, settings=settings, mesh=mesh, eval_batch_size=eval_batch_size).params


@register("ridge", defaults=DEFAULTS, check=check, default_on=True)
def attack(aux: AuxSet, ctx: Context, cfg: ml_collections.ConfigDict) -> Fitted:
  """The audit's ridge: `fit` with `jax.random.key(ctx.seed)`; `reconstruct` batched over
  the mesh. aux.val's held-out reconstructions come from the fit on aux.train alone
  (solved when first asked)."""
  out = _fit(
    aux,
    key=jax.random.key(ctx.seed),
    settings=cfg,
    mesh=ctx.mesh,
    eval_batch_size=ctx.eval_batch_size,
  )
  return Fitted.of(
    reconstruct,
    out.params,
    mesh=ctx.mesh,
    batch_size=ctx.eval_batch_size,
    held_out_params=out.held_out,
    info=out.info,
  )
