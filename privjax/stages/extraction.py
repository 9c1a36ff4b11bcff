"""Feature extraction: a model made ready to embed (jitted, probed for purity, keyed),
its features of a set of images (batched over the mesh, checked, cached in the workdir),
and the checks on stored features.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np
from absl import logging

from privjax.errors import DataError, ModelError, PrivjaxError
from privjax.runtime import cache, parallel
from privjax.runtime import workdir as workdir_lib

__all__ = [
  "FLOAT32_TOLERANCE",
  "Embedder",
  "as_arrays",
  "check_deterministic",
  "check_features",
  "compute_precision",
  "extract_features",
  "feature_width",
  "guarded",
  "model_key",
  "prepare",
]


def extract_features(
  embed_jit, params, images, *, mesh, batch_size: int, name: str, who: str = "embed_fn"
):
  """Embeds [N, H, W, C] images with a jitted `embed_fn(params, images)`; returns [N, D].

  `who` names the function in errors ("embed_fn", "the evaluator's embed_fn").
  """
  out = parallel.batched_map(
    functools.partial(embed_jit, params), [images], batch_size=batch_size, mesh=mesh
  )
  if not isinstance(out, np.ndarray) or out.ndim != 2:
    shape = getattr(out, "shape", type(out).__name__)
    raise ModelError(f"{who} must return features of rank 2 [N, D], got {shape} for {name}")
  if out.dtype.kind not in _REAL_KINDS:
    raise ModelError(f"{who} must return real features [N, D], got dtype {out.dtype} for {name}")
  if not np.all(np.isfinite(out)):
    bad = int(np.sum(~np.all(np.isfinite(out), axis=1)))
    raise ModelError(f"{who} returned non-finite features for {bad} of {len(out)} {name}")
  return out.astype(np.float32)


# The dtype kinds features may come in: float, signed and unsigned int, bool. Complex,
# object, string, datetime and void features are refused, never cast.
_REAL_KINDS = "fiub"


def check_features(features, n: int, *, name: str) -> np.ndarray:
  """Stored features [n, D] of real numbers, finite; or a one-line DataError.

  float32 and narrower floats come back as float32; float64 and integers as float64, so a
  large offset (1e8 on features spanning 2) keeps the signal until standardisation centres
  it (a float32 cast would round it away).
  """
  try:
    f = np.asarray(features)
  except (TypeError, ValueError) as e:
    raise DataError(f"{name} must be a numeric array [N, D], got {type(features).__name__}") from e
  if f.dtype.kind not in _REAL_KINDS:  # a cast would drop a complex part or guess at objects
    raise DataError(
      f"{name} must be real numbers (float, int or bool) [N, D], got dtype {f.dtype}"
      + (
        ": convert them yourself, e.g. stack real and imaginary parts"
        if f.dtype.kind == "c"
        else ""
      )
    )
  wide = f.dtype.kind in "iu" or (f.dtype.kind == "f" and f.dtype.itemsize > 4)
  f = f.astype(np.float64 if wide else np.float32)
  if f.ndim != 2 or f.shape[0] != n:
    raise DataError(f"{name} must have shape [{n}, D] (one row per image), got {f.shape}")
  if not np.all(np.isfinite(f)):
    raise DataError(f"{name} contains non-finite values (NaN or inf)")
  return f


def guarded(fn, image_shape, who: str = "embed_fn"):
  """`fn`, with the model's own rejection of the input shape made a one-line ModelError."""

  def call(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except PrivjaxError:
      raise  # already a one-line error of ours (rank, finiteness): keep its message
    except (TypeError, ValueError) as e:
      # The one-line error says what went wrong; the log at --verbosity=1 keeps where (a
      # bug inside embed_fn), without a traceback on every user's screen.
      logging.vlog(1, "%s raised:", who, exc_info=True)
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise ModelError(
        f"{who} rejected images of shape [N, {', '.join(map(str, image_shape))}]: {first} "
        "(--verbosity=1 logs its traceback)"
      ) from e

  return call


def feature_width(embed_fn, params, image_shape) -> int | None:
  """The width D of `embed_fn`'s features, from its shapes alone (nothing is computed);
  None when it does not return a rank-2 array (extraction then says so)."""
  sample = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  out = guarded(jax.eval_shape, image_shape)(embed_fn, params, sample)
  return int(out.shape[-1]) if getattr(out, "ndim", 0) == 2 else None


def as_arrays(params):
  """`params` with every leaf an array: NumPy-compatible leaves converted, others refused."""

  def leaf(path, x):
    if isinstance(x, jax.Array):
      return x
    try:
      a = np.asarray(x)
    except Exception as e:  # an object NumPy cannot convert
      raise ModelError(
        f"params{jax.tree_util.keystr(path)} is a {type(x).__name__}, not an array"
      ) from e
    if a.dtype.kind not in "biuf":
      raise ModelError(
        f"params{jax.tree_util.keystr(path)} must be a numeric array, got "
        f"{type(x).__name__} ({a.dtype})"
      )
    return a

  return jax.tree_util.tree_map_with_path(leaf, params)


def model_key(embed_jit, params, image_shape, batch_size: int) -> str:
  """A hash of the model's lowered program and its params: any change to either changes it."""
  sample = jax.ShapeDtypeStruct((batch_size, *image_shape), jnp.float32)
  program = embed_jit.lower(params, sample).as_text()
  return workdir_lib.array_hash(np.frombuffer(program.encode(), np.uint8), params)


# The purity probe's tolerance, relative to the largest |feature|: float32's, and for a
# model computing in a narrower float, that float's epsilon (bfloat16: 2^-7 = 0.0078):
# reductions whose order follows the batch shape (GPUs, TPUs) differ at that precision,
# while state, randomness or batch statistics differ by far more.
FLOAT32_TOLERANCE = 1e-4


def compute_precision(embed_fn, params, image_shape) -> tuple[str, float]:
  """(the narrowest float dtype in `embed_fn`'s computation, the probe's tolerance for it)."""
  sample = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  jaxpr = jax.make_jaxpr(embed_fn)(params, sample)
  narrowest = np.dtype(np.float32)

  def visit(jx):
    nonlocal narrowest
    for eqn in jx.eqns:
      for v in eqn.outvars:
        dt = getattr(v.aval, "dtype", None)
        if dt is not None and jnp.issubdtype(dt, jnp.floating):
          if jnp.finfo(dt).eps > jnp.finfo(narrowest).eps:
            narrowest = np.dtype(dt)
      for sub in jax_core.jaxprs_in_params(eqn.params):
        visit(sub)

  visit(jaxpr.jaxpr)
  eps = float(jnp.finfo(narrowest).eps)
  return narrowest.name, max(FLOAT32_TOLERANCE, eps if narrowest.itemsize < 4 else 0.0)


def check_deterministic(
  embed_jit, params, images, *, mesh, batch_size: int, who: str = "embed_fn", tolerance=0.0
) -> None:
  """Stops with one line if `embed_fn` is not a pure function of (params, images).

  Embeds the first images in a batch of the extraction's size twice, once reversed,
  and once in a small batch (another trace), and compares: an impure embed_fn (state,
  randomness, different features on each trace, batch-dependent outputs) would make
  every later number meaningless. Features may differ by `tolerance` of the largest
  |feature| (0: by the model's compute precision, `compute_precision`).
  """
  k, m = min(len(images), 2 * mesh.size), min(len(images), batch_size)
  if tolerance:
    precision, limit, why = "", float(tolerance), "config.purity_tolerance"
  else:
    precision, limit = compute_precision(embed_jit, params, images.shape[1:])
    why = f"the tolerance of a model computing in {precision}"

  def embed(x, b):
    return extract_features(
      embed_jit, params, x, mesh=mesh, batch_size=b, name="probe images", who=who
    )

  full = embed(images[:m], batch_size)
  checks = (
    (embed(images[:m], batch_size), full, "embedded twice"),
    (embed(images[:m][::-1], batch_size)[::-1], full, "embedded in reverse order"),
    (embed(images[:k], k), full[:k], "embedded in a batch of another size"),
  )
  scale = max(float(np.abs(full).max()), 1e-6)
  for got, want, how in checks:
    diff = float(np.abs(got - want).max())
    if diff > limit * scale:
      raise ModelError(
        f"{who} is not deterministic: the same images {how} gave features differing by "
        f"{diff:.3g} (max |feature| {scale:.3g}), above {limit:.3g} of it ({why}); it must be "
        "a pure function of (params, images) (if the differences are your hardware's "
        "summation order, raise --config.purity_tolerance)"
      )


@dataclasses.dataclass(frozen=True)
class Embedder:
  """A model ready to embed: `embed_fn` jitted, params replicated over the mesh, keyed."""

  embed_fn: Callable  # the caller's pure embed_fn(params, images) -> [N, D]
  embed_jit: Callable  # jax.jit(embed_fn)
  params: Any  # replicated over `mesh`
  key: str  # a hash of the lowered program and the params (caches, checkpoints)
  image_shape: tuple
  mesh: jax.sharding.Mesh
  batch_size: int
  cache_dir: str | None  # where features are cached (checksummed), or None
  who: str  # names the function in errors

  def fingerprint(self) -> str:
    """What the model's outputs depend on (privjax/runtime/keys.py): its program and params."""
    return self.key

  def embed(self, images, name: str) -> np.ndarray:
    """[N, D] features of `images`, uncached (reconstructions, say)."""
    return guarded(extract_features, self.image_shape, self.who)(
      self.embed_jit,
      self.params,
      images,
      mesh=self.mesh,
      batch_size=self.batch_size,
      name=name,
      who=self.who,
    )

  def features(self, images, name: str) -> np.ndarray:
    """`embed`, cached in the workdir under a key of the model and the images."""
    if self.cache_dir is None:
      return self.embed(images, name)
    key = workdir_lib.array_hash(np.frombuffer(self.key.encode(), np.uint8), images)
    path = os.path.join(self.cache_dir, f"{name}-{key[:32]}.npz")
    arrays, _, _ = cache.cached(
      path, lambda: ({"features": self.embed(images, name)}, None), what=f"features of {name}"
    )
    return arrays["features"]


def prepare(
  embed_fn,
  params,
  probe,
  image_shape,
  *,
  batch_size,
  mesh,
  workdir,
  who="embed_fn",
  purity_tolerance=0.0,
) -> Embedder:
  """`embed_fn` made ready to embed: jitted, params replicated, keyed, and probed for
  determinism on the `probe` images (a one-line ModelError if it is not pure)."""
  image_shape = tuple(image_shape)
  embed_jit = jax.jit(embed_fn)
  params = parallel.replicate(as_arrays(params), mesh)
  key = guarded(model_key, image_shape, who)(embed_jit, params, image_shape, batch_size)
  guarded(check_deterministic, image_shape, who)(
    embed_jit,
    params,
    probe,
    mesh=mesh,
    batch_size=batch_size,
    who=who,
    tolerance=purity_tolerance,
  )
  cache_dir = os.path.join(workdir, "cache") if workdir else None
  return Embedder(embed_fn, embed_jit, params, key, image_shape, mesh, batch_size, cache_dir, who)
