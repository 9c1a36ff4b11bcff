"""The attack contract: what an attacker is given, what it returns, and the registry.

An attacker is two pure functions in the spirit of optax's `init`/`update` pair:

- `fit(aux, *, key, settings, ...) -> params`: fits on the auxiliary set (`AuxSet`) and
  returns its params, a pytree of arrays (static pieces, such as the image shape or the
  decoder's architecture, ride in the pytree's structure, never in a closure);
- `reconstruct(params, features) -> images`: standardised features [B, D] to images
  [B, H, W, C] in [0, 1], a pure jnp function that jits, vmaps and differentiates.

`key` is a `jax.random` key; the audit passes `jax.random.key(config.seed)`. An attacker
that draws with numpy derives its int seed from the key with `key_seed` (`s` exactly for
`jax.random.key(s)`), so its numbers are those it drew from the int seed before.

What the audit calls is the registered adapter `attack(aux, ctx, cfg) -> Fitted`:

- `aux` (`AuxSet`) is everything the adversary holds: the auxiliary images and their
  features, standardised per dimension on the auxiliary set (zero mean, unit
  variance), and a fixed split of it into a part to fit on (`train`) and a part held
  out for the attacker's own model selection (`val`). The targets are never given to
  `attack`: only their features, later, to `Fitted.reconstruct`.
- `ctx` (`Context`) holds what the run provides: the device mesh, the seed, the batch
  size for evaluation, the SSIM window, a directory of the attacker's own for
  checkpoints, the audited model when it is differentiable JAX, and the other
  attackers (fitted on demand).
- `cfg` is the attacker's own sub-config (`config.attacks.<name>`).

A built-in returns `Fitted.of(apply, params, ...)`: its pure `apply` and `params`, and its
host `reconstruct(features)` (numpy [N, D] -> numpy [N, H, W, C]) is
`parallel.batched_map(functools.partial(jax.jit(apply), params), ...)`, sharded over the
mesh in batches (`batched`). A user's attacker may return either that or the older
`Fitted(reconstruct=host_fn, ...)`; one that returns `Fitted(apply=..., params=...)` alone
is batched by the runner. An attacker that cannot run on this audit (the whitebox
attacker on stored features, say) raises `Skipped` with the reason; the report states it.

Attackers are found by name: the built-ins register with `@register("name")`; a user's
attacker is named by import path, `"package.module:function"`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from privjax.errors import ConfigError, ModelError
from privjax.registry import Registry
from privjax.runtime import parallel
from privjax.scoring.standardizer import Standardizer  # noqa: F401 (the attackers' input)

__all__ = [
  "ATTACKS",
  "OFF",
  "AuxSet",
  "Capabilities",
  "Context",
  "Fitted",
  "MIN_TRAIN_EXAMPLES",
  "MIN_VAL_EXAMPLES",
  "Model",
  "Skipped",
  "batched",
  "builtin_names",
  "capabilities",
  "check",
  "data_warnings",
  "default_on",
  "get",
  "key_seed",
  "own_config",
  "read_settings",
  "register",
  "with_defaults",
]

OFF = "off"  # `config.attacks.<name>.type = "off"` skips a configured attacker


@dataclasses.dataclass(frozen=True)
class Capabilities:
  """What an attacker type needs and can do, declared when it registers; the audit asks
  these, never an attacker's name. A user's attacker (an import path) has the defaults."""

  checkpoints: bool = False  # trains a model: given ctx.checkpoint_dir of its own
  needs_model: bool = False  # differentiates through the audited model (ctx.model)
  models_defense: bool = True  # can attack defended features (joins a defense sweep)


class Skipped(Exception):  # noqa: N818 (a reason to skip, not an error)
  """Raised by an attacker that does not apply to this audit; the message says why."""


@dataclasses.dataclass(frozen=True)
class AuxSet:
  """The adversary's auxiliary data."""

  features: np.ndarray  # [N_aux, D] float32, standardised on the auxiliary set
  images: np.ndarray  # [N_aux, H, W, C] float32 in [0, 1]
  train: np.ndarray  # [N_train] int indices to fit on
  val: np.ndarray  # [N_val] int indices held out for model selection

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(int(s) for s in self.images.shape[1:])


@dataclasses.dataclass(frozen=True)
class Model:
  """The audited model as JAX: `embed(params, images) -> standardised features`."""

  embed: Callable  # (params, [B, H, W, C] in [0, 1]) -> [B, D] standardised features
  params: Any  # replicated over the mesh
  key: str  # a hash of the model's program and params (for caches)

  def fingerprint(self) -> str:
    """What the model's outputs depend on (privjax/runtime/keys.py)."""
    return self.key


@dataclasses.dataclass(frozen=True)
class Context:
  """What the run provides to every attacker."""

  mesh: jax.sharding.Mesh
  seed: int
  eval_batch_size: int
  filter_size: int  # the audit's SSIM window
  filter_sigma: float
  checkpoint_dir: str | None  # this attacker's own directory in the workdir, or None
  model: Model | None  # None when the audit runs on stored features
  fitted: Callable[[str], Fitted]  # another configured attacker by name, fitted once
  running: tuple[str, ...] = ()  # the configured attackers' names ((): not stated)


# Fewer auxiliary images than this to fit on, or to select on, and an attacker's
# numbers are flagged as data-starved: they may understate what a better-supplied
# attacker recovers.
MIN_TRAIN_EXAMPLES = 200
MIN_VAL_EXAMPLES = 20


def data_warnings(aux: AuxSet) -> list[str]:
  """Why any attacker fitted on `aux` may understate the leakage (empty when none)."""
  out = []
  if len(aux.train) < MIN_TRAIN_EXAMPLES:
    out.append(
      f"data-starved: fitted on {len(aux.train)} of the {len(aux.train) + len(aux.val)} "
      f"auxiliary images ({len(aux.val)} held out for model selection; < "
      f"{MIN_TRAIN_EXAMPLES} to fit on): an attacker with more similar images may recover more"
    )
  if len(aux.val) < MIN_VAL_EXAMPLES:
    out.append(
      f"model selection on only {len(aux.val)} held-out auxiliary images "
      f"(< {MIN_VAL_EXAMPLES}): its choices (early stopping, penalties, prior weights) are noisy"
    )
  return out


def key_seed(key) -> int:
  """The int seed of a `jax.random` key: `s` exactly for `jax.random.key(s)` (0 <= s <
  2**32, the default threefry keys), so an attacker that draws with numpy from the key
  draws the stream it drew from the int seed `s`.

  The key's uint32 words are folded in order, h = (h * 0x9E3779B1 + word) mod 2**32: a
  threefry key's data is [hi, lo], and `jax.random.key(s)`'s is [0, s]. Any other key (a
  split, a fold_in) maps to a 32-bit int of its data. A raw uint32 key
  (`jax.random.PRNGKey`) is read the same way.

  Args:
    key: a typed `jax.random` key (shape []) or a raw uint32 key.

  Returns:
    An int in [0, 2**32).
  """
  if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  words = np.asarray(key, np.uint32).ravel()
  seed = 0
  for word in words:
    seed = (seed * 0x9E3779B1 + int(word)) % 2**32
  return seed


def read_settings(settings: Mapping | None, defaults: Mapping, *, name: str) -> dict:
  """An attacker's settings: `defaults` updated with `settings` (a dict or ConfigDict; its
  registry "type", if any, dropped); an unknown key is a ConfigError naming it."""
  given = settings.to_dict() if isinstance(settings, ml_collections.ConfigDict) else settings
  given = {k: v for k, v in dict(given or {}).items() if k != "type"}
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ConfigError(f"{name}: unknown setting {unknown[0]!r}; known: {sorted(defaults)}")
  return {**defaults, **given}


@functools.lru_cache(maxsize=64)
def _jitted(apply: Callable) -> Callable:
  """`jax.jit(apply)`, one per function: re-running an attacker compiles nothing new."""
  return jax.jit(apply)


def batched(apply: Callable, params, *, mesh, batch_size: int) -> Callable:
  """The host function `features -> images` of a pure `apply(params, features)`.

  Args:
    apply: a pure `(params, [B, D]) -> [B, H, W, C]`; jitted here (once per function).
    params: its params, placed on every device of `mesh`.
    mesh: the data mesh the features are sharded over.
    batch_size: the largest global batch (`parallel.batched_map`).

  Returns:
    `reconstruct(features)`: host [N, D] -> host numpy [N, H, W, C], computed in padded
    batches sharded over `mesh` (`parallel.batched_map`), each row exactly once.
  """
  fn = functools.partial(_jitted(apply), parallel.replicate(params, mesh))

  def reconstruct(features):
    return parallel.batched_map(fn, [features], batch_size=batch_size, mesh=mesh)

  return reconstruct


@dataclasses.dataclass(frozen=True)
class Fitted:
  """A fitted attacker: its host `reconstruct`, and (a built-in's) its pure `apply` and
  `params`, from which `reconstruct` is built (`Fitted.of`)."""

  # Host [N, D] standardised numpy -> [N, H, W, C]; None: `apply(params, .)` batched over
  # the mesh by whoever runs it (`with_host`).
  reconstruct: Callable[[np.ndarray], np.ndarray] | None = None
  info: dict = dataclasses.field(default_factory=dict)  # JSON-ready: what it chose, how it fit
  warnings: tuple[str, ...] = ()  # why its numbers may understate the leakage
  # Reconstructs aux.val's features as an attacker that never fitted aux.val would (an
  # attacker that refits on the whole auxiliary set gives one); None: `reconstruct` already
  # is. Another attacker choosing its own settings on aux.val from these starts (whitebox)
  # would otherwise judge in-sample reconstructions.
  held_out: Callable[[np.ndarray], np.ndarray] | None = None
  # The functional core: `apply(params, features [B, D]) -> [B, H, W, C]`, pure jnp.
  params: Any = None  # a pytree of arrays
  apply: Callable | None = None
  # `() -> params` fitted without aux.val (what `held_out` applies; computed when first
  # asked and kept); None: `params` already are.
  held_out_params: Callable[[], Any] | None = None

  @classmethod
  def of(
    cls,
    apply: Callable,
    params,
    *,
    mesh,
    batch_size: int,
    held_out_params: Callable[[], Any] | None = None,
    info: dict | None = None,
    warnings: tuple[str, ...] = (),
  ) -> Fitted:
    """A fitted attacker from its pure `apply` and `params`: `reconstruct` (and `held_out`,
    from `held_out_params()`) are `apply` batched over `mesh` (`batched`)."""
    fitted = cls(
      info={} if info is None else info,
      warnings=tuple(warnings),
      params=params,
      apply=apply,
      held_out_params=held_out_params,
    )
    return fitted.with_host(mesh=mesh, batch_size=batch_size)

  def with_host(self, *, mesh, batch_size: int) -> Fitted:
    """This attacker with its host `reconstruct` (and `held_out`) built from `apply` and
    `params` where it has none (`batched`); itself when it has."""
    if self.reconstruct is not None or self.apply is None:
      return self
    held_out, held_out_params = self.held_out, self.held_out_params
    if held_out_params is not None:
      held_out_params = functools.cache(held_out_params)  # fitted once, when first asked
    if held_out is None and held_out_params is not None:
      host = functools.cache(
        lambda: batched(self.apply, held_out_params(), mesh=mesh, batch_size=batch_size)
      )

      def held_out(features):
        return host()(features)

    return dataclasses.replace(
      self,
      reconstruct=batched(self.apply, self.params, mesh=mesh, batch_size=batch_size),
      held_out=held_out,
      held_out_params=held_out_params,
    )

  def reconstruct_held_out(
    self, features: np.ndarray, *, name: str = "an attacker", image_shape=None
  ) -> np.ndarray:
    """The held-out reconstructions of `features`, refused in one line (ModelError) unless
    they are one finite float image (of `image_shape`, when given) per row: another
    attacker chooses its start and settings on them, where a NaN or a 0-255 image would
    decide that choice silently."""
    out = np.asarray((self.held_out or self.reconstruct)(features))
    shape = (len(features), *image_shape) if image_shape is not None else None
    fits = out.ndim == 4 and out.shape[0] == len(features) and (shape is None or out.shape == shape)
    if not fits or out.dtype.kind != "f" or not np.all(np.isfinite(out)):
      expected = list(shape) if shape else f"[{len(features)}, H, W, C]"
      raise ModelError(
        f"{name}: its held-out reconstructions must be finite float images {expected} in "
        f"[0, 1], got {out.dtype} {list(out.shape)}"
        + (" with non-finite values" if fits and out.dtype.kind == "f" else "")
      )
    return out


ATTACKS = Registry("attack")  # every attacker type: the built-ins and registered user ones
_DEFAULT_ON: list[str] = []  # the attackers registered default_on, in registration order


def register(
  name: str,
  *,
  defaults: dict | None = None,
  check: Callable | None = None,
  default_on: bool = False,
  **capabilities,
):
  """Decorator: registers `attack(aux, ctx, cfg) -> Fitted` under `name`.

  `defaults` are its settings' default values (a config entry of this type gets them
  for the fields it leaves out); `check(name, cfg, names)` raises ConfigError for a bad
  value; `default_on=True` makes it one of the default config's attackers (in registration
  order: privjax/attacks/__init__.py imports the built-ins in that order); `capabilities`
  are `Capabilities`' fields: `checkpoints=True` gives it `ctx.checkpoint_dir` (claimed
  with a fingerprint of its settings and data, so a changed config never resumes a stale
  run), `needs_model=True` says it needs the audited model's gradients,
  `models_defense=False` keeps it out of defense sweeps.
  """
  if default_on and name not in _DEFAULT_ON:
    _DEFAULT_ON.append(name)
  return ATTACKS.register(
    name,
    defaults=dict(defaults or {}),
    check=check,
    capabilities=Capabilities(**capabilities),
  )


def with_defaults(name: str, entry: dict) -> dict:
  """A config entry `config.attacks.<name>` completed with its type's defaults."""
  if not isinstance(entry, dict):
    raise ConfigError(f"config.attacks.{name} must be a group of settings, got {entry!r}")
  kind = entry.get("type", name)
  if not isinstance(kind, str) or not kind:
    raise ConfigError(f"config.attacks.{name}.type must be a non-empty string, got {kind!r}")
  if kind not in ATTACKS:  # "off", or a user's attacker: its settings are its own
    return {"type": kind, **{k: v for k, v in entry.items() if k != "type"}}
  defaults = ATTACKS.get(kind, field="").declared["defaults"]
  unknown = sorted(set(entry) - set(defaults) - {"type"})
  if unknown:
    raise ConfigError(
      f"unknown config key 'attacks.{name}.{unknown[0]}'; known keys: {sorted(defaults)}"
    )
  return {"type": kind, **defaults, **{k: v for k, v in entry.items() if k != "type"}}


def check(name: str, cfg: ml_collections.ConfigDict, names: list[str]) -> None:
  """Raises ConfigError if `config.attacks.<name>` is bad (its type's own checks)."""
  if cfg.type == OFF:
    return
  # An unknown type or a broken import path fails here, before any work.
  own = ATTACKS.get(cfg.type, field=f"attacks.{name}.type").declared.get("check")
  if own is not None:
    own(name, cfg, names)


def capabilities(kind: str) -> Capabilities:
  """What attacker type `kind` declared at registration (defaults for a user's)."""
  return ATTACKS.get(kind, field="").declared["capabilities"] if kind in ATTACKS else Capabilities()


def builtin_names() -> list[str]:
  """The built-in attackers' names, sorted."""
  return ATTACKS.names()


def default_on() -> list[str]:
  """The attackers registered `default_on` (the default config's), in registration order."""
  return list(_DEFAULT_ON)


def get(kind: str, *, field: str = "attacks") -> Callable:
  """The attacker registered as `kind`, or the function at import path "module:name"."""
  return ATTACKS.get(kind, field=field).fn


def own_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The attacker's keyword settings: its sub-config without the registry's `type`."""
  out = cfg.to_dict()
  out.pop("type", None)
  return ml_collections.ConfigDict(out)
