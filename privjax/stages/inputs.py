"""What an audit runs on, checked before any work: the images, the labels, the model or the
stored features, the evaluator, and the config against the data's sizes. Each mismatch is
one line (DataError, ModelError, ConfigError).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from privjax.data import images
from privjax.defenses import sweep, transforms
from privjax.errors import ConfigError, DataError, ModelError
from privjax.scoring import identity
from privjax.stages import strength

__all__ = ["MIN_TARGETS_FLOOR", "Inputs", "check", "check_defender", "check_images", "check_sizes"]


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What an audit runs on, checked: images, labels, the model or stored features."""

  aux: np.ndarray  # [N_aux, H, W, C] float32 in [0, 1]
  targets: np.ndarray  # [N, H, W, C] float32 in [0, 1]
  labels: np.ndarray | None  # [N] int target labels
  per_target: dict  # per_image.csv's text columns: label_name, source ([N] or None)
  sweep_labels: tuple  # (aux ids, target ids) in one encoding for the sweep's utility
  embed_fn: object  # the audited model's embed_fn, or None on stored features
  params: object
  aux_features: np.ndarray | None  # stored features (embed_fn None)
  target_features: np.ndarray | None
  evaluator: identity.Evaluator | None
  metadata: dict | None
  feature_dim: int | None  # the features' width where known before extraction
  warnings: tuple = ()  # what the checks found that the report must say (one line each)
  # The defender's own split a learning defense trains on: (images [M, H, W, C], int labels
  # [M], where it came from), or None.
  defender: tuple | None = None


def check_images(aux_images, target_images):
  """(aux [N_aux, H, W, C], targets [N, H, W, C]) float32 in [0, 1] (`images.check_images`'
  pixel rule); a DataError in one line unless both are images of one shape."""
  aux = images.check_images(aux_images, name="aux_images")
  targets = images.check_images(target_images, name="target_images")
  if aux.shape[1:] != targets.shape[1:]:
    raise DataError(
      f"aux_images and target_images must have the same image shape, got {aux.shape[1:]} and "
      f"{targets.shape[1:]}"
    )
  return aux, targets


MIN_TARGETS_FLOOR = 10  # fewer targets make the rates and the bootstrap CI meaningless


def check_sizes(cfg, aux, targets) -> None:
  """The resolved config checked against the data's sizes: enough targets, enough auxiliary
  images to fit and validate on, each attack-strength part distinct and large enough."""
  if targets.shape[0] < cfg.min_targets:
    raise DataError(
      f"need at least config.min_targets={cfg.min_targets} target images for the rates and "
      f"confidence intervals, got {targets.shape[0]}: add {cfg.min_targets - targets.shape[0]} "
      "or more (a split source's targets are the share config.data.target_split takes of "
      "its images, 20% by default)"
    )
  n_val = max(1, int(round(cfg.val_fraction * aux.shape[0])))
  if aux.shape[0] - n_val < 2:
    raise DataError(
      f"need at least {n_val + 2} auxiliary images for the attackers to fit and validate "
      f"on, got {aux.shape[0]}"
    )
  sizes = {}  # part size -> the first fraction giving it
  for i, fraction in enumerate(cfg.attack_strength.aux_fractions):
    k = strength.part_size(fraction, aux.shape[0])
    if k in sizes:
      j = sizes[k]
      raise ConfigError(
        f"config.attack_strength.aux_fractions[{i}]={fraction} gives the same {k} auxiliary "
        f"images as aux_fractions[{j}]={cfg.attack_strength.aux_fractions[j]}: list each "
        "part once"
      )
    sizes[k] = i
    if k - max(1, int(round(cfg.val_fraction * k))) < 2:
      raise ConfigError(
        f"config.attack_strength.aux_fractions[{i}]={fraction} leaves {k} of the "
        f"{aux.shape[0]} auxiliary images, too few for an attacker to fit and validate on"
      )


def check(embed_fn, params, aux, targets, **kw) -> Inputs:
  """The audit's inputs checked against each other (one line for each mismatch)."""
  n = targets.shape[0]
  labels = images.check_labels(kw["target_labels"], n, name="target_labels")
  names = None if labels is None else images.encode_labels(kw["target_labels"], name="")[1]
  sources_ = kw["target_sources"]
  if sources_ is not None and len(sources_) != n:
    raise DataError(f"target_sources must name each of the {n} targets, got {len(sources_)}")
  stored = kw["aux_features"] is not None or kw["target_features"] is not None
  if embed_fn is None and (kw["aux_features"] is None or kw["target_features"] is None):
    raise ModelError("embed_fn is None: pass aux_features and target_features (stored features)")
  if embed_fn is not None and stored:
    raise ModelError("pass either embed_fn or stored aux_features/target_features, not both")
  evaluator = kw["evaluator"]
  if evaluator is not None:
    if not isinstance(evaluator, identity.Evaluator) or not callable(evaluator.embed_fn):
      raise ModelError(
        f"evaluator must be a privjax.Evaluator(embed_fn, params), got {type(evaluator).__name__}"
      )
    if labels is None:
      raise DataError(
        "an evaluator judges identities: pass target_labels (from the CLI: labels via "
        "config.data.label_key or identity subfolders)"
      )
  sweep_labels = _sweep_labels(kw["target_labels"], kw["aux_labels"], aux.shape[0])
  return Inputs(
    aux=aux,
    targets=targets,
    labels=labels,
    per_target={
      "label_name": None if names is None else [names[i] for i in labels],
      "source": sources_,
    },
    sweep_labels=sweep_labels,
    embed_fn=embed_fn,
    params=params,
    aux_features=kw["aux_features"],
    target_features=kw["target_features"],
    evaluator=evaluator,
    metadata=kw["metadata"],
    feature_dim=kw["feature_dim"],
    warnings=(*_shared_images(aux, targets), *_shared_identities(*sweep_labels)),
  )


def learners(cfg) -> list[str]:
  """The entries of config.defense.sweep whose defense learns (trains per strength)."""
  sweep = cfg.defense.sweep
  return [n for n in sweep if transforms.get(sweep[n].type, sweep[n].param).train is not None]


def check_defender(
  cfg, own_images, own_labels, *, image_shape, stored: bool, name: str, aux=None, targets=None
):
  """The defender's split for the sweep's learning defenses, checked: (images, int labels,
  `name`), or None when no entry learns. One line when an entry learns and the audit has no
  such split (or only stored features, which no model re-embeds), or when one of its images
  is also a target or an auxiliary image (`aux`, `targets` [N, H, W, C] float32): a defense
  trained on the very images it is audited on hides those, not the model's leakage."""
  learning = learners(cfg)
  if not learning:
    return None
  if own_images is None or own_labels is None:
    raise ConfigError(sweep.needs_defender(learning[0]))
  if stored:
    raise ConfigError(
      f"config.defense.sweep.{learning[0]} learns on the model's features of the defender's "
      "images, and a stored-features audit has no model to embed them with"
    )
  x = images.check_images(own_images, name="defender_images")
  if x.shape[1:] != tuple(image_shape):
    raise DataError(
      f"defender_images must have the targets' image shape {tuple(image_shape)}, got {x.shape[1:]}"
    )
  shared = _also_in(x, *(a for a in (aux, targets) if a is not None))
  if shared:
    raise DataError(
      f"{len(shared)} of the {x.shape[0]} defender_images are also target or auxiliary "
      f"images (first: defender image {shared[0]}): the defender's split must be disjoint "
      "from both, or its learned defense is trained on the images it is audited on"
    )
  y = images.check_labels(own_labels, x.shape[0], name="defender_labels")
  if len(np.unique(y)) < 2:
    raise DataError(
      f"defender_labels must hold at least 2 identities (a learned defense keeps identity "
      f"while hiding the image), got {len(np.unique(y))} in {x.shape[0]} images"
    )
  return x, y, name


def _also_in(rows, *pools) -> list[int]:
  """The indices of `rows` [N, ...] that are, byte for byte, a row of one of `pools`."""
  seen = {a.tobytes() for pool in pools for a in pool}
  return [i for i, r in enumerate(rows) if r.tobytes() in seen]


def _shared_images(aux, targets) -> list[str]:
  """A warning when some targets are also auxiliary images (byte for byte): the method
  wants them disjoint, and an attacker that holds a target's own image recovers it."""
  shared = _also_in(targets, aux)
  if not shared:
    return []
  head = ", ".join(map(str, shared[:10])) + (
    f", ... ({len(shared) - 10} more)" if len(shared) > 10 else ""
  )
  return [
    f"{len(shared)} of {len(targets)} target images are also auxiliary images (targets "
    f"{head}): the attacker holds those targets' own images, so their numbers show what an "
    "attacker with the very images recovers, not one with similar images; make the two "
    "sets disjoint"
  ]


def _shared_identities(aux_ids, target_ids) -> list[str]:
  """A warning when aux_labels and target_labels share no identity: the sweep's k-NN
  identification (each target matched against the auxiliary gallery) cannot succeed."""
  if aux_ids is None or target_ids is None or np.intersect1d(aux_ids, target_ids).size:
    return []
  return [
    "aux_labels share no identity with target_labels: the defense sweep's k-NN "
    "identification (targets matched against the auxiliary gallery) is 0 with or without "
    "a defense, so it cannot show what a defense costs; label both sets in one scheme"
  ]


def _sweep_labels(target_labels, aux_labels, n_aux):
  """(aux ids, target ids) in one encoding for the sweep's utility, or (None, None)."""
  if aux_labels is None or target_labels is None:
    return None, None
  images.check_labels(aux_labels, n_aux, name="aux_labels")
  t, a = np.asarray(target_labels), np.asarray(aux_labels)
  if (t.dtype.kind in "US") != (a.dtype.kind in "US"):
    raise DataError(
      f"aux_labels and target_labels must both be integers or both names, got {a.dtype} "
      f"and {t.dtype}"
    )
  ids = images.encode_labels(np.concatenate([t, a]), name="labels")[0]
  return ids[len(t) :], ids[: len(t)]
