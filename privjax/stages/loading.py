"""Loading what a config names: the data, the audited model and the evaluator.

The command line's path into the audit (`audit.run`): each is built from its own config
group (config.data, config.model, config.evaluator) before `privjax.assess` runs. A model
kind is found in the registry (`privjax.models.kinds.MODELS`) and dispatched by what it
declared (one that trains, one of stored features), never by its name; its loader is
given its own settings and explicit values, not the config tree.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np
from absl import logging

from privjax.data import sources
from privjax.data import splits as data_lib
from privjax.errors import ConfigError, DataError
from privjax.models import kinds as embedding
from privjax.scoring import identity
from privjax.stages import inputs

__all__ = ["Loaded", "Model", "data", "evaluator", "evaluator_kind", "model"]


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
  evaluator_kind: str  # "off" or a model kind (`evaluator_kind`)
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
  declared = embedding.declared(config.model.kind)
  _check_features(config, precomputed, bool(declared.get("stored_features")))
  if not precomputed:  # (before evaluator_kind: a refused run warns of nothing first)
    if declared.get("check_data"):  # (the builtin's: labelled images of 2+ identities)
      declared["check_data"](loaded, config.data.model_train_split)
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

  feature_dim = declared.get("feature_dim")  # (the builtin's embed_dim)
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
    feature_dim(config.model) if feature_dim else None,
  )


def _check_features(config, precomputed: bool, stored_kind: bool) -> None:
  """Stored features (an npz of aux/target features) and a model kind of stored features
  (config.model.kind='precomputed') come together or not at all."""
  if precomputed and not stored_kind:
    raise ConfigError(
      f"{config.data.path} holds stored features (aux/target features), which no model "
      f"re-embeds: add --config.model.kind=precomputed (got model.kind={config.model.kind!r})"
    )
  if stored_kind and not precomputed:
    raise ConfigError(
      "config.model.kind='precomputed' needs an npz source holding aux/target features "
      f"(aux_images, aux_features, target_images, target_features), got data.source="
      f"{config.data.source!r} without features"
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
  gives the targets a larger share (the audit config's own check, `inputs.check_sizes`,
  knows no split: it runs for the Python API too)."""
  need, got = config.get("min_targets"), len(loaded.targets.images)
  valid = isinstance(need, int) and not isinstance(need, bool)
  if not valid or need < inputs.MIN_TARGETS_FLOOR or got >= need:
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
  embed_fn, params, info = _load(config, "model", kind, loaded, workdir=workdir, mesh=mesh)
  return Model(embed_fn, params, {"kind": kind, **info})


def _load(config, field: str, kind: str, loaded: Loaded, *, workdir, mesh) -> tuple:
  """(embed_fn, params, info) of config.`field` as `kind` (the evaluator's "auto" resolved
  by `evaluator_kind`), its loader given its own settings and explicit values: the image
  shape and, for a kind that trains, its images, the seed, the workdir and the mesh."""
  m = config[field]
  if m.kind != kind:  # the evaluator's "auto": its settings, as the kind it became
    m = ml_collections.ConfigDict(dict(m.to_dict(), kind=kind))
  given = embedding.Given(field, tuple(loaded.target_images.shape[1:]))
  if embedding.declared(kind, field).get("trains"):
    train, test = _training_images(loaded, field)
    training = embedding.Training(
      train,
      test,
      seed=config.seed,
      eval_batch_size=config.eval_batch_size,
      overwrite=config.overwrite,
      workdir=workdir,
      mesh=mesh,
    )
    given = dataclasses.replace(given, training=training)
  return embedding.load_kind(m, given, config)


def _training_images(loaded: Loaded, field: str) -> tuple:
  """(train, test) of a kind that trains: the audited model's the model-train split (its
  data checked by `data`), tested on the auxiliary and target images; the evaluator's the
  auxiliary images, tested on the targets."""
  d = loaded.data
  if field == "model":
    test = data_lib.Split(
      np.concatenate([d.aux.images, d.targets.images]),
      np.concatenate([d.aux.labels, d.targets.labels]),
    )
    return d.model_train, test
  if isinstance(d, sources.Precomputed):  # the npz's images, with its labels as ids
    ids, _ = data_lib.label_ids({"aux": d.aux_labels, "target": d.target_labels})
    return data_lib.Split(d.aux_images, ids["aux"]), data_lib.Split(d.target_images, ids["target"])
  return d.aux, d.targets


def evaluator_kind(config, data, precomputed) -> tuple[str, str | None]:
  """The evaluator that will run ("off" or a model kind), decided before any training, and
  why none runs (None when one does): "auto" is `embedding.AUTO` (the builtin one) on
  labelled auxiliary and target images of two or more identities each, else "off" (logged
  when the run starts, by `model`, and the report says why identity leakage was not
  checked); an explicit kind the data cannot serve is a one-line error now, not after
  training."""
  kind = config.evaluator.kind
  labels = data.target_labels if precomputed else data.targets.labels
  aux_labels = data.aux_labels if precomputed else data.aux.labels
  identities = 0 if labels is None else len(np.unique(labels))
  trains_on = 0 if aux_labels is None else len(np.unique(aux_labels))  # a trained one's classes
  if kind == "auto":
    why = _why_no_evaluator(labels, aux_labels, identities, trains_on, precomputed)
    if why is None:
      return embedding.AUTO, None
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
  trains = embedding.declared(kind, "evaluator").get("trains")
  if trains and aux_labels is None:
    raise ConfigError(
      f"config.evaluator.kind={kind!r} is trained on the labelled auxiliary images, and "
      + ("this npz holds no aux_labels" if precomputed else "they have no labels")
      + "; use a 'flax' or 'function' evaluator, or config.evaluator.kind='off'"
    )
  if trains and trains_on < 2:
    raise DataError(
      f"config.evaluator.kind={kind!r} is trained on the labelled auxiliary images, which "
      f"hold {trains_on} identity: it needs 2 or more to learn to tell people apart; use a "
      "'flax' or 'function' evaluator, or config.evaluator.kind='off'"
    )
  return kind, None


def _why_no_evaluator(labels, aux_labels, identities, trains_on, precomputed) -> str | None:
  """Why config.evaluator.kind='auto' runs none on these labels, or None: it runs the
  builtin one."""
  if labels is None:
    return "the targets have no identity labels" + (
      " (the npz's target_labels)" if precomputed else ""
    )
  if identities < 2:
    return f"the targets hold {identities} identity (impostor pairs need two)"
  if aux_labels is None:
    return "the auxiliary images have no identity labels to train the builtin evaluator on" + (
      " (add aux_labels to the npz, or give a 'flax' or 'function' evaluator)"
      if precomputed
      else ""
    )
  if trains_on < 2:
    return (
      f"the auxiliary images hold {trains_on} identity, too few to train the builtin evaluator on"
    )
  return None


def evaluator(config, loaded: Loaded, *, workdir, mesh):
  """The independent evaluator (identity.Evaluator) of `evaluator_kind`, or None."""
  kind = loaded.evaluator_kind
  if kind == "off":
    return None
  embed_fn, params, found = _load(config, "evaluator", kind, loaded, workdir=workdir, mesh=mesh)
  info = {"kind": kind, **found}
  if embedding.declared(kind, "evaluator").get("trains"):
    info.update(trained_on="the auxiliary set", tested_on="the targets")
  return identity.Evaluator(embed_fn, params, info)
