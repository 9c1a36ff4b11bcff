"""Feature-level defenses: transformations of the feature vectors a model releases.

A defense is a pure, jittable function `defense(features, key, **params) -> features`
on a batch [B, D] (the output may have another width D'). Its strength is one of its
keyword parameters (`sigma`, `bits`, `k`); the others are fitted on the auxiliary
features by the defense's `fit` (a scale, a range, a principal basis), so the same
strength means the same thing whatever the model's units. Every parameter reaches the
function traced, so one compiled program serves every strength of a sweep.

`apply` runs a defense over a whole array, data-parallel, one row at a time: row i gets
the key `fold_in(key, i)`, so the result does not depend on the batch size or the number
of devices, and the same key always gives the same features. Each call probes, on a few
rows, that the defense is a function of each row and its key (`_check_pure`): one that
reads its batch (a batch mean), host randomness or state is refused in one line.

Built-ins register with `@register`; a user's defense is named by import path,
`"package.module:function"`, with its strength keyword given by `param` in its sweep
entry (see configs/defense_sweep.py).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from privjax.errors import ConfigError, ModelError
from privjax.registry import Registry
from privjax.runtime import parallel
from privjax.scoring.metrics import unit_rows

__all__ = [
  "PROBE_ROWS",
  "PURITY_TOLERANCE",
  "Defense",
  "apply",
  "check_strength",
  "fit",
  "gaussian_noise",
  "get",
  "none",
  "normalize_noise",
  "pca_truncate",
  "quantize",
  "register",
]


@dataclasses.dataclass(frozen=True)
class Defense:
  """A registered defense."""

  fn: Callable  # (features [B, D], key, **params) -> features [B, D']
  param: str  # the keyword the sweep's strengths go to
  fit: Callable | None  # (aux features [N, D] float64) -> {name: array}, or None
  check: Callable | None  # (strength, dim) -> an error message, or None when fine
  about: str  # what the strength means, for messages and the report
  # A defense that learns (privjax/defenses/learned.py): trained once per strength on the
  # defender's own split, `train(*, features, images, labels, strength, key, settings) ->
  # (params, info)`, never on the attacker's auxiliary set; None for a fitted one.
  train: Callable | None = None
  defaults: dict | None = None  # its further entry settings and their defaults
  check_settings: Callable | None = None  # (entry name, settings) -> raises ConfigError


DEFENSES = Registry("defense")


def register(
  name: str,
  *,
  param: str,
  about: str,
  fit=None,
  check=None,
  train=None,
  defaults=None,
  check_settings=None,
):
  """Decorator: registers `defense(features, key, **params)` under `name`, declaring the
  keyword its strengths go to (`param`), what a strength means (`about`), the fit of its
  other parameters on the auxiliary features and the check of a strength; or, for a
  defense that learns, its `train` on the defender's split, the `defaults` of its further
  entry settings and their check (`check_settings`; see `Defense`)."""
  if train is not None and fit is not None:
    raise ValueError(f"defense {name!r}: a defense is fitted or trained, not both")
  return DEFENSES.register(
    name,
    param=param,
    about=about,
    fit=fit,
    check=check,
    train=train,
    defaults=None if defaults is None else dict(defaults),
    check_settings=check_settings,
  )


def builtin_names() -> list[str]:
  return DEFENSES.names()


def get(kind: str, param: str = "strength", *, field: str = "defense") -> Defense:
  """The defense registered as `kind`, or the function at import path "module:name"
  (`param`: a user defense's strength keyword; `field`: the config field, for errors)."""
  found = DEFENSES.get(kind, field=field)
  if found.declared:  # a built-in, or a user's defense registered with its declarations
    return Defense(found.fn, **found.declared)
  return Defense(found.fn, param, None, None, f"{param} (user defense)")


def check_strength(name: str, defense: Defense, index: int, strength, dim: int | None) -> None:
  """Raises ConfigError for a strength the defense cannot take (dim: the feature width,
  None when not known yet)."""
  where = f"config.defense.sweep.{name}.strengths[{index}]"
  if not isinstance(strength, (int, float)) or isinstance(strength, bool):
    raise ConfigError(f"{where} must be a number ({defense.about}), got {strength!r}")
  problem = None if defense.check is None else defense.check(strength, dim)
  if problem:
    raise ConfigError(f"{where}={strength!r}: {problem}")


# --- the built-ins -------------------------------------------------------------------


def _std(f: np.ndarray) -> np.ndarray:
  """Per-dimension std of the auxiliary features; a constant dimension gets 1."""
  s = f.std(axis=0)
  return np.where(s > 0, s, 1.0).astype(np.float32)


def _nonnegative(strength, dim):
  del dim
  return None if strength >= 0 else "a noise scale must be >= 0"


@register("none", param="strength", about="ignored: the features unchanged")
def none(features, key, *, strength=0.0):
  """The features as released: the undefended reference point."""
  del key, strength
  return features


@register(
  "gaussian_noise",
  param="sigma",
  about="sigma: noise std in units of each dimension's std on the auxiliary set",
  fit=lambda f: {"scale": _std(f)},
  check=_nonnegative,
)
def gaussian_noise(features, key, *, sigma, scale):
  """Adds N(0, (sigma * scale)^2) noise, scale the per-dimension std of the auxiliary set."""
  return features + sigma * scale * jax.random.normal(key, features.shape, features.dtype)


def _bits(strength, dim):
  del dim
  if strength != int(strength) or not 1 <= strength <= 16:
    return "bits per dimension must be an integer in [1, 16]"
  return None


@register(
  "quantize",
  param="bits",
  about="bits per dimension over the auxiliary set's range",
  fit=lambda f: {"low": f.min(axis=0).astype(np.float32), "high": f.max(axis=0).astype(np.float32)},
  check=_bits,
)
def quantize(features, key, *, bits, low, high):
  """Rounds each dimension to 2^bits levels spanning its auxiliary range (clipped to it)."""
  del key
  levels = jnp.exp2(jnp.asarray(bits, features.dtype)) - 1
  span = jnp.maximum(high - low, 1e-12)
  q = jnp.round((jnp.clip(features, low, high) - low) / span * levels)
  return q / levels * span + low


def _pca_fit(f: np.ndarray) -> dict:
  mean = f.mean(axis=0)
  _, _, vt = np.linalg.svd(f - mean, full_matrices=True)  # rows: directions, by variance
  basis = np.zeros((f.shape[1], f.shape[1]))
  basis[:, : vt.shape[0]] = vt.T
  return {"mean": mean.astype(np.float32), "basis": basis.astype(np.float32)}


def _components(strength, dim):
  if strength != int(strength) or strength < 1:
    return "the number of principal directions kept must be an integer >= 1"
  if dim is not None and strength > dim:
    return f"cannot keep more principal directions than the {dim} feature dimensions"
  return None


@register(
  "pca_truncate",
  param="k",
  about="k: principal directions of the auxiliary features kept",
  fit=_pca_fit,
  check=_components,
)
def pca_truncate(features, key, *, k, mean, basis):
  """Projects onto the top-k principal directions of the auxiliary set (same width D)."""
  del key
  keep = (jnp.arange(basis.shape[1]) < k).astype(features.dtype)
  coords = (features - mean) @ basis
  return (coords * keep) @ basis.T + mean


def _unit_std(f: np.ndarray) -> dict:
  return {"scale": _std(f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12))}


@register(
  "normalize_noise",
  param="sigma",
  about="sigma: noise std after L2 normalisation, in units of each dimension's std there",
  fit=_unit_std,
  check=_nonnegative,
)
def normalize_noise(features, key, *, sigma, scale):
  """L2-normalises, then adds N(0, (sigma * scale)^2) noise (the face-embedding setting)."""
  return gaussian_noise(unit_rows(features), key, sigma=sigma, scale=scale)


# --- running one ---------------------------------------------------------------------


def fit(defense: Defense, aux_features: np.ndarray) -> dict:
  """The defense's fitted parameters on the (undefended) auxiliary features."""
  if defense.fit is None:
    return {}
  return dict(defense.fit(np.asarray(aux_features, np.float64)))


@functools.cache
def _rowwise(fn: Callable):
  """fn over a batch with a key per row: one jitted program per defense function."""

  def run(key_data, params, features, rows):
    key = jax.random.wrap_key_data(key_data)

    def one(f, i):
      return fn(f[None], jax.random.fold_in(key, i), **params)[0]

    return jax.vmap(one)(features, rows)

  return jax.jit(run)


@functools.cache
def _on_batch(fn: Callable):
  """fn on a whole batch with one key (`fold_in(key, row)`), as the contract states it: the
  purity probe's program, one per defense function."""

  def run(key_data, params, features, row):
    return fn(features, jax.random.fold_in(jax.random.wrap_key_data(key_data), row), **params)

  return jax.jit(run)


# The purity probe's tolerance, relative to the largest |output|: the model probe's
# (extraction.FLOAT32_TOLERANCE). A defense computes in float64; batch statistics,
# host randomness or state differ by far more.
PURITY_TOLERANCE = 1e-4
PROBE_ROWS = 8  # rows of the batch whose other rows the probe changes


def _check_pure(defense: Defense, features, out, key_data, params, *, name: str) -> None:
  """Stops with one line if the defense is not a pure function of each row and its key.

  Runs on a few rows (`PROBE_ROWS`), each check comparing like with like:
  - the same first rows, at the same places in a batch of the same shape with the same
    key, beside other rows: a row's output must not change (batch statistics such as a
    batch mean would; the sweep runs every row alone, so such a defense would silently
    compute something else there);
  - the first and last rows each alone, with the key the sweep gives them
    (`fold_in(key, i)`), in a program of their own: the sweep's output for them (host
    randomness or state drawn when a program is traced would differ).

  Args:
    features: [N, D] float64, what `out` [N, D'] float64 was computed from.
  """
  batch, n = _on_batch(defense.fn), features.shape[0]
  finite = np.abs(out[np.isfinite(out)])
  scale = max(float(finite.max()) if finite.size else 0.0, 1e-6)

  def refuse(what: str, got, want) -> None:
    got, want = np.asarray(got), np.asarray(want)
    both = ~np.isfinite(got) & ~np.isfinite(want)  # left to the non-finite check
    diff = float(np.nan_to_num(np.where(both, 0.0, np.abs(got - want)), nan=np.inf).max())
    if diff > PURITY_TOLERANCE * scale:
      raise ModelError(
        f"defense {name} is not a pure function of each feature vector and its key: {what} "
        f"gave outputs differing by {diff:.3g} (max |output| {scale:.3g}), above "
        f"{PURITY_TOLERANCE:g} of it; it must transform each row on its own (no statistic "
        "of the batch: compute them beforehand; no host randomness or state: draw noise "
        "from the key)"
      )

  m = min(PROBE_ROWS, n)
  if m >= 2:
    h = m // 2
    rows = features[:m]
    beside = np.concatenate([rows[:h], rows[: m - h][::-1]])  # the same first h rows
    a, b = (np.asarray(batch(key_data, params, x, 0))[:h] for x in (rows, beside))
    refuse(f"the same {h} rows beside other rows in a batch (same key)", a, b)
  for i in sorted({0, n - 1}):
    alone = np.asarray(batch(key_data, params, features[i : i + 1], i))[0]
    refuse(f"row {i} alone and in the sweep's batches (same key)", alone, out[i])


def _rows_of(out, features) -> bool:
  """Whether `out` is [N, D'] (D' >= 1) for `features` [N, D]: one vector per row."""
  return isinstance(out, np.ndarray) and out.ndim == 2 and out.shape[0] == np.shape(features)[0]


def apply(
  defense: Defense, features, key, params: dict, *, mesh, batch_size: int, name: str
) -> np.ndarray:
  """The defense over all rows of `features` [N, D] -> [N, D'] (a defense may change the
  width: the sweep then audits it with re-fitted attackers only); row i uses
  fold_in(key, i).

  Computed in float64 and returned as float32: XLA sums a row's products in an order
  that depends on the per-device batch shape, and in float32 those last-bit differences
  (amplified by every attacker's training) would make the sweep's numbers depend on the
  device count; in float64 they vanish in the rounding to float32, as in ridge's products.

  Raises:
    ModelError: the defense fails on these features, returns non-finite values, or is
      not a pure function of each row and its key (`_check_pure`).
  """
  wide = jax.tree.map(
    lambda v: np.asarray(v, np.float64) if np.asarray(v).dtype.kind == "f" else v, params
  )
  try:
    with jax.enable_x64(True):
      # The key travels as host data: a key array made on this process's device cannot be
      # placed on another process's devices.
      key_data = np.asarray(jax.random.key_data(key))
      replicated = parallel.replicate((key_data, wide), mesh)
      wide_features = np.asarray(features, np.float64)
      out = parallel.batched_map(
        functools.partial(_rowwise(defense.fn), *replicated),
        [wide_features, np.arange(features.shape[0], dtype=np.int32)],
        batch_size=batch_size,
        mesh=mesh,
      )
      if _rows_of(out, features):
        _check_pure(defense, wide_features, out, key_data, jax.device_put(wide), name=name)
  except ModelError:
    raise
  except (TypeError, ValueError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ModelError(
      f"defense {name} failed on [N, {np.shape(features)[1]}] features: {first}"
    ) from e
  if not _rows_of(out, features):
    raise ModelError(
      f"defense {name} must return one feature vector per row given, [{np.shape(features)[0]}, "
      f"D'] for [{np.shape(features)[0]}, {np.shape(features)[1]}], got "
      f"{list(getattr(out, 'shape', ())) or type(out).__name__}"
    )
  if not np.all(np.isfinite(out)):
    raise ModelError(f"defense {name} returned non-finite features")
  return out.astype(np.float32)
