"""Loading what a config names: the data, the audited model and the evaluator.

The command line's path into the audit (`audit.run`): each is built from its own config
group (config.data, config.model, config.evaluator) before `privjax.assess` runs.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np
from absl import logging

from privjax import config as config_lib
from privjax.data import sources
from privjax.data import splits as data_lib
from privjax.errors import ConfigError, DataError
from privjax.models import kinds as embedding
from privjax.models import recognition
from privjax.runtime import workdir as workdir_lib
from privjax.scoring import identity


@dataclasses.dataclass(frozen=True)
class Loaded:
  """config.data loaded, with what it decides about the model and the evaluator."""

  data: data_lib.AuditData | sources.Precomputed
  aux_images: np.ndarray
  target_images: np.ndarray
  target_labels: np.ndarray | None  # by name where the source names them
  aux_labels: np.ndarray | None
  target_sources: list | None
  description: str
  evaluator_kind: str  # "off", "builtin", "flax" or "function" (`evaluator_kind`)
  evaluator_off: str | None  # why no evaluator runs (the report says it), None when one does
  feature_dim: int | None  # known before any model runs: the builtin's, the npz's


@dataclasses.dataclass(frozen=True)
class Model:
  """The audited model: embed_fn and params (None on stored features), and what it is."""

  embed_fn: object
  params: object
  info: dict


def data(config) -> Loaded:
  """Loads config.data after checking config.model and config.evaluator (one line each)."""
  embedding.validate(config.model)
  embedding.validate(config.evaluator, "evaluator")
  loaded = data_lib.load(config.data)
  precomputed = isinstance(loaded, sources.Precomputed)
  if precomputed and config.model.kind != "precomputed":
    raise ConfigError(
      f"{config.data.path} holds stored features (aux/target features), which no model "
      f"re-embeds: add --config.model.kind=precomputed (got model.kind={config.model.kind!r})"
    )
  if config.model.kind == "precomputed" and not precomputed:
    raise ConfigError(
      "config.model.kind='precomputed' needs an npz source holding aux/target features "
      f"(aux_images, aux_features, target_images, target_features), got data.source="
      f"{config.data.source!r} without features"
    )
  if not precomputed:  # (before evaluator_kind: a refused run warns of nothing first)
    _check_builtin(config, loaded)
    _check_target_count(config, loaded)
  kind, off = evaluator_kind(config, loaded, precomputed)
  if precomputed:
    return Loaded(
      loaded,
      loaded.aux_images,
      loaded.target_images,
      loaded.target_labels,
      loaded.aux_labels,
      None,
      f"npz {config.data.path}: stored features of {len(loaded.aux_images)} aux / "
      f"{len(loaded.target_images)} target images",
      kind,
      off,
      int(loaded.aux_features.shape[1]),
    )

  def named(labels):  # by name where the source names them (identity folders)
    if loaded.label_names is None or labels is None:
      return labels
    return np.asarray(loaded.label_names)[labels]

  return Loaded(
    loaded,
    loaded.aux.images,
    loaded.targets.images,
    named(loaded.targets.labels),
    named(loaded.aux.labels),
    loaded.targets.sources,
    loaded.description,
    kind,
    off,
    config.model.embed_dim if config.model.kind == "builtin" else None,
  )


def _check_builtin(config, d: data_lib.AuditData) -> None:
  """The builtin model's data, before any training: labelled model-train and auxiliary
  images, and two or more identities to tell apart (one class trains a classifier to a
  loss of 0 that recognises no one)."""
  if config.model.kind != "builtin":
    return
  if d.model_train is None or d.model_train.labels is None or d.aux.labels is None:
    raise ConfigError(
      "config.model.kind='builtin' trains a classifier: it needs config.data."
      "model_train_split and labels (config.data.label_key or identity subfolders)"
    )
  ids = np.unique(d.model_train.labels)
  if len(ids) < 2:
    name = ids[0] if d.label_names is None else d.label_names[ids[0]]
    raise DataError(
      "config.model.kind='builtin' trains a recognition model on config.data."
      f"model_train_split={config.data.model_train_split!r}, which holds 1 identity "
      f"({str(name)!r}, {len(d.model_train.labels)} images): it needs 2 or more to learn to "
      "tell people apart; add identities (one subfolder each), or audit your own model "
      "(config.model.kind='flax' or 'function')"
    )


def _targets_in(spec: str, n: int) -> int:
  """How many targets `spec` (config.data.target_split) takes of a split of `n` images."""
  try:
    return len(data_lib.resolve_roles({"target": spec}, lambda _: n, 0)["target"][1])
  except ConfigError:  # selects none of so few
    return 0


def _check_target_count(config, loaded: data_lib.AuditData) -> None:
  """Too few targets, refused with what would give enough: how many images the split
  needs for config.min_targets of them at config.data.target_split, and which setting
  gives the targets a larger share (the audit config's own check, `inputs.resolve_config`,
  knows no split: it runs for the Python API too)."""
  need, got = config.get("min_targets"), len(loaded.targets.images)
  valid = isinstance(need, int) and not isinstance(need, bool)
  if not valid or need < config_lib.MIN_TARGETS_FLOOR or got >= need:
    return  # (an invalid min_targets is refused by the audit config's check)
  spec = config.data.target_split
  split = data_lib.parse_split(spec)[0]
  read = sum(len(s.images) for s in (loaded.model_train, loaded.aux, loaded.targets) if s)
  # (a share under 1%, or a fixed count, is never enough for a larger split: no size then)
  enough = next((n for n in range(need, 100 * need + 1) if _targets_in(spec, n) >= need), None)
  if enough is None:
    size = f"config.data.target_split={spec!r} takes too few of split {split!r} whatever its size"
  else:
    share = _targets_in(spec, 10**5) / 10**3  # the share of the split, in percent
    size = (
      f"the targets are {share:g}% of split {split!r} (config.data.target_split={spec!r}), so "
      f"it needs at least {enough} images in all (this run read {read})"
    )
  raise DataError(
    f"need at least config.min_targets={need} target images for the rates and confidence "
    f"intervals, got {got}: {size}; add images, or give the targets a larger share with "
    "config.data.target_split (and the other roles' splits, which must not overlap it)"
  )


def model(config, loaded: Loaded, *, workdir, mesh) -> Model:
  """The audited model of config.model: the builtin one trained (or restored) in the
  workdir, a user's Flax module or function, or none on stored features."""
  kind = config.model.kind
  if loaded.evaluator_off and config.evaluator.kind == "auto":
    # Said here, the first step of the run after every check of it (`data`, then the audit
    # config's), so a refused run never promises what the report will say.
    logging.warning(
      "%s, so identity leakage is not checked (the report says so)", loaded.evaluator_off
    )
  if isinstance(loaded.data, sources.Precomputed):
    return Model(None, None, {"kind": kind})
  d = loaded.data
  if kind == "builtin":  # (its data checked by `data`: _check_builtin)
    test = data_lib.Split(
      np.concatenate([d.aux.images, d.targets.images]),
      np.concatenate([d.aux.labels, d.targets.labels]),
    )
    embed_fn, params, info = builtin(
      config, "model", d.model_train, test, workdir=workdir, mesh=mesh
    )
  else:
    embed_fn, params, info = embedding.load(config, "model", loaded.target_images.shape[1:])
  return Model(embed_fn, params, {"kind": kind, **info})


def builtin(config, field, train, test, *, workdir, mesh):
  """The builtin RecognitionCNN of config.`field`, trained (or restored) in the workdir."""
  mc = config[field]
  if mc.kind == "auto":  # the evaluator `evaluator_kind` resolved to the builtin one
    mc = ml_collections.ConfigDict(dict(mc.to_dict(), kind="builtin"))
  ckpt_dir = os.path.join(workdir, "checkpoints", "recognition" if field == "model" else field)
  workdir_lib.claim_stage(
    ckpt_dir,
    {
      field: mc.to_dict(),
      "seed": config.seed,
      "train": workdir_lib.array_hash(train.images, train.labels),
      "test": workdir_lib.array_hash(test.images, test.labels),
    },
    overwrite=config.overwrite,
    what="recognition model" if field == "model" else field,
  )
  return recognition.train_or_restore(
    train,
    test,
    mc,
    seed=config.seed,
    eval_batch_size=config.eval_batch_size,
    mesh=mesh,
    checkpoint_dir=ckpt_dir,
    field=field,
  )


def evaluator_kind(config, data, precomputed) -> tuple[str, str | None]:
  """The evaluator that will run ("off", "builtin", "flax", "function"), decided before any
  training, and why none runs (None when one does): "auto" is "builtin" on labelled
  auxiliary and target images of two or more identities each, else "off" (logged when the
  run starts, by `model`, and the report says why identity leakage was not checked); an
  explicit kind the data cannot serve is a one-line error now, not after training."""
  kind = config.evaluator.kind
  labels = data.target_labels if precomputed else data.targets.labels
  aux_labels = data.aux_labels if precomputed else data.aux.labels
  identities = 0 if labels is None else len(np.unique(labels))
  trains_on = 0 if aux_labels is None else len(np.unique(aux_labels))  # the builtin's classes
  if kind == "auto":
    if labels is None:
      why = "the targets have no identity labels" + (
        " (the npz's target_labels)" if precomputed else ""
      )
    elif identities < 2:
      why = f"the targets hold {identities} identity (impostor pairs need two)"
    elif aux_labels is None:
      why = "the auxiliary images have no identity labels to train the builtin evaluator on" + (
        " (add aux_labels to the npz, or give a 'flax' or 'function' evaluator)"
        if precomputed
        else ""
      )
    elif trains_on < 2:
      why = (
        f"the auxiliary images hold {trains_on} identity, too few to train the builtin evaluator on"
      )
    else:
      return "builtin", None
    return "off", f"config.evaluator.kind='auto' and {why}"  # (logged by `model`)
  if kind == "off":
    return kind, "config.evaluator.kind='off'"
  if labels is None:
    raise ConfigError(
      f"config.evaluator.kind={kind!r} judges identities: it needs labels on the targets "
      "(config.data.label_key or identity subfolders); set config.evaluator.kind='off' to "
      "audit without it (the report then says identity leakage was not checked)"
    )
  if identities < 2:
    raise DataError(
      f"config.evaluator.kind={kind!r} needs targets of at least 2 identities to fix its "
      f"thresholds from impostor pairs, got {len(labels)} targets of {identities} identity"
    )
  if kind == "builtin" and aux_labels is None:
    raise ConfigError(
      "config.evaluator.kind='builtin' is trained on the labelled auxiliary images, and "
      + ("this npz holds no aux_labels" if precomputed else "they have no labels")
      + "; use a 'flax' or 'function' evaluator, or config.evaluator.kind='off'"
    )
  if kind == "builtin" and trains_on < 2:
    raise DataError(
      "config.evaluator.kind='builtin' is trained on the labelled auxiliary images, which "
      f"hold {trains_on} identity: it needs 2 or more to learn to tell people apart; use a "
      "'flax' or 'function' evaluator, or config.evaluator.kind='off'"
    )
  return kind, None


def evaluator(config, loaded: Loaded, *, workdir, mesh):
  """The independent evaluator (identity.Evaluator) of `evaluator_kind`, or None."""
  kind = loaded.evaluator_kind
  if kind == "off":
    return None
  info = {"kind": kind}
  if kind == "builtin":
    d = loaded.data
    if isinstance(d, sources.Precomputed):  # the npz's images, with its labels as ids
      ids, _ = data_lib.label_ids({"aux": d.aux_labels, "target": d.target_labels})
      aux = data_lib.Split(d.aux_images, ids["aux"])
      targets = data_lib.Split(d.target_images, ids["target"])
    else:
      aux, targets = d.aux, d.targets
    embed_fn, params, trained = builtin(
      config, "evaluator", aux, targets, workdir=workdir, mesh=mesh
    )
    info.update(trained, trained_on="the auxiliary set", tested_on="the targets")
  else:
    embed_fn, params, found = embedding.load(config, "evaluator", loaded.target_images.shape[1:])
    info.update(found)
  return identity.Evaluator(embed_fn, params, info)
