"""Pixels and labels by privjax's one rule: checks, conversion to float [0, 1], preprocessing.

Images everywhere in privjax are float32 arrays [N, H, W, C] in [0, 1]. A leaf module:
the data sources, the role loader (privjax/data/splits.py) and `privjax.assess` all read images
through it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from privjax.errors import DataError

__all__ = [
  "center_crop",
  "check_images",
  "check_labels",
  "encode_labels",
  "preprocess",
  "resize",
  "to_channels",
  "to_unit_float",
]


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
  if x.dtype.kind == "b":
    return x.astype(np.float32)
  if x.dtype.kind in "iu":
    return _integers_to_unit(x, name=name, whole_set=whole_set)
  return _floats_to_unit(x, name=name)


def _integers_to_unit(x: np.ndarray, *, name: str, whole_set: bool) -> np.ndarray:
  """uint8 /255, uint16 /65535; any other integer dtype refused (to_unit_float's rule)."""
  kind = x.dtype.kind
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


def _floats_to_unit(x: np.ndarray, *, name: str) -> np.ndarray:
  """Floats taken as they are, finite and within [0, 1] (to_unit_float's rule)."""
  if not _float_like(x.dtype):
    raise DataError(
      f"{name} must hold numbers (uint8, uint16, bool, or float in [0, 1]), got dtype {x.dtype}"
    )
  if x.dtype.kind != "f":  # bfloat16 and friends: numpy computes on them as float32
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
