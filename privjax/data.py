"""Input data: the embedded digits default, splits, and checks on user arrays.

Images everywhere in privjax are float32 arrays [N, H, W, C] in [0, 1].
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from privjax.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class Split:
  """One role's images and labels (labels may be None)."""

  images: np.ndarray  # [N, H, W, C] float32 in [0, 1]
  labels: np.ndarray | None  # [N] int


@dataclasses.dataclass(frozen=True)
class AuditData:
  """The three disjoint roles: recognition-model training, attacker auxiliary, targets."""

  model_train: Split | None
  aux: Split
  targets: Split
  description: str


def check_images(images, *, name: str) -> np.ndarray:
  """Returns `images` as float32 [N, H, W, C] in [0, 1], or raises DataError."""
  try:
    x = np.asarray(images, dtype=np.float32)
  except (TypeError, ValueError) as e:
    raise DataError(
      f"{name} must be a numeric array [N, H, W, C], got {type(images).__name__}"
    ) from e
  if x.ndim != 4:
    raise DataError(f"{name} must have rank 4 [N, H, W, C], got shape {x.shape}")
  if x.shape[0] == 0:
    raise DataError(f"{name} is empty: expected at least one image, got shape {x.shape}")
  if x.shape[-1] not in (1, 3):
    raise DataError(f"{name} must have 1 or 3 channels (last axis), got shape {x.shape}")
  if not np.all(np.isfinite(x)):
    raise DataError(f"{name} contains non-finite values (NaN or inf)")
  lo, hi = float(x.min()), float(x.max())
  if lo < 0.0 or hi > 1.0:
    raise DataError(f"{name} must be scaled to [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
  return x


def check_labels(labels, n: int, *, name: str) -> np.ndarray | None:
  """Returns labels as an int array [n] (or None), or raises DataError."""
  if labels is None:
    return None
  y = np.asarray(labels)
  if y.ndim != 1 or y.shape[0] != n:
    raise DataError(f"{name} must have shape [{n}] (one per image), got {y.shape}")
  return y


def resize(images: np.ndarray, size: int) -> np.ndarray:
  """Bilinear (antialiased) resize of [N, H, W, C] images to [N, size, size, C], kept in [0, 1]."""
  if images.shape[1:3] == (size, size):
    return images
  shape = (images.shape[0], size, size, images.shape[3])
  out = jax.image.resize(images, shape, "linear", antialias=True)
  return np.clip(np.asarray(out, np.float32), 0.0, 1.0)


def load_digits(image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """sklearn's 1,797 handwritten 8x8 digits as [N, size, size, 1] float32 in [0, 1], labels [N]."""
  from sklearn.datasets import load_digits as sk_load_digits

  d = sk_load_digits()
  images = (d.images.astype(np.float32) / 16.0)[..., None]
  return resize(images, image_size), d.target.astype(np.int32)


def split_three(n: int, fractions: tuple[float, float], seed: int):
  """Shuffles range(n) into three disjoint index sets of the given first two fractions."""
  a, b = fractions
  if not (0 < a and 0 < b and a + b < 1):
    raise ConfigError(f"split fractions must be positive and sum to less than 1, got {a} and {b}")
  perm = np.random.default_rng(seed).permutation(n)
  n_a, n_b = int(round(a * n)), int(round(b * n))
  return perm[:n_a], perm[n_a : n_a + n_b], perm[n_a + n_b :]


def load(config) -> AuditData:
  """Loads the dataset named by `config.data.source` and splits it into the three roles."""
  d = config.data
  if d.source != "digits":
    raise ConfigError(f"config.data.source must be 'digits', got {d.source!r}")
  if not isinstance(d.image_size, int) or d.image_size < 8:
    raise ConfigError(f"config.data.image_size must be an integer >= 8, got {d.image_size!r}")
  images, labels = load_digits(d.image_size)
  tr, aux, tgt = split_three(
    images.shape[0], (d.model_train_fraction, d.aux_fraction), d.split_seed
  )
  return AuditData(
    model_train=Split(images[tr], labels[tr]),
    aux=Split(images[aux], labels[aux]),
    targets=Split(images[tgt], labels[tgt]),
    description=(
      f"sklearn load_digits: {images.shape[0]} handwritten digits, 8x8 upsampled to "
      f"{d.image_size}x{d.image_size}; {len(tr)} model-train / {len(aux)} auxiliary / "
      f"{len(tgt)} target images (disjoint, split seed {d.split_seed})"
    ),
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
