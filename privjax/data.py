"""Input data: checks, preprocessing, and slicing a source's splits into the audit's roles.

Images everywhere in privjax are float32 arrays [N, H, W, C] in [0, 1].
"""

from __future__ import annotations

import dataclasses
import re
import types
import zlib

import numpy as np
from PIL import Image

from privjax import sources
from privjax.errors import ConfigError, DataError


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


def _float_like(dtype: np.dtype) -> bool:
  """True for numpy floats and the ml_dtypes floats JAX uses (bfloat16, float8_*)."""
  return dtype.kind == "f" or (dtype.kind == "V" and dtype.name.startswith(("bfloat", "float")))


def to_unit_float(images, *, name: str, whole_set: bool = False) -> np.ndarray:
  """Returns `images` (any shape) as float32 in [0, 1] by privjax's one rule, or raises DataError.

  The rule, the same for `privjax.assess` (through `check_images`) and every source
  (npz, folder, tfds, digits):

    * bool: False -> 0.0, True -> 1.0 (a binary mask).
    * uint8: value / 255.
    * uint16: value / 65535 (16-bit images keep their full range; nothing is clipped).
    * any other integer dtype (int8 ... int64, uint32, uint64): refused, since its full
      scale is unknown (a 0/1 mask, 0-255 and 0-65535 data all look alike as int64).
      Cast to uint8, uint16, bool, or to float in [0, 1].
    * float (float16/32/64, bfloat16): taken as is; every value must be finite and
      within [0, 1] (never rescaled, never clipped).
    * anything else (strings, objects, complex numbers): refused.

  With `whole_set=True` (a whole set of images, as `assess` and the npz source get
  them) a uint8 set holding only the values 0 and 1 is refused too: read as /255 it
  would be near-black; store a binary mask as bool (or float 0/1).

  Args:
    images: an array or array-like of pixel values.
    name: what the images are, for the error message (an argument, a file, an npz key).
    whole_set: whether `images` is a whole set of images (enables the 0/1 uint8 check).

  Returns:
    float32 array of the same shape, values in [0, 1].
  """
  x = np.asarray(images)
  kind = x.dtype.kind
  if kind == "b":
    return x.astype(np.float32)
  if kind in "iu":
    scale = {("u", 1): 255.0, ("u", 2): 65535.0}.get((kind, x.dtype.itemsize))
    if scale is None:
      raise DataError(
        f"{name} has integer dtype {x.dtype}, whose full scale is unknown: expected uint8 "
        "(read as /255), uint16 (/65535), bool, or float in [0, 1]"
      )
    if whole_set and scale == 255.0 and x.size and int(x.max()) == 1:
      raise DataError(
        f"{name} is uint8 holding only 0 and 1, which reads as near-black (/255): expected "
        "0-255 uint8; store a binary mask as bool or float 0/1"
      )
    return x.astype(np.float32) / np.float32(scale)
  if not _float_like(x.dtype):
    raise DataError(
      f"{name} must hold numbers (uint8, uint16, bool, or float in [0, 1]), got dtype {x.dtype}"
    )
  if kind != "f":  # bfloat16 and friends: numpy computes on them as float32
    x = x.astype(np.float32)
  if not np.all(np.isfinite(x)):
    raise DataError(f"{name} contains non-finite values (NaN or inf)")
  if x.size:
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
      raise DataError(
        f"{name} must be scaled to [0, 1], got values in [{lo:.4g}, {hi:.4g}] (float images "
        "are taken as is; integers are read as uint8 /255 or uint16 /65535)"
      )
  return x.astype(np.float32, copy=False)


def check_images(images, *, name: str) -> np.ndarray:
  """Returns `images` as float32 [N, H, W, C] in [0, 1], or raises DataError.

  Pixel values are read by `to_unit_float`'s rule (uint8 /255, uint16 /65535, bool
  0/1, floats as is and within [0, 1]), the same rule every data source uses.
  """
  try:
    x = np.asarray(images)
  except (TypeError, ValueError) as e:
    raise DataError(
      f"{name} must be a numeric array [N, H, W, C], got {type(images).__name__}"
    ) from e
  if x.dtype == object:
    raise DataError(f"{name} must be a numeric array [N, H, W, C], got an object array")
  if x.ndim != 4:
    raise DataError(f"{name} must have rank 4 [N, H, W, C], got shape {x.shape}")
  if x.shape[0] == 0:
    raise DataError(f"{name} is empty: expected at least one image, got shape {x.shape}")
  if x.shape[-1] not in (1, 3):
    raise DataError(f"{name} must have 1 or 3 channels (last axis), got shape {x.shape}")
  return to_unit_float(x, name=name, whole_set=True)


def encode_labels(labels, *, name: str) -> tuple[np.ndarray, list | None]:
  """[N] integer or string labels -> (int64 ids [N], names or None), or raises DataError.

  Integers (bool counts as 0/1) are kept as ids. Strings (identity names, as str or
  bytes) become ids in sorted-name order, and the names are returned: the same
  mapping as identity subfolder names. Anything else (floats, objects) is refused.
  """
  y = np.asarray(labels)
  if y.dtype.kind in "biu":
    return y.astype(np.int64), None
  if y.dtype.kind in "US":
    text = np.char.decode(y, "utf-8", "backslashreplace") if y.dtype.kind == "S" else y
    names, ids = np.unique(text, return_inverse=True)
    return ids.astype(np.int64).reshape(y.shape), [str(n) for n in names]
  raise DataError(f"{name} must be integers or strings (identity names), got dtype {y.dtype}")


def check_labels(labels, n: int, *, name: str) -> np.ndarray | None:
  """Returns labels as int64 ids [n] (or None), or raises DataError.

  Integer labels are kept; string labels (identity names) become ids in sorted-name
  order (`encode_labels`).
  """
  if labels is None:
    return None
  y = np.asarray(labels)
  if y.ndim != 1 or y.shape[0] != n:
    raise DataError(f"{name} must have shape [{n}] (one per image), got {y.shape}")
  return encode_labels(y, name=name)[0]


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
  """[H, W, C] float -> [H, W, channels] (0 keeps C): ITU-R 601 luma or gray replicated."""
  if channels == 0 or x.shape[-1] == channels:
    return x
  if channels == 1:
    return (x[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
  return np.repeat(x[..., :1], 3, axis=-1)


def center_crop(x: np.ndarray, fraction: float) -> np.ndarray:
  """The centered square of side `fraction` x the shorter side of [H, W, C]."""
  h, w = x.shape[:2]
  side = max(1, int(round(min(h, w) * fraction)))
  top, left = (h - side) // 2, (w - side) // 2
  return x[top : top + side, left : left + side]


def resize(x: np.ndarray, size: int) -> np.ndarray:
  """Antialiased bilinear resize of [H, W, C] float to [size, size, C] (Pillow, per channel)."""
  if x.shape[:2] == (size, size):
    return x
  planes = [
    np.asarray(Image.fromarray(x[..., c], mode="F").resize((size, size), Image.BILINEAR))
    for c in range(x.shape[-1])
  ]
  return np.clip(np.stack(planes, axis=-1), 0.0, 1.0)


def preprocess(raw: list, d, *, name: str) -> np.ndarray:
  """Raw images ([H, W(, C)]) -> float32 [N, S, S, C] in [0, 1].

  Pixel values are read by `to_unit_float`'s rule (uint8 /255, uint16 /65535, bool
  0/1, floats as is and within [0, 1]); a fourth channel (alpha) is dropped. Per
  `config.data`: channels (1, 3, or 0 to keep), center_crop (to the centered
  square of crop_fraction x the shorter side) and image_size (0 keeps the size; then
  every image must already have the same size).
  """
  out = []
  for i, img in enumerate(raw):
    x = np.asarray(img)
    if x.ndim == 2:
      x = x[..., None]
    if x.ndim != 3 or x.shape[-1] not in (1, 3, 4):
      raise DataError(f"{name} image {i} must be [H, W, C] with 1, 3 or 4 channels, got {x.shape}")
    x = to_unit_float(x, name=f"{name} image {i}")  # before resizing, which would clip
    x = to_channels(x[..., :3] if x.shape[-1] == 4 else x, d.channels)
    if d.center_crop:
      x = center_crop(x, d.crop_fraction)
    if d.image_size:
      x = resize(x, d.image_size)
    out.append(x)
  shapes = sorted({x.shape for x in out})
  if len(shapes) > 1:
    raise DataError(
      f"{name} images have different sizes {shapes[:3]}; set config.data.image_size to resize them"
    )
  return check_images(np.stack(out), name=name)


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


def _label_ids(raw_by_role: dict) -> tuple[dict, list | None]:
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


def validate(d) -> None:
  """Checks config.data's preprocessing fields; raises ConfigError naming the bad one."""

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


def load(config) -> AuditData | sources.Precomputed:
  """Loads `config.data`: the three role splits, preprocessed, or stored features."""
  d = config.data
  validate(d)
  if d.source == "digits":
    splits = sources.digits()
  elif d.source == "tfds":
    splits = sources.tfds_splits(d)
  elif d.source == "folder":
    splits = sources.folder(d.path)
  elif d.source == "npz":
    splits = sources.npz(d.path)
  else:
    raise ConfigError(
      f"config.data.source must be one of 'digits', 'tfds', 'folder', 'npz', got {d.source!r}"
    )
  if isinstance(splits, sources.Precomputed):
    return dataclasses.replace(
      splits,
      aux_images=preprocess(list(splits.aux_images), d, name="aux_images"),
      target_images=preprocess(list(splits.target_images), d, name="target_images"),
    )
  specs = {"model_train": d.model_train_split, "aux": d.aux_split, "target": d.target_split}
  if not d.model_train_split:
    del specs["model_train"]
  roles = resolve_roles(specs, lambda name: splits[name].size, d.split_seed)
  images, raw_labels, names = {}, {}, {}
  for role, (name, idx) in roles.items():
    raw, labels = splits[name].read(idx)
    images[role] = preprocess(raw, d, name=f"{role} images ({name})")
    raw_labels[role] = labels
    named = splits[name].names
    names[role] = named(idx) if named else [f"{name}[{i}]" for i in idx]
  labels, label_names = _label_ids(raw_labels)
  shape = images["target"].shape[1:]
  counts = ", ".join(f"{len(v)} {r}" for r, v in images.items())
  return AuditData(
    model_train=Split(images["model_train"], labels["model_train"])
    if "model_train" in images
    else None,
    aux=Split(images["aux"], labels["aux"], names["aux"]),
    targets=Split(images["target"], labels["target"], names["target"]),
    description=f"{d.source} {d.name or d.path or ''}".strip() + f": {counts} images "
    f"(disjoint; splits {specs}, split seed {d.split_seed}), preprocessed to {list(shape)}",
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
