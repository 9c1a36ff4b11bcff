"""Where images come from: the embedded digits, TFDS datasets, image folders, .npz files.

Every source exposes named splits (`SplitSource`): a size and a `read(indices)` that
returns raw images (numpy [H, W, C], uint8 or float in [0, 1]) and raw labels (ints,
strings or None). privjax slices the splits into the audit's roles (data.py) and
preprocesses only the images it uses, so a large TFDS dataset is never decoded whole.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from privjax.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclasses.dataclass(frozen=True)
class SplitSource:
  """One named split: `read(indices) -> (list of [H, W, C] arrays, list of labels or None)`."""

  size: int
  read: Callable[[np.ndarray], tuple[list, list | None]]


@dataclasses.dataclass(frozen=True)
class Precomputed:
  """An .npz of stored feature vectors (a leaked database): no model to run."""

  aux_images: np.ndarray
  aux_features: np.ndarray
  target_images: np.ndarray
  target_features: np.ndarray
  target_labels: np.ndarray | None


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


def _read_image(path: str) -> np.ndarray:
  try:
    with Image.open(path) as im:
      im.load()
      if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
      return np.asarray(im)
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise DataError(f"cannot read image {path}: {e}") from e


def folder(path: str) -> dict[str, SplitSource]:
  """PNG/JPEG files under `path` as split "all"; one subfolder per identity gives labels."""
  if not path or not os.path.isdir(path):
    raise DataError(f"config.data.path must be a directory of images, got {path!r}")
  entries = sorted(os.listdir(path))
  subdirs = [e for e in entries if os.path.isdir(os.path.join(path, e))]
  files, labels = [], []
  if subdirs:
    for label, sub in enumerate(subdirs):
      for f in sorted(os.listdir(os.path.join(path, sub))):
        if f.lower().endswith(IMAGE_EXTENSIONS):
          files.append(os.path.join(path, sub, f))
          labels.append(label)
  else:
    files = [os.path.join(path, f) for f in entries if f.lower().endswith(IMAGE_EXTENSIONS)]
  if not files:
    raise DataError(f"no .png/.jpg/.jpeg images found in {path}")
  label_array = np.asarray(labels) if subdirs else None

  def read(idx):
    return [_read_image(files[i]) for i in idx], (
      None if label_array is None else list(label_array[idx])
    )

  return {"all": SplitSource(len(files), read)}


def _npz_images(arrays, key: str, path: str) -> np.ndarray:
  x = arrays[key]
  if x.ndim == 3:
    x = x[..., None]
  if np.issubdtype(x.dtype, np.integer):
    x = x.astype(np.float32) / 255.0
  return x


def npz(path: str):
  """An .npz of `images` (+ `labels`) as split "all", or stored features (`Precomputed`).

  Layouts: {images [N, H, W(, C)], labels [N] (optional)}, or {aux_images,
  aux_features, target_images, target_features, target_labels (optional)}. Integer
  images are scaled by 1/255.
  """
  if not path or not os.path.isfile(path):
    raise DataError(f"config.data.path must be an .npz file, got {path!r}")
  try:
    arrays = dict(np.load(path, allow_pickle=False))
  except (OSError, ValueError) as e:
    raise DataError(f"cannot read {path} as .npz: {e}") from e
  keys = sorted(arrays)
  if "aux_features" in arrays or "target_features" in arrays:
    need = ("aux_images", "aux_features", "target_images", "target_features")
    missing = [k for k in need if k not in arrays]
    if missing:
      raise DataError(f"{path}: the features layout needs {list(need)}; missing {missing}")
    for role in ("aux", "target"):
      n_img, n_feat = len(arrays[f"{role}_images"]), len(arrays[f"{role}_features"])
      if n_img != n_feat:
        raise DataError(
          f"{path}: {role}_images has {n_img} rows but {role}_features has {n_feat}; "
          "expected one feature vector per image"
        )
    return Precomputed(
      _npz_images(arrays, "aux_images", path),
      arrays["aux_features"],
      _npz_images(arrays, "target_images", path),
      arrays["target_features"],
      arrays.get("target_labels"),
    )
  if "images" not in arrays:
    raise DataError(
      f"{path} must hold 'images' (+ 'labels') or aux/target images and features; got {keys}"
    )
  images = _npz_images(arrays, "images", path)
  labels = arrays.get("labels")
  if labels is not None and len(labels) != len(images):
    raise DataError(f"{path}: labels has {len(labels)} rows, images has {len(images)}")
  return {"all": _array_split(images, labels)}
