"""Training the decoder attacker's inverse model: features -> image, early-stopped.

The decoder (privjax/attacks/decoder_net.py) is trained by the generic loop
(privjax/runtime/loop.py) with AdamW (warmup and cosine decay) on a reconstruction loss
until its loss on a held-out part of the auxiliary set stops improving (early stopping
with patience), bounded by `num_steps`; the best params by validation loss are returned,
and how the run converged goes into the report. `Settings` is exactly what it reads.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from privjax.attacks.decoder_net import Decoder
from privjax.data.splits import batch_indices
from privjax.runtime import loop, parallel
from privjax.scoring import metrics

__all__ = [
  "LOG_MSE_EPS",
  "Settings",
  "WIDE_FROM",
  "decoder_capacity",
  "make_decoder",
  "make_optimizer",
  "mismatched_mse",
  "per_example_loss",
  "train_decoder",
  "training_for",
]

# The Settings fields the audit provides; the others are the decoder entry's.
_AUDITS = ("filter_size", "filter_sigma", "seed", "eval_batch_size", "val_fraction")


@dataclasses.dataclass(frozen=True)
class Settings:
  """What `train_decoder` reads: the decoder entry's fields (privjax.attacks.decoder's
  DEFAULTS, described there) and the audit's SSIM window, seed and evaluation batch."""

  # The architecture (`make_decoder`).
  width: int
  start_size: int
  hidden: int
  max_conv_size: int
  # The optimisation and its early stopping.
  batch_size: int
  num_steps: int
  learning_rate: float
  warmup_steps: int
  weight_decay: float
  loss: str
  ssim_weight: float
  ema_decay: float
  eval_every: int
  patience: int
  min_delta: float
  checkpoint_every: int
  # The audit's.
  filter_size: int  # the SSIM window of the loss
  filter_sigma: float
  seed: int  # the initial params and the batch order
  eval_batch_size: int  # the batch of validation and reconstruction
  val_fraction: float = 0.1  # held out for early stopping when no split is given

  @classmethod
  def from_entry(
    cls,
    entry: Mapping,
    *,
    filter_size: int,
    filter_sigma: float,
    seed: int,
    eval_batch_size: int,
    val_fraction: float = 0.1,
  ) -> Settings:
    """The settings of a decoder entry (`config.attacks.<name>`, its DEFAULTS' fields; any
    other key, "type" say, is not read) with the audit's SSIM window, seed and evaluation
    batch (`val_fraction`: the held-out part when no split is given)."""
    own = [f.name for f in dataclasses.fields(cls) if f.name not in _AUDITS]
    return cls(
      **{k: entry[k] for k in own},
      filter_size=filter_size,
      filter_sigma=filter_sigma,
      seed=seed,
      eval_batch_size=eval_batch_size,
      val_fraction=val_fraction,
    )


WIDE_FROM = 64  # pixels a side from which the automatic decoder width is 128 (else 64)


def decoder_capacity(settings, image_shape, feature_dim: int) -> tuple[int, int]:
  """(width, hidden) of the decoder: the configured values, or grown with the problem.

  `width=0` picks 64 channels for images under 64 pixels a side and 128 from 64 up;
  `hidden=0` picks twice the feature dimension, in [512, 2048].
  """
  side = max(int(image_shape[0]), int(image_shape[1]))
  width = settings.width or (64 if side < WIDE_FROM else 128)
  hidden = settings.hidden or min(2048, max(512, 2 * int(feature_dim)))
  return width, hidden


def make_decoder(settings: Settings, image_shape, feature_dim: int = 0) -> Decoder:
  """The `Decoder` module for these settings, images of `image_shape` [H, W, C] and
  features of width `feature_dim`."""
  width, hidden = decoder_capacity(settings, image_shape, feature_dim)
  return Decoder(
    image_shape=tuple(int(s) for s in image_shape),
    width=width,
    start_size=settings.start_size,
    hidden=hidden,
    max_conv_size=settings.max_conv_size,
  )


def make_optimizer(tc) -> optax.GradientTransformation:
  """AdamW with linear warmup and cosine decay to 1% over `num_steps` (`tc`: Settings, or
  any object with its learning_rate, warmup_steps, num_steps and weight_decay)."""
  schedule = optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=tc.learning_rate,
    warmup_steps=tc.warmup_steps,
    decay_steps=tc.num_steps,
    end_value=tc.learning_rate * 0.01,
  )
  return optax.adamw(schedule, weight_decay=tc.weight_decay)


# Added to the mse under the log of "log_mse+ssim": the log stays finite on a perfect
# reconstruction, and no image's gradient is scaled up beyond 1 / 1e-5 (PSNR 50 dB).
LOG_MSE_EPS = 1e-5


def per_example_loss(
  predictions, images, *, kind: str, filter_size: int, filter_sigma: float, ssim_weight=1.0
):
  """[B] reconstruction loss: "mse", "ssim" (1 - SSIM), "mse+ssim" (mse + ssim_weight *
  (1 - SSIM)) or "log_mse+ssim" (log(mse + LOG_MSE_EPS) + ssim_weight * (1 - SSIM)).

  The log of the mse is minus the image's PSNR up to scale: its mean over a batch weighs
  each image's relative error alike, where the mse's mean is led by the hardest images.
  """
  mse = jnp.mean((predictions - images) ** 2, axis=(1, 2, 3))
  if kind == "mse":
    return mse
  dssim = 1.0 - metrics.ssim(
    predictions, images, filter_size=filter_size, filter_sigma=filter_sigma
  )
  if kind == "ssim":
    return dssim
  if kind == "log_mse+ssim":
    return jnp.log(mse + LOG_MSE_EPS) + ssim_weight * dssim
  return mse + ssim_weight * dssim


def training_for(
  decoder: Decoder, tx, loss_fn, feature_dim: int, *, mesh, ema_decay: float = 0.0
) -> loop.Training:
  """`loop.make_training` for the decoder on {"features": [B, D], "images": [B, H, W, C]}
  batches."""

  def loss(params, batch):
    return jnp.mean(loss_fn(decoder.apply(params, batch["features"]), batch["images"]))

  def init_params(key):
    return decoder.init(key, jnp.zeros((1, feature_dim), jnp.float32))

  return loop.make_training(init_params, loss, tx, mesh=mesh, ema_decay=ema_decay)


class _OptimizerSettings(NamedTuple):
  """The Settings fields `make_optimizer` reads, hashable (a cache key)."""

  learning_rate: float
  warmup_steps: int
  num_steps: int
  weight_decay: float


class _DecoderPrograms(NamedTuple):
  training: loop.Training
  val_loss: Callable  # (params, features, images) -> [B] per-example loss
  loss: Callable  # (predictions, images) -> [B] per-example loss
  reconstruct: Callable  # (params, features) -> [B, H, W, C] the decoder's images


@functools.lru_cache(maxsize=8)
def _decoder_programs(
  decoder,
  make_tx,
  optimizer,
  loss_kind,
  ssim_weight,
  ema_decay,
  filter_size,
  filter_sigma,
  feature_dim,
  mesh,
):
  """The decoder's jitted programs, built once per architecture, settings and mesh, so
  retraining on new data of the same shapes compiles nothing (the data are arguments).
  The optimizer is `make_tx(optimizer)`; the builder is part of the key."""
  loss_fn = functools.partial(
    per_example_loss,
    kind=loss_kind,
    filter_size=filter_size,
    filter_sigma=filter_sigma,
    ssim_weight=ssim_weight,
  )
  return _DecoderPrograms(
    training=training_for(
      decoder, make_tx(optimizer), loss_fn, feature_dim, mesh=mesh, ema_decay=ema_decay
    ),
    val_loss=jax.jit(lambda p, f, x: loss_fn(decoder.apply(p, f), x)),
    loss=jax.jit(loss_fn),
    reconstruct=jax.jit(decoder.apply),
  )


def _programs_for(decoder: Decoder, settings: Settings, feature_dim: int, mesh) -> _DecoderPrograms:
  """The decoder's programs for these settings (`_decoder_programs`, cached)."""
  s = settings
  return _decoder_programs(
    decoder,
    make_optimizer,
    _OptimizerSettings(s.learning_rate, s.warmup_steps, s.num_steps, s.weight_decay),
    s.loss,
    float(s.ssim_weight),
    float(s.ema_decay),
    s.filter_size,
    s.filter_sigma,
    feature_dim,
    mesh,
  )


def _decoder_batch_size(requested: int, num_train: int, mesh) -> int:
  """The decoder's global batch: `batch_size`, at most the `num_train` images it trains
  on, rounded up to a multiple of the device count (either change is logged)."""
  if requested > num_train:
    logging.info(
      "decoder: batch_size=%d is larger than the %d auxiliary images it trains on; using %d",
      requested,
      num_train,
      num_train,
    )
  return parallel.fit_batch_size(min(requested, num_train), mesh, what="decoder training")


def _fit_decoder(
  programs, train, val, settings: Settings, *, batch_size, mesh, checkpoint_dir, key=None
):
  """Logs the plan and trains the decoder with `loop.fit`; returns what `fit` returns.

  Args:
    programs: the decoder's `_DecoderPrograms`.
    train: (features, images) to train on, in seeded batches of `batch_size`.
    val: (features, images) held out: their loss decides early stopping.
    settings: the training's Settings.
    batch_size: the global training batch.
    mesh: the data mesh.
    checkpoint_dir: as in `train_decoder`.
    key: the initial params' `jax.random` key (None: `jax.random.key(settings.seed)`).
  """
  s = settings
  (x_train, y_train), (x_val, y_val) = train, val
  logging.info(
    "decoder: training on %d auxiliary images (%d held out for early stopping), batch %d, "
    "up to %d steps; batches are cut from one stream of seeded epochs, so no remainder is "
    "dropped (a batch that crosses an epoch end is completed from the next epoch)",
    len(x_train),
    len(x_val),
    batch_size,
    s.num_steps,
  )

  def batch_fn(step):
    idx = batch_indices(len(x_train), batch_size, step, s.seed)
    return {"features": x_train[idx], "images": y_train[idx]}

  def eval_fn(params):
    losses = parallel.batched_map(
      functools.partial(programs.val_loss, params),
      [x_val, y_val],
      batch_size=s.eval_batch_size,
      mesh=mesh,
    )
    return float(np.mean(losses))

  return loop.fit(
    programs.training,
    jax.random.key(s.seed) if key is None else key,
    batch_fn,
    name="decoder",
    num_steps=s.num_steps,
    batch_size=batch_size,
    checkpoint_every=s.checkpoint_every,
    checkpoint_dir=checkpoint_dir,
    eval_fn=eval_fn,
    eval_every=s.eval_every,
    patience=s.patience,
    min_delta=s.min_delta,
    mesh=mesh,
    remedy="try a lower config.attacks.decoder.learning_rate",
  )


def _per_example_mse(predictions, images) -> np.ndarray:
  """[N] float64 mse of each prediction against its image."""
  n = len(images)
  diff = np.asarray(predictions, np.float64).reshape(n, -1) - np.asarray(images).reshape(n, -1)
  return np.mean(diff**2, axis=1)


def mismatched_mse(predictions, images, *, chunk: int = 1024) -> np.ndarray | None:
  """[N] float64: image i's mse against the predictions for the other N - 1 images, averaged
  over them (every mismatched pair, in O(N) by expanding the square); None when N < 2.

  The no-information reference for a decoder: its own outputs, but for other features.
  """
  n = len(images)
  if n < 2:
    return None
  p = np.asarray(predictions).reshape(n, -1)
  x = np.asarray(images).reshape(n, -1)
  total = p.sum(axis=0, dtype=np.float64)  # [P] the sum of every prediction
  sq = np.concatenate(
    [np.sum(p[i : i + chunk].astype(np.float64) ** 2, axis=1) for i in range(0, n, chunk)]
  )
  sq_total, out = sq.sum(), np.empty(n)
  for i in range(0, n, chunk):
    xi, pi = x[i : i + chunk].astype(np.float64), p[i : i + chunk].astype(np.float64)
    # mean_j!=i |x_i - p_j|^2 = |x_i|^2 + mean_j!=i |p_j|^2 - 2 x_i . mean_j!=i p_j
    others = (total - pi) / (n - 1)
    out[i : i + chunk] = (
      np.sum(xi**2, axis=1)
      + (sq_total - sq[i : i + chunk]) / (n - 1)
      - 2 * np.sum(xi * others, axis=1)
    )
  return out / x.shape[1]


def _standard_error(values: np.ndarray) -> float:
  return float(np.std(values, ddof=1) / np.sqrt(len(values)))


def _mean_image_baseline(programs: _DecoderPrograms, y_train, y_val) -> dict:
  """What predicting the mean training image scores on the validation images (loss, mse).

  Shown beside the decoder's. Not the test of whether it learned: with an SSIM term in its
  loss the decoder draws sharp images, whose mse can exceed the mean image's (a blur, the
  mse-best guess without information) while they carry much of each image.
  """
  mean_image = np.broadcast_to(y_train.mean(axis=0), y_val.shape)
  return {
    "mean_image_val_loss": float(np.mean(programs.loss(mean_image, y_val))),
    "mean_image_val_mse": float(np.mean((mean_image - y_val) ** 2)),
  }


def _held_out_mse(programs: _DecoderPrograms, params, val, settings: Settings, mesh) -> dict:
  """Whether the decoder uses the features: its held-out reconstructions against their own
  images and against the other held-out images (the "flat" warning reads these).

  In mse, whatever the loss: the held-out images against the decoder's reconstructions of
  them ("best_val_mse"), and against its reconstructions of the other held-out images
  ("mismatched_val_mse": no information about the image at hand, so a decoder that learned
  nothing from the features is as close to them as to its own); "mismatched_val_mse_se":
  the standard error of the mean paired difference. None with fewer than 2 held-out images.
  """
  x_val, y_val = val
  reconstructions = parallel.batched_map(
    functools.partial(programs.reconstruct, params),
    [x_val],
    batch_size=settings.eval_batch_size,
    mesh=mesh,
  )
  own_mse = _per_example_mse(reconstructions, y_val)
  other_mse = mismatched_mse(reconstructions, y_val)
  return {
    "best_val_mse": float(np.mean(own_mse)),
    "mismatched_val_mse": None if other_mse is None else float(np.mean(other_mse)),
    "mismatched_val_mse_se": None if other_mse is None else _standard_error(other_mse - own_mse),
  }


def train_decoder(
  features,
  images,
  settings: Settings,
  *,
  mesh,
  checkpoint_dir: str | None = None,
  split=None,
  key=None,
):
  """Trains the decoder on auxiliary (features, images); returns (decoder, params, convergence).

  Args:
    features: [N, D] float32 auxiliary features.
    images: [N, H, W, C] float32 auxiliary images in [0, 1].
    settings: what the training reads (`Settings`).
    mesh: the data mesh.
    checkpoint_dir: where the orbax CheckpointManager keeps its steps; None keeps
      none. A directory with checkpoints resumes from the latest.
    split: (train indices, validation indices) of the auxiliary set; None draws
      `settings.val_fraction` of it for validation with the seed.
    key: the `jax.random` key of the initial params (None: `jax.random.key(settings.seed)`;
      the batch order is drawn from `settings.seed` either way).

  Returns:
    The decoder module, its best params (by validation loss, replicated), and a
    JSON-ready dict describing convergence.
  """
  decoder = make_decoder(settings, images.shape[1:], features.shape[1])
  programs = _programs_for(decoder, settings, features.shape[1], mesh)
  if split is None:
    split = loop.split_validation(features.shape[0], settings.val_fraction, settings.seed)
  train_idx, val_idx = split
  x_train, y_train = features[train_idx], images[train_idx]
  x_val, y_val = features[val_idx], images[val_idx]
  batch_size = _decoder_batch_size(settings.batch_size, len(train_idx), mesh)
  baseline = _mean_image_baseline(programs, y_train, y_val)
  best_params, meta, step = _fit_decoder(
    programs,
    (x_train, y_train),
    (x_val, y_val),
    settings,
    batch_size=batch_size,
    mesh=mesh,
    checkpoint_dir=checkpoint_dir,
    key=key,
  )
  held_out = _held_out_mse(programs, best_params, (x_val, y_val), settings, mesh)
  sizes = {"batch_size": batch_size, "train_examples": len(train_idx), "val": len(val_idx)}
  return decoder, best_params, _convergence(meta, step, sizes, baseline, held_out)


def _convergence(meta: dict, step: int, sizes: dict, baseline: dict, held_out: dict) -> dict:
  """The JSON-ready convergence of a decoder's training (report.json's attacks row)."""
  batch_size = sizes["batch_size"]
  return {
    "steps": step,
    "best_step": meta["best_step"],
    "best_val_loss": meta["best_val_loss"],
    "stopped": meta["stopped"],
    "batch_size": batch_size,
    "train_examples": int(sizes["train_examples"]),
    "val_examples": int(sizes["val"]),
    "mean_image_val_loss": baseline["mean_image_val_loss"],
    # In mse, whatever the loss (`_held_out_mse`, `_mean_image_baseline`).
    "best_val_mse": held_out["best_val_mse"],
    "mean_image_val_mse": baseline["mean_image_val_mse"],
    "mismatched_val_mse": held_out["mismatched_val_mse"],
    "mismatched_val_mse_se": held_out["mismatched_val_mse_se"],
    "history": meta["history"],
  }
