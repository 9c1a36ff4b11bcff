"""Runs the configured attackers: fit each once (on demand), reconstruct the targets, cache.

Each attacker's reconstructions of the targets are cached in the workdir under a key of
everything they depend on (its settings, the seed, the SSIM window, the auxiliary and
target data, the model, and the keys of the attackers it starts from), with a checksum,
so a re-run or a resumed run reuses them and a changed input never does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import ml_collections
import numpy as np
from absl import logging

from privjax import cache
from privjax import workdir as workdir_lib
from privjax.attacks import base
from privjax.errors import ModelError


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What one configured attacker produced."""

  name: str
  type: str
  reconstructions: np.ndarray | None  # [N, H, W, C] in [0, 1]; None when skipped
  info: dict
  warnings: tuple[str, ...]
  skipped: str  # the reason it did not run, or ""
  seconds: float


def _settings(name: str, attacks_cfg, shared: dict) -> dict:
  entry = base.own_config(attacks_cfg[name]).to_dict()
  if attacks_cfg[name].type == "decoder":
    entry.update(shared)
  return entry


def run_all(
  attacks_cfg: ml_collections.ConfigDict,
  aux: base.AuxSet,
  target_features: np.ndarray,
  *,
  context: dict,
  shared: dict,
  data_key: str,
  workdir: str | None,
  overwrite: bool,
  stage: str = "",
  fitted: dict | None = None,
) -> list[Outcome]:
  """Runs every attacker not "off", in config order; returns one Outcome each.

  Args:
    attacks_cfg: config.attacks (entries completed with their defaults).
    aux: the auxiliary set (standardised features).
    target_features: [N, D] standardised target features.
    context: the fields of `base.Context` shared by every attacker (all but
      checkpoint_dir and fitted).
    shared: the settings the decoder type reads beside its entry ({"decoder", "train"}).
    data_key: a hash of the auxiliary and target data and the model.
    workdir: the audit's workdir, or None.
    overwrite: discard a checkpoint stage made with different inputs (else an error).
    stage: a prefix keeping this run's checkpoints and caches apart from other runs'
      in the same workdir (the attacker-strength runs on parts of the auxiliary set).
    fitted: a dict of fitted attackers by name kept by the caller, so that calls on the
      same auxiliary set with other target features fit each attacker once (the defense
      sweep's non-adaptive attacks); None: fitted for this call only.
  """
  names = [n for n in attacks_cfg if attacks_cfg[n].type != base.OFF]
  fitted = {} if fitted is None else fitted
  targets_key = workdir_lib.array_hash(target_features)
  keys: dict[str, str] = {}

  def key(name):
    if name not in keys:
      settings = _settings(name, attacks_cfg, shared)
      deps = sorted(
        key(v) for v in settings.values() if isinstance(v, str) and v in names and v != name
      )
      blob = json.dumps(
        [
          attacks_cfg[name].type,
          settings,
          context["seed"],
          context["filter_size"],
          context["filter_sigma"],
          data_key,
          targets_key,
          deps,
        ],
        sort_keys=True,
        default=str,
      )
      keys[name] = hashlib.sha256(blob.encode()).hexdigest()
    return keys[name]

  def fit(name):
    if name not in fitted:
      kind = attacks_cfg[name].type
      ckpt = None
      if workdir is not None and base.uses_checkpoints(kind):
        ckpt = os.path.join(workdir, "checkpoints", stage + name)
        workdir_lib.claim_stage(
          ckpt,
          {
            **_settings(name, attacks_cfg, shared),
            "seed": context["seed"],
            "ssim": {
              "filter_size": context["filter_size"],
              "filter_sigma": context["filter_sigma"],
            },
            "aux": data_key,
          },
          overwrite=overwrite,
          what=f"{name} checkpoint",
        )
      ctx = base.Context(**context, checkpoint_dir=ckpt, fitted=fit)
      cfg = ml_collections.ConfigDict(_settings(name, attacks_cfg, shared))
      logging.info("attack %s (%s): fitting on %d auxiliary images", name, kind, len(aux.train))
      fitted[name] = base.get(kind)(aux, ctx, cfg)
    return fitted[name]

  outcomes = []
  for name in names:
    kind = attacks_cfg[name].type
    t = time.perf_counter()
    path = (
      os.path.join(workdir, "cache", f"attack-{stage}{name}-{key(name)[:32]}.npz")
      if workdir
      else None
    )
    stored = cache.load(path) if path else None
    if stored is not None:
      arrays, meta = stored
      logging.info("attack %s: reconstructions restored from %s", name, path)
      outcomes.append(
        Outcome(
          name,
          kind,
          arrays["reconstructions"],
          meta["info"],
          tuple(meta["warnings"]),
          "",
          meta["seconds"],
        )
      )
      continue
    try:
      f = fit(name)
      recon = np.asarray(f.reconstruct(target_features), np.float32)
    except base.Skipped as e:
      logging.info("attack %s skipped: %s", name, e)
      outcomes.append(Outcome(name, kind, None, {}, (), str(e), 0.0))
      continue
    expected = (len(target_features), *aux.image_shape)
    if recon.shape != expected or not np.all(np.isfinite(recon)):
      raise ModelError(
        f"attack {name!r} returned reconstructions of shape {recon.shape} "
        f"{'with non-finite values ' if recon.shape == expected else ''}"
        f"(expected {list(expected)} finite values in [0, 1])"
      )
    recon = np.clip(recon, 0.0, 1.0)
    seconds = round(time.perf_counter() - t, 3)
    warnings = (*base.data_warnings(aux), *f.warnings)
    outcome = Outcome(name, kind, recon, f.info, warnings, "", seconds)
    if path:
      cache.save(
        path,
        {"reconstructions": recon},
        {"info": f.info, "warnings": list(warnings), "seconds": seconds},
      )
    outcomes.append(outcome)
    logging.info("attack %s done in %.1fs", name, seconds)
  return outcomes
