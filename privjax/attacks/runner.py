"""Runs the configured attackers: fit each once (on demand), reconstruct the targets, cache.

Each attacker's reconstructions of the targets are cached in the workdir under a key of
everything they depend on (its settings, the seed, the SSIM window, the auxiliary and
target data, the model, and the keys of the attackers it starts from), with a checksum,
so a re-run or a resumed run reuses them and a changed input never does.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import ml_collections
import numpy as np
from absl import logging

from privjax.attacks import base
from privjax.data import images
from privjax.errors import DataError, ModelError
from privjax.registry import call_fn, call_user
from privjax.runtime import cache, keys
from privjax.runtime import workdir as workdir_lib

__all__ = [
  "ROUNDING",
  "Outcome",
  "run_all",
]

# Reconstructions this far outside [0, 1] are float rounding, clipped; beyond, refused.
ROUNDING = 1e-5


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What one configured attacker produced."""

  name: str
  type: str
  reconstructions: np.ndarray | None  # [N, H, W, C] in [0, 1]; None when skipped
  info: dict
  warnings: tuple[str, ...]
  skipped: str  # the reason it did not run, or ""
  seconds: float  # what computing it took (in the run that did, when `cached`)
  cached: bool = False  # restored from the workdir's cache by this run


def run_all(
  attacks_cfg: ml_collections.ConfigDict,
  aux: base.AuxSet,
  target_features: np.ndarray,
  *,
  context: dict,
  data_key: str,
  workdir: str | None,
  overwrite: bool,
  stage: str = "",
  fitted: dict | None = None,
  after: Callable[[Outcome], str] | None = None,
) -> list[Outcome]:
  """Runs every attacker not "off"; returns one Outcome each, in config order.

  The attackers that neither train a model nor differentiate through one, nor use one
  that does (nearest, ridge, a user's), run first, so their verdict is known within
  seconds; then the rest, in config order, each after the attackers it starts from or
  combines (`_order`).

  Args:
    attacks_cfg: config.attacks (entries completed with their defaults).
    aux: the auxiliary set (standardised features).
    target_features: [N, D] standardised target features.
    context: the fields of `base.Context` shared by every attacker (all but
      checkpoint_dir and fitted).
    data_key: a hash of the auxiliary and target data and the model.
    workdir: the audit's workdir, or None.
    overwrite: discard a checkpoint stage made with different inputs (else an error).
    stage: a prefix keeping this run's checkpoints and caches apart from other runs'
      in the same workdir (the attacker-strength runs on parts of the auxiliary set).
    fitted: a dict of fitted attackers by name kept by the caller, so that calls on the
      same auxiliary set with other target features fit each attacker once (the defense
      sweep's non-adaptive attacks); None: fitted for this call only.
    after: called with each attacker's outcome as it comes; a non-empty string it returns
      stops the run there, and the attackers not run yet are skipped with it as the reason.
  """
  run = _Run(
    attacks_cfg,
    aux,
    context,
    data_key,
    workdir,
    overwrite,
    stage,
    {} if fitted is None else fitted,
    workdir_lib.array_hash(target_features),
  )
  names = [n for n in attacks_cfg if attacks_cfg[n].type != base.OFF]
  done, stop = {}, ""
  for name in _order(attacks_cfg, names):
    if stop:
      done[name] = Outcome(name, attacks_cfg[name].type, None, {}, (), stop, 0.0)
      continue
    done[name] = run.outcome(name, target_features)
    stop = (after(done[name]) or "") if after is not None else ""
  return [done[name] for name in names]


def _named(settings: dict) -> set[str]:
  """Every string among an attacker's settings (the attackers it starts from or combines)."""
  return {
    v
    for value in settings.values()
    for v in (value if isinstance(value, (list, tuple)) else [value])
    if isinstance(v, str)
  }


def _order(attacks_cfg, names: list[str]) -> list[str]:
  """The order the running attackers run in: first those that neither train a model nor
  differentiate through one nor use one that does (a blend of the decoder), then the
  rest; each in config order, but after the attackers it uses (so each one's seconds are
  its own)."""
  uses = {n: _named(base.own_config(attacks_cfg[n]).to_dict()) & set(names) - {n} for n in names}
  caps = {n: base.capabilities(attacks_cfg[n].type) for n in names}
  heavy = {n for n in names if caps[n].checkpoints or caps[n].needs_model}
  grew = True
  while grew:
    more = {n for n in names if n not in heavy and uses[n] & heavy}
    heavy |= more
    grew = bool(more)
  order = []

  def visit(n, path=()):
    if n not in order and n not in path:  # a cycle (two whiteboxes starting from each
      for m in sorted(uses[n], key=names.index):  # other) keeps config order
        visit(m, (*path, n))
      order.append(n)

  for group in ([n for n in names if n not in heavy], [n for n in names if n in heavy]):
    for n in group:
      visit(n)
  return order


@dataclasses.dataclass
class _Run:
  """One `run_all` call: the attackers' keys, fitted attackers and cached reconstructions."""

  attacks_cfg: ml_collections.ConfigDict
  aux: base.AuxSet
  context: dict
  data_key: str
  workdir: str | None
  overwrite: bool
  stage: str
  fitted: dict
  targets_key: str
  keys: dict = dataclasses.field(default_factory=dict)

  def settings(self, name: str) -> dict:
    """The attacker's own settings: its config entry without the registry's `type`."""
    return base.own_config(self.attacks_cfg[name]).to_dict()

  def key(self, name: str) -> str:
    """A hash of everything `name`'s reconstructions depend on (and the attackers it uses)."""
    if name not in self.keys:
      settings = self.settings(name)
      running = [n for n in self.attacks_cfg if self.attacks_cfg[n].type != base.OFF]
      deps = sorted(self.key(v) for v in _named(settings) if v in running and v != name)
      kind = self.attacks_cfg[name].type
      # The whole context (any field added later too) but the mesh: a result resumes on
      # another device count; the model enters by the hash of its program and params.
      context = {k: v for k, v in self.context.items() if k != "mesh"}
      self.keys[name] = keys.of(
        kind,
        ""
        if kind in base.builtin_names()
        else keys.code(base.get(kind)),  # a user's attacker's code
        settings,
        context,
        self.data_key,
        self.targets_key,
        deps,
      )
    return self.keys[name]

  def cache_path(self, name: str) -> str | None:
    if not self.workdir:
      return None
    return os.path.join(
      self.workdir, "cache", f"attack-{self.stage}{name}-{self.key(name)[:32]}.npz"
    )

  def fit(self, name: str) -> base.Fitted:
    """The attacker `name`, fitted once (its checkpoint stage claimed first)."""
    if name not in self.fitted:
      kind = self.attacks_cfg[name].type
      if base.capabilities(kind).needs_model and self.context["model"] is None:
        raise base.Skipped("the audit runs on stored features: there is no model to differentiate")
      ckpt = None
      if self.workdir is not None and base.capabilities(kind).checkpoints:
        ckpt = os.path.join(self.workdir, "checkpoints", self.stage + name)
        c = self.context
        workdir_lib.claim_stage(
          ckpt,
          {
            **self.settings(name),
            "seed": c["seed"],
            "ssim": {"filter_size": c["filter_size"], "filter_sigma": c["filter_sigma"]},
            "aux": self.data_key,
          },
          overwrite=self.overwrite,
          what=f"{name} checkpoint",
        )
      ctx = base.Context(
        **self.context,
        checkpoint_dir=ckpt,
        fitted=self.fit,
        running=tuple(n for n in self.attacks_cfg if self.attacks_cfg[n].type != base.OFF),
      )
      cfg = ml_collections.ConfigDict(self.settings(name))
      logging.info(
        "attack %s (%s): fitting on %d auxiliary images", name, kind, len(self.aux.train)
      )
      plugin = base.ATTACKS.get(kind, field=f"attacks.{name}.type")
      fitted = call_user(
        plugin, f"attack {name!r}", ModelError, self.aux, ctx, cfg, passthrough=(base.Skipped,)
      )
      if isinstance(fitted, base.Fitted) and fitted.reconstruct is None and callable(fitted.apply):
        # Only the pure function and its params: batched over the mesh here.
        fitted = fitted.with_host(mesh=ctx.mesh, batch_size=ctx.eval_batch_size)
      if not isinstance(fitted, base.Fitted) or not callable(fitted.reconstruct):
        raise ModelError(
          f"attack {name!r} ({kind}) must return privjax.attacks.Fitted(reconstruct, ...) or "
          f"Fitted(apply=..., params=...), got {type(fitted).__name__}"
        )
      if fitted.held_out is not None and not callable(fitted.held_out):
        raise ModelError(
          f"attack {name!r} ({kind}): Fitted.held_out must be None or a function of features, "
          f"got {type(fitted.held_out).__name__}"
        )
      self.fitted[name] = fitted
    return self.fitted[name]

  def outcome(self, name: str, target_features: np.ndarray) -> Outcome:
    """`name`'s reconstructions of the targets: from the workdir's cache, else fitted (once),
    reconstructing, checked and cached."""
    kind = self.attacks_cfg[name].type
    try:
      arrays, meta, restored = cache.cached(
        self.cache_path(name),
        lambda: self.attack(name, target_features),
        what=f"attack {name}: reconstructions",
      )
    except base.Skipped as e:
      logging.info("attack %s skipped: %s", name, e)
      return Outcome(name, kind, None, {}, (), str(e), 0.0)
    return Outcome(
      name,
      kind,
      arrays["reconstructions"],
      meta["info"],
      tuple(meta["warnings"]),
      "",
      meta["seconds"],
      cached=restored,
    )

  def attack(self, name: str, target_features: np.ndarray) -> tuple[dict, dict]:
    """`name` fitted (once) and reconstructing the targets, checked: ({"reconstructions"},
    {info, warnings, seconds}); raises `base.Skipped` when it cannot attack these features."""
    kind = self.attacks_cfg[name].type
    t = time.perf_counter()
    f = self.fit(name)
    recon = call_fn(
      f.reconstruct,
      kind,
      f"attack {name!r}'s reconstruct",
      ModelError,
      target_features,
      user=kind not in base.builtin_names(),
      passthrough=(base.Skipped,),
    )
    if recon is None or not hasattr(recon, "shape"):
      raise ModelError(
        f"attack {name!r} returned {type(recon).__name__} for its reconstructions (expected "
        f"an array [N, H, W, C] in [0, 1])"
      )
    recon = np.asarray(recon)
    expected = (len(target_features), *self.aux.image_shape)
    if recon.shape != expected:
      raise ModelError(
        f"attack {name!r} returned reconstructions of shape {recon.shape} "
        f"(expected {list(expected)})"
      )
    if recon.dtype.kind == "f":  # float rounding at the ends (a resize, a sum) is not a fault
      inside = (recon >= -ROUNDING) & (recon <= 1 + ROUNDING)
      recon = np.where(inside, np.clip(recon, 0.0, 1.0), recon)
    try:  # the pixel rule of every image privjax reads: never rescaled
      recon = images.to_unit_float(recon, name=f"attack {name!r}'s reconstructions")
    except DataError as e:
      raise ModelError(str(e)) from None
    seconds = round(time.perf_counter() - t, 3)
    warnings = (*base.data_warnings(self.aux), *f.warnings)
    logging.info("attack %s done in %.1fs", name, seconds)
    return {"reconstructions": recon}, {
      "info": f.info,
      "warnings": list(warnings),
      "seconds": seconds,
    }
