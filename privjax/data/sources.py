"""Where images come from: the embedded digits, TFDS datasets, image folders, .npz files.

Every source exposes named splits (`SplitSource`): a size and a `read(indices)` that
returns raw images (numpy [H, W(, C)]) and raw labels (ints, strings or None). privjax
slices the splits into the audit's roles (data.py) and preprocesses only the images it
uses, so a large TFDS dataset is never decoded whole.

Sources are plug-ins (`SOURCES`, privjax/registry.py): `config.data.source` names a
built-in ("digits", "tfds", "folder", "npz") or a user's "package.module:function", a
function of `config.data` returning {split name: SplitSource} (or `Precomputed`).

Pixel values follow one rule, `images.to_unit_float` (uint8 /255, uint16 /65535, bool
0/1, floats as is and within [0, 1], other integers refused), the same rule as
`privjax.assess`: every source's images pass through `images.preprocess`, which applies
it, and the folder and npz sources apply it first themselves, so that an error names
the file or the npz key.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import stat
import struct
import warnings
import zipfile
from collections.abc import Callable

import numpy as np
from absl import logging
from PIL import Image, ImageOps, UnidentifiedImageError

from privjax.data import align as align_lib
from privjax.data.images import to_unit_float
from privjax.errors import ConfigError, DataError
from privjax.registry import Registry, call_user
from privjax.runtime import workdir

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

# The most pixels (width x height) one image file may have. Checked from the file's
# header before anything is decoded, so a small file claiming a huge size (a
# decompression bomb) costs nothing. 50 megapixels is far above any face image.
MAX_IMAGE_PIXELS = 50_000_000


@dataclasses.dataclass(frozen=True)
class SplitSource:
  """One named split: `read(indices) -> (list of [H, W, C] arrays, list of labels or None)`.

  `names(indices)`, where given, says where each example came from (a file's path
  relative to the folder); otherwise an example is named by its split and index
  ("all[12]", "train[4031]": the npz row, the TFDS record id).
  """

  size: int
  read: Callable[[np.ndarray], tuple[list, list | None]]
  names: Callable[[np.ndarray], list] | None = None
  note: str = ""  # what the report's data description adds (photos skipped by alignment)


@dataclasses.dataclass(frozen=True)
class Precomputed:
  """An .npz of stored feature vectors (a leaked database): no model to run."""

  aux_images: np.ndarray
  aux_features: np.ndarray
  target_images: np.ndarray
  target_features: np.ndarray
  target_labels: np.ndarray | None
  aux_labels: np.ndarray | None = None  # what the builtin evaluator trains on


def _array_split(images: np.ndarray, labels: np.ndarray | None) -> SplitSource:
  def read(idx):
    return list(images[idx]), None if labels is None else list(labels[idx])

  return SplitSource(images.shape[0], read)


def digits() -> dict[str, SplitSource]:
  """sklearn's 1,797 handwritten 8x8 digits (values 0-16 scaled to [0, 1]) as split "all"."""
  from sklearn.datasets import load_digits

  d = load_digits()
  return {"all": _array_split((d.images.astype(np.float32) / 16.0)[..., None], d.target)}


def _get_key(example, path: str, *, dataset: str):
  value = example
  for part in path.split("/"):
    if not isinstance(value, dict) or part not in value:
      keys = sorted(example) if isinstance(example, dict) else type(example).__name__
      raise ConfigError(f"TFDS dataset {dataset!r} has no feature {path!r}; features: {keys}")
    value = value[part]
  return value


def tfds_splits(d) -> dict[str, SplitSource]:
  """A TFDS dataset's splits, read without TensorFlow through `tfds.data_source`.

  Datasets prepared as array_record are read directly, one split at a time as the
  roles ask for it. Datasets prepared as tfrecord need TensorFlow (`pip install
  'privjax[tf]'`) and are read with `builder.as_dataset`. A dataset not prepared in
  `data.data_dir` is an error naming the command that prepares it, unless
  `data.download=True`.
  """
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ConfigError(
      "config.data.source='tfds' needs tensorflow-datasets: pip install tensorflow-datasets "
      "importlib_resources"
    ) from e
  data_dir = d.data_dir or None
  try:
    builder = tfds.builder(d.name, data_dir=data_dir)
  except Exception as e:  # tfds raises several types for unknown names
    raise ConfigError(f"unknown TFDS dataset {d.name!r}: {str(e).splitlines()[0]}") from e
  prepared = builder.is_prepared()
  if prepared and "tfrecord" in str(builder.info.file_format).lower():
    return _tfds_tfrecord_splits(tfds, builder, d)
  where = data_dir or "~/tensorflow_datasets"

  def open_split(split: str) -> SplitSource:
    try:
      return _tfds_source_split(tfds, d, split, data_dir)
    except (NotImplementedError, FileNotFoundError, AssertionError) as e:
      if prepared:
        raise DataError(f"TFDS dataset {d.name!r} in {where}: {str(e).splitlines()[0]}") from e
      raise DataError(
        f"TFDS dataset {d.name!r} is not prepared in {where}; prepare it with "
        f"`tfds build {d.name} --data_dir={where} --file_format=array_record` (or set "
        "--config.data.download=True where a network is available)"
      ) from e
    except ValueError as e:  # unknown split name
      raise ConfigError(f"TFDS dataset {d.name!r}: {str(e).splitlines()[0]}") from e

  return _LazySplits(open_split)


class _LazySplits(dict):
  """A dict of splits that opens each TFDS split on first access."""

  def __init__(self, open_split):
    super().__init__()
    self._open = open_split

  def __missing__(self, split):
    self[split] = self._open(split)
    return self[split]


def _tfds_source_split(tfds, d, split: str, data_dir) -> SplitSource:
  source = tfds.data_source(d.name, split=split, data_dir=data_dir, download=bool(d.download))

  def read(idx):
    examples = [source[int(i)] for i in idx]
    images = [np.asarray(_get_key(e, d.image_key, dataset=d.name)) for e in examples]
    if not d.label_key:
      return images, None
    return images, [_get_key(e, d.label_key, dataset=d.name) for e in examples]

  return SplitSource(len(source), read)


def _tfds_tfrecord_splits(tfds, builder, d) -> dict[str, SplitSource]:
  try:
    import tensorflow  # noqa: F401
  except ImportError as e:
    raise ConfigError(
      f"TFDS dataset {d.name!r} is prepared as tfrecord, which needs TensorFlow: "
      "pip install 'privjax[tf]' (or rebuild it with --file_format=array_record)"
    ) from e
  splits = {}
  for name in builder.info.splits.keys():
    examples = list(tfds.as_numpy(builder.as_dataset(split=name)))
    images = np.stack([np.asarray(_get_key(e, d.image_key, dataset=d.name)) for e in examples])
    labels = None
    if d.label_key:
      labels = np.asarray([_get_key(e, d.label_key, dataset=d.name) for e in examples])
    splits[name] = _array_split(images, labels)
  return splits


# Pillow modes privjax reads -> the mode converted to first (None: read as stored). A
# 2nd channel of LA and a 4th of RGBA/RGBX are dropped afterwards (alpha is dropped,
# not composited: the stored colour is used even under transparent pixels).
_PIL_MODES = {
  "1": None,  # bilevel: bool, read as 0/1
  "L": None,  # 8-bit gray: /255
  "LA": None,  # 8-bit gray + alpha
  "P": "RGBA",  # palette (with or without a transparent entry): its colours
  "PA": "RGBA",
  "RGB": None,
  "RGBA": None,
  "RGBX": None,
  "CMYK": "RGB",  # Pillow's conversion, without an ICC profile
  "YCbCr": "RGB",
  "I;16": None,  # 16-bit gray (16-bit PNG): /65535
  "I;16L": None,
  "I;16B": None,
  "I;16N": None,
  "I": None,  # 32-bit int: only a 16-bit PNG decoded by an older Pillow is read
  "F": None,  # 32-bit float: taken as is, must be within [0, 1]
}


def image_array(im: Image.Image, *, name: str) -> np.ndarray:
  """A decoded Pillow image -> float32 [H, W, 1 or 3] in [0, 1], or raises DataError.

  Modes 1, L, LA, P, PA, RGB, RGBA, RGBX, CMYK, YCbCr, I;16 (16-bit), and F are read;
  alpha is dropped (not composited); 16-bit values are divided by 65535; float values
  must already be within [0, 1]. Mode I (32-bit integers) is refused, its full scale
  being unknown, except from a PNG (where it can only hold 16-bit values). Other modes
  are refused. `name` (the file) goes into the error message.
  """
  mode = im.mode
  if mode not in _PIL_MODES:
    raise DataError(
      f"{name}: Pillow mode {mode!r} is not read; expected one of {', '.join(_PIL_MODES)}"
    )
  if _PIL_MODES[mode]:
    im = im.convert(_PIL_MODES[mode])
  x = np.asarray(im)
  if mode == "I":
    if im.format != "PNG":
      raise DataError(
        f"{name}: 32-bit integer pixels (Pillow mode 'I') have no known full scale; expected "
        "8-bit, 16-bit, or float in [0, 1]"
      )
    if x.size and (x.min() < 0 or x.max() > 65535):
      raise DataError(f"{name}: 16-bit PNG values outside [0, 65535]")
    x = x.astype(np.uint16)
  if x.ndim == 2:
    x = x[..., None]
  if x.shape[-1] in (2, 4):  # LA, RGBA, RGBX: drop the alpha (or padding) channel
    x = x[..., :-1]
  return to_unit_float(x, name=name)


def _too_large(path: str, pixels: int, size: str = "") -> DataError:
  return DataError(
    f"image {path} has {size}{pixels:,} pixels, over the limit of {MAX_IMAGE_PIXELS:,} per "
    "image (sources.MAX_IMAGE_PIXELS; a decompression bomb?)"
  )


def _read_image(path: str) -> np.ndarray:
  """One image file -> float32 [H, W, 1 or 3] in [0, 1] (`image_array`), EXIF orientation applied.

  The size is checked against MAX_IMAGE_PIXELS from the header, before decoding.
  """
  kind = _kind(path)
  if kind != "file":
    raise DataError(f"cannot read image {path}: it is a {kind}, not a regular file")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as im:  # reads the header only
        w, h = im.size
        if w * h > MAX_IMAGE_PIXELS:
          raise _too_large(path, w * h, f"{w}x{h} = ")
        ImageOps.exif_transpose(im, in_place=True)  # decodes; turns as the camera was held
        return image_array(im, name=f"image {path}")
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    m = re.search(r"\((\d+) pixels\)", str(e))
    if m:
      raise _too_large(path, int(m.group(1))) from e
    raise DataError(f"image {path} is too large: {e}") from e
  except DataError:
    raise
  except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error) as e:
    raise DataError(f"cannot read image {path}: {e}") from e


def _kind(path: str) -> str:
  """What `path` is: "file" (regular, after symlinks), "directory", "FIFO", "socket", and so on."""
  try:
    mode = os.stat(path).st_mode
  except FileNotFoundError:
    return "dangling symlink" if os.path.islink(path) else "missing file"
  except OSError as e:
    return f"unreadable entry ({e.strerror})"
  if stat.S_ISREG(mode):
    return "file"
  if stat.S_ISDIR(mode):
    return "directory"
  if stat.S_ISFIFO(mode):
    return "FIFO"
  if stat.S_ISSOCK(mode):
    return "socket"
  if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
    return "device"
  return "special file"


def _list(directory: str) -> list[tuple[str, str]]:
  """Sorted (path, kind) of the entries of `directory` (kinds as `_kind`), nothing opened."""
  try:
    with os.scandir(directory) as it:
      entries = sorted(it, key=lambda e: e.name)
  except OSError as e:
    raise DataError(f"cannot list image folder {directory}: {e.strerror or e}") from e
  out = []
  for e in entries:  # DirEntry answers from the directory listing where it can
    try:
      kind = "file" if e.is_file() else "directory" if e.is_dir() else _kind(e.path)
    except OSError:
      kind = _kind(e.path)
    out.append((e.path, kind))
  return out


def _skip(path: str, kind: str) -> None:
  logging.warning("image folder: skipping %s (a %s, not a regular file)", path, kind)


def folder(path: str, align: str = "", save_chips: str = "") -> dict[str, SplitSource]:
  """PNG/JPEG files under `path` as split "all"; one subfolder per identity gives labels.

  With subfolders, each subfolder's name is an identity (labels are the names, mapped
  to ids in sorted order by data.py) and only the images inside them are read.
  Anything that is not a regular file (FIFOs, sockets, devices, dangling symlinks,
  and directories inside an identity folder) is skipped with a warning, never opened.
  Images are read by `_read_image`. `align="dlib"`: every photo is read now and replaced
  by its face chip as dlib aligns it (`align.Aligner`); a photo with no face or several
  ("dlib_largest": no face; of several, its largest is kept and counted) is skipped and
  counted (never cropped wrong), and the chips used are written as PNG
  files under `save_chips` (same relative paths) when it is set.
  """
  if not path or not os.path.isdir(path):
    raise DataError(f"config.data.path must be a directory of images, got {path!r}")
  is_image = lambda p: p.lower().endswith(IMAGE_EXTENSIONS)
  top = _list(path)
  subdirs = [p for p, kind in top if kind == "directory"]
  for p, kind in top:
    if kind not in ("file", "directory"):
      _skip(p, kind)
  files, labels = [], []
  if subdirs:
    stray = [p for p, kind in top if kind == "file" and is_image(p)]
    if stray:
      logging.warning(
        "image folder %s: ignoring %d images at its top level (e.g. %s): with identity "
        "subfolders, only the images inside them are read",
        path,
        len(stray),
        stray[0],
      )
    for sub in subdirs:
      for p, kind in _list(sub):
        if kind != "file":
          _skip(p, kind)
        elif is_image(p):
          files.append(p)
          labels.append(os.path.basename(sub))
  else:
    files = [p for p, kind in top if kind == "file" and is_image(p)]
  if not files:
    raise DataError(f"no .png/.jpg/.jpeg images found in {path}")
  if align:
    return {"all": _aligned(path, files, labels if subdirs else None, align, save_chips)}

  def read(idx):
    return [_read_image(files[i]) for i in idx], ([labels[i] for i in idx] if subdirs else None)

  def names(idx):
    return [os.path.relpath(files[i], path) for i in idx]

  return {"all": SplitSource(len(files), read, names)}


def _aligned(path, files, labels, align: str, save_chips: str) -> SplitSource:
  """The folder's photos as aligned face chips (see `folder`)."""
  if align not in ("dlib", "dlib_largest"):
    raise ConfigError(f"config.data.align must be '', 'dlib' or 'dlib_largest', got {align!r}")
  aligner = align_lib.Aligner()  # (dlib: the faces extra)
  largest = align == "dlib_largest"
  chips, kept, skipped, several = [], [], {0: [], 2: []}, 0
  for i, file in enumerate(files):
    chip, found = aligner.chip(_read_image(file), largest=largest)
    if chip is None:
      skipped[min(found, 2)].append(os.path.relpath(file, path))
      continue
    several += found > 1
    chips.append(chip)
    kept.append(i)
    if save_chips:  # (checked with the workdir before any work: data.check_save_chips)
      relative = os.path.splitext(os.path.relpath(file, path))[0] + ".png"
      png = io.BytesIO()
      Image.fromarray(chip).save(png, format="PNG")
      workdir.atomic_write(os.path.join(os.path.expanduser(save_chips), relative), png.getvalue())
  note = (
    f"aligned as dlib does ({len(chips)} of {len(files)} photos; skipped {len(skipped[0])} "
    + (
      f"with no face, {several} with several faces kept by their largest"
      if largest
      else f"with no face, {len(skipped[2])} with several"
    )
    + (f"; chips saved in {save_chips}" if save_chips else "")
    + ")"
  )
  keep = " (config.data.align='dlib_largest' keeps each one's largest face)"
  for reason, names in (("no face", skipped[0]), ("several faces", skipped[2])):
    if names:
      logging.warning(
        "face alignment: skipped %d photos with %s, e.g. %s%s",
        len(names),
        reason,
        names[0],
        keep if reason == "several faces" else "",
      )
  if not chips:
    raise DataError(
      f"no photo in {path} shows "
      + ("a face" if largest else "exactly one face")
      + " that dlib's detector finds"
      + ("" if largest or not skipped[2] else keep)
    )
  kept_files = [files[i] for i in kept]
  kept_labels = None if labels is None else [labels[i] for i in kept]

  def read(idx):
    images = [chips[i].astype(np.float32) / 255.0 for i in idx]
    return images, (None if kept_labels is None else [kept_labels[i] for i in idx])

  def names(idx):
    return [os.path.relpath(kept_files[i], path) for i in idx]

  return SplitSource(len(chips), read, names, note)


# What each .npz key must hold: (allowed ranks, dtype kinds, the expectation in words).
# Kinds: b bool, i/u integers, f floats, U/S strings. Object arrays are never accepted
# (np.load(..., allow_pickle=False): nothing is unpickled).
_IMAGES = ((3, 4), "biuf", "[N, H, W] or [N, H, W, C] of uint8, uint16, bool or float")
_LABELS = ((1,), "biuUS", "[N] integers or strings")
_FEATURES = ((2,), "iuf", "[N, D] numbers")
_NPZ_KEYS = {
  "images": _IMAGES,
  "labels": _LABELS,
  "aux_images": _IMAGES,
  "target_images": _IMAGES,
  "aux_features": _FEATURES,
  "target_features": _FEATURES,
  "target_labels": _LABELS,
  "aux_labels": _LABELS,
}


def _load_npz(path: str) -> dict[str, np.ndarray]:
  """Every array of the .npz at `path`, never unpickling; raises DataError naming the key."""
  with open(path, "rb") as f:
    magic = f.read(6)
  if magic.startswith(b"\x93NUMPY"):
    raise DataError(
      f"{path} is a single .npy array: expected an .npz of named arrays (np.savez(path, "
      "images=..., labels=...))"
    )
  if not magic.startswith(b"PK"):
    raise DataError(f"{path} is not an .npz file (no zip header): expected what np.savez writes")
  try:
    npz_file = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(f"cannot read {path} as .npz: {e}") from e
  arrays = {}
  with npz_file:
    for key in npz_file.files:
      try:
        arrays[key] = npz_file[key]
      except ValueError as e:
        if "allow_pickle" in str(e):
          raise DataError(
            f"{path}: {key} is an object array (pickled Python objects), which is never "
            "unpickled: expected numbers or strings"
          ) from e
        raise DataError(f"cannot read {path}: array {key!r}: {e}") from e
      except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path}: array {key!r}: {e}") from e
  for key, x in arrays.items():
    if key in _NPZ_KEYS:
      ranks, kinds, expected = _NPZ_KEYS[key]
      if x.ndim not in ranks or x.dtype.kind not in kinds:
        raise DataError(
          f"{path}: {key} must be {expected}, got dtype {x.dtype} with shape {x.shape}"
        )
  return arrays


def _npz_images(arrays, key: str, path: str) -> np.ndarray:
  x = to_unit_float(arrays[key], name=f"{path}: {key}", whole_set=True)
  return x[..., None] if x.ndim == 3 else x


def npz(path: str):
  """An .npz of `images` (+ `labels`) as split "all", or stored features (`Precomputed`).

  Layouts: {images [N, H, W(, C)], labels [N] (optional)}, or {aux_images,
  aux_features, target_images, target_features, target_labels and aux_labels
  (optional: identities; aux_labels train the builtin evaluator)}. Images are
  read by `images.to_unit_float`'s rule (uint8 /255, uint16 /65535, bool 0/1, floats as
  is and within [0, 1]). Labels are integers or strings (identity names, mapped to ids
  like folder names). Each key's rank and dtype is checked; object arrays are refused,
  never unpickled.
  """
  if not path:
    raise DataError("config.data.path must name an .npz file (--config.data.path=data.npz)")
  if not os.path.exists(path):
    raise DataError(f"config.data.path: no such file {path!r}")
  if not os.path.isfile(path):
    raise DataError(f"config.data.path must be an .npz file, got the directory {path!r}")
  arrays = _load_npz(path)
  keys = sorted(arrays)
  if "aux_features" in arrays or "target_features" in arrays:
    need = ("aux_images", "aux_features", "target_images", "target_features")
    missing = [k for k in need if k not in arrays]
    if missing:
      raise DataError(f"{path}: the features layout needs {list(need)}; missing {missing}")
    counts = {k: len(arrays[k]) for k in (*need, "target_labels", "aux_labels") if k in arrays}
    for role in ("aux", "target"):
      n_img, n_feat = counts[f"{role}_images"], counts[f"{role}_features"]
      if n_img != n_feat:
        raise DataError(
          f"{path}: {role}_images has {n_img} rows but {role}_features has {n_feat}; "
          "expected one feature vector per image"
        )
    for role in ("aux", "target"):
      if counts.get(f"{role}_labels", counts[f"{role}_images"]) != counts[f"{role}_images"]:
        raise DataError(
          f"{path}: {role}_labels has {counts[f'{role}_labels']} rows, {role}_images has "
          f"{counts[f'{role}_images']}"
        )
    return Precomputed(
      _npz_images(arrays, "aux_images", path),
      arrays["aux_features"],
      _npz_images(arrays, "target_images", path),
      arrays["target_features"],
      arrays.get("target_labels"),
      arrays.get("aux_labels"),
    )
  if "images" not in arrays:
    raise DataError(
      f"{path} must hold 'images' (+ 'labels') or aux/target images and features; got {keys}"
    )
  labels = arrays.get("labels")
  if labels is not None and len(labels) != len(arrays["images"]):
    raise DataError(f"{path}: labels has {len(labels)} rows, images has {len(arrays['images'])}")
  return {"all": _array_split(_npz_images(arrays, "images", path), labels)}


SOURCES = Registry("data source")


@SOURCES.register("digits")
def _digits(d) -> dict[str, SplitSource]:
  del d
  return digits()


@SOURCES.register("tfds")
def _tfds(d) -> dict[str, SplitSource]:
  return tfds_splits(d)


@SOURCES.register("folder", aligns=True)
def _folder(d) -> dict[str, SplitSource]:
  return folder(d.path, d.get("align", ""), d.get("save_chips", ""))


@SOURCES.register("npz")
def _npz(d):
  return npz(d.path)


def aligns(source) -> bool:
  """Whether the source named `source` (config.data.source) aligns face photos
  (config.data.align), as it declared when it registered; a user's source never does."""
  return (
    isinstance(source, str)
    and source in SOURCES
    and bool(SOURCES.get(source, field="data.source").declared.get("aligns"))
  )


def open_source(d) -> dict[str, SplitSource] | Precomputed:
  """The splits of `config.data.source` (`d` is config.data), checked at the seam."""
  found = SOURCES.get(d.source, field="data.source")
  splits = call_user(found, "data source", DataError, d)
  if isinstance(splits, Precomputed):
    return splits
  if not isinstance(splits, dict):  # (its splits may open on demand: checked when used)
    raise DataError(
      f"data source {d.source!r} must return a dict of split name -> "
      f"privjax.data.sources.SplitSource, got {type(splits).__name__}"
    )
  return splits


def split_of(splits: dict, name: str, source: str) -> SplitSource:
  """`splits[name]` (KeyError when there is none), checked to be a SplitSource."""
  split = splits[name]
  if not isinstance(split, SplitSource):
    raise DataError(
      f"data source {source!r} must give privjax.data.sources.SplitSource splits, got "
      f"{type(split).__name__} for split {name!r}"
    )
  return split
