"""Input data: slicing a source's splits into the audit's roles, preprocessed.

Pixel and label rules are privjax/data/images.py's; the sources are privjax/data/sources.py's.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import types
import zlib

import numpy as np

from privjax.data import sources
from privjax.data.images import encode_labels, preprocess
from privjax.errors import ConfigError, DataError

__all__ = [
  "ALIGN",
  "AuditData",
  "Split",
  "batch_indices",
  "check_save_chips",
  "label_ids",
  "load",
  "load_digits",
  "parse_split",
  "resolve_roles",
  "validate",
]


@dataclasses.dataclass(frozen=True)
class Split:
  """One role's images and labels (labels may be None)."""

  images: np.ndarray  # [N, H, W, C] float32 in [0, 1]
  labels: np.ndarray | None  # [N] int
  sources: list | None = None  # [N] where each image came from (file, split[index])


@dataclasses.dataclass(frozen=True)
class AuditData:
  """The three disjoint roles: recognition-model training, attacker auxiliary, targets."""

  model_train: Split | None
  aux: Split
  targets: Split
  description: str
  label_names: list | None = None  # label id -> name, when the source's labels are strings


_SPEC = re.compile(r"^(\w+)(?:\[(-?\d*%?):(-?\d*%?)\])?$")


def parse_split(spec: str):
  """Parses "name" or "name[a:b]" (a, b: counts or percentages, either may be empty)."""
  m = _SPEC.match(str(spec).replace(" ", ""))
  if not m:
    raise ConfigError(f"split spec must look like 'train' or 'train[10%:60%]', got {spec!r}")
  return m.group(1), m.group(2) or "", m.group(3) or ""


def _bound(text: str, n: int, default: int) -> int:
  if not text:
    return default
  v = round(float(text[:-1]) * n / 100) if text.endswith("%") else int(text)
  return min(max(v + n if v < 0 else v, 0), n)


def resolve_roles(specs: dict, sizes, seed: int) -> dict:
  """Maps each role's split spec to (split name, indices), checking the roles are disjoint.

  `sizes(name)` gives a split's size (KeyError if there is none). Each split is
  shuffled once with `seed` before slicing, so a slice is a random
  subset; roles that slice the same split must not overlap.
  """
  resolved, ranges = {}, {}
  for role, spec in specs.items():
    name, a, b = parse_split(spec)
    try:
      n = sizes(name)
    except KeyError:
      raise ConfigError(f"split {name!r} (config.data.{role}_split) not found") from None
    lo, hi = _bound(a, n, 0), _bound(b, n, n)
    if hi <= lo:
      raise ConfigError(f"config.data.{role}_split={spec!r} selects no examples of {n}")
    for other, (oname, olo, ohi) in ranges.items():
      if oname == name and lo < ohi and olo < hi:
        raise ConfigError(
          f"config.data.{role}_split={spec!r} overlaps {other}_split={specs[other]!r}: the "
          "roles must be disjoint"
        )
    ranges[role] = (name, lo, hi)
    perm = np.random.default_rng((seed, zlib.crc32(name.encode()))).permutation(n)
    resolved[role] = (name, np.sort(perm[lo:hi]))
  return resolved


def _scalar(v):
  if isinstance(v, np.ndarray) and v.size != 1:
    raise DataError(f"each label must be one value (an id or a name), got shape {v.shape}")
  v = v.item() if isinstance(v, np.ndarray | np.generic) else v
  return v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v


def label_ids(raw_by_role: dict) -> tuple[dict, list | None]:
  """Maps raw labels (ints or strings, any role) to consistent int ids; names for strings."""
  if any(v is None for v in raw_by_role.values()):
    return {role: None for role in raw_by_role}, None
  clean = {r: [_scalar(v) for v in vs] for r, vs in raw_by_role.items()}
  values = [v for vs in clean.values() for v in vs]
  if not (all(isinstance(v, int) for v in values) or all(isinstance(v, str) for v in values)):
    kinds = sorted({type(v).__name__ for v in values})
    raise DataError(f"labels must be all integers or all strings (identity names), got {kinds}")
  ids, names = encode_labels(np.asarray(values), name="labels")
  ends = np.cumsum([len(vs) for vs in clean.values()])[:-1]
  return dict(zip(clean, np.split(ids, ends), strict=True)), names


# config.data.align: "" (as they are), "dlib" (a photo's one face), "dlib_largest" (its
# largest face when it shows several).
ALIGN = ("", "dlib", "dlib_largest")


def validate(d) -> None:
  """Checks config.data's preprocessing fields; raises ConfigError naming the bad one."""
  align = d.get("align", "")
  if align not in ALIGN:
    raise ConfigError(f"config.data.align must be one of {list(ALIGN)}, got {align!r}")
  if align and not sources.aligns(d.source):
    raise ConfigError(
      f"config.data.align={align!r} aligns face photos of a folder source, got data.source="
      f"{d.source!r}"
    )

  def whole(name, ok):
    v = d[name]
    if not (isinstance(v, int) and not isinstance(v, bool) and ok(v)):
      raise ConfigError(f"config.data.{name} must be {ok.__doc__}, got {v!r}")

  def nonnegative(v):
    """an integer >= 0"""
    return v >= 0

  def channel_count(v):
    """0 (keep), 1 or 3"""
    return v in (0, 1, 3)

  whole("image_size", nonnegative)
  whole("channels", channel_count)
  whole("split_seed", nonnegative)
  f = d.crop_fraction
  if not (isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1):
    raise ConfigError(f"config.data.crop_fraction must be a number in (0, 1], got {f!r}")
  check_save_chips(d.get("save_chips", ""))


def check_save_chips(path, *, workdir: str | None = None) -> str:
  """`config.data.save_chips` checked before any work: "" (no chips written) or the
  absolute folder the aligned face chips go to, which exists as a folder or can be made,
  is writable, and lies outside the workdir (privjax writes only its own files there, and
  a folder of chips in a new workdir would make it refuse its own workdir).

  Reads only. Raises ConfigError naming the folder.
  """
  if path is None or path == "":
    return ""
  if not isinstance(path, str) or not path.strip():
    raise ConfigError(f"config.data.save_chips must be a folder path or '', got {path!r}")
  folder = os.path.abspath(os.path.expanduser(path))
  if os.path.lexists(folder) and not os.path.isdir(folder):
    raise ConfigError(
      f"config.data.save_chips must be a folder to write the face chips into, got an "
      f"existing file: {folder}"
    )
  if workdir is not None:
    wd = os.path.realpath(os.path.abspath(os.path.expanduser(workdir)))
    real = os.path.realpath(folder)
    if real == wd or real.startswith(wd + os.sep):
      raise ConfigError(
        f"config.data.save_chips={path!r} is inside the workdir {wd}, which holds only "
        "privjax's own files: name a folder outside it (e.g. beside it)"
      )
  existing = folder
  while not os.path.isdir(existing):  # the deepest folder that exists: the chips go below it
    parent = os.path.dirname(existing)
    if os.path.lexists(existing) or parent == existing:  # a file on the way
      raise ConfigError(
        f"config.data.save_chips={path!r} cannot be made: {existing} is not a folder"
      )
    existing = parent
  try:  # (a file that is gone once closed: nothing is left behind)
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise ConfigError(
      f"config.data.save_chips={path!r} is not writable: cannot create a file in {existing} "
      f"({e.strerror or e})"
    ) from None
  return folder


def load(d) -> AuditData | sources.Precomputed:
  """Loads `d` (config.data): the three role splits, preprocessed, or stored features."""
  validate(d)
  splits = sources.open_source(d)
  if isinstance(splits, sources.Precomputed):
    return dataclasses.replace(
      splits,
      aux_images=preprocess(list(splits.aux_images), d, name="aux_images"),
      target_images=preprocess(list(splits.target_images), d, name="target_images"),
    )
  specs = {"model_train": d.model_train_split, "aux": d.aux_split, "target": d.target_split}
  if not d.model_train_split:
    del specs["model_train"]
  roles = resolve_roles(
    specs, lambda name: sources.split_of(splits, name, d.source).size, d.split_seed
  )
  images, raw_labels, names = {}, {}, {}
  for role, (name, idx) in roles.items():
    raw, labels = sources.split_of(splits, name, d.source).read(idx)
    images[role] = preprocess(raw, d, name=f"{role} images ({name})")
    raw_labels[role] = labels
    named = sources.split_of(splits, name, d.source).names
    names[role] = named(idx) if named else [f"{name}[{i}]" for i in idx]
  labels, label_names = label_ids(raw_labels)
  shape = images["target"].shape[1:]
  counts = ", ".join(f"{len(v)} {r}" for r, v in images.items())
  notes = sorted({sources.split_of(splits, n, d.source).note for n, _ in roles.values()} - {""})
  return AuditData(
    model_train=Split(images["model_train"], labels["model_train"])
    if "model_train" in images
    else None,
    aux=Split(images["aux"], labels["aux"], names["aux"]),
    targets=Split(images["target"], labels["target"], names["target"]),
    description=f"{d.source} {d.name or d.path or ''}".strip() + f": {counts} images "
    f"(disjoint; splits {specs}, split seed {d.split_seed}), preprocessed to {list(shape)}"
    + "".join(f"; {note}" for note in notes),
    label_names=label_names,
  )


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
  """Indices of training batch `step`: epochs of seeded permutations, a function of (seed, step).

  Examples are drawn as one stream of shuffled epochs; a batch that crosses an epoch
  boundary takes the rest of one epoch and the start of the next, so no example is
  dropped and resuming at any step reproduces the same batches.
  """
  stream = np.arange(step * batch_size, (step + 1) * batch_size)
  epochs, positions = np.divmod(stream, n)
  out = np.empty(batch_size, np.int64)
  for e in np.unique(epochs):
    perm = np.random.default_rng((seed, int(e))).permutation(n)
    sel = epochs == e
    out[sel] = perm[positions[sel]]
  return out


def load_digits(image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """All 1,797 sklearn digits as [N, size, size, 1] float32 in [0, 1], and labels [N]."""
  split = sources.digits()["all"]
  raw, labels = split.read(np.arange(split.size))
  d = types.SimpleNamespace(channels=0, center_crop=False, crop_fraction=1.0, image_size=image_size)
  return preprocess(raw, d, name="digits"), np.asarray(labels, np.int64)
