"""`decoder`: the patent's inverse model, a Flax decoder trained features -> image.

Black-box: the adversary needs only auxiliary (features, image) pairs. Its settings are
its entry's (`config.attacks.decoder`): the architecture (width, start_size, hidden,
max_conv_size: the Flax module, privjax/attacks/decoder_net.py) and optax training with
early stopping on the held-out part of the auxiliary set (privjax/attacks/decoder_training.py,
on the generic loop of privjax/runtime/loop.py).

The functional core: `fit(aux, *, key, settings, ...) -> Params` (the trained Flax
variables, the architecture riding in the pytree's structure) and the pure
`reconstruct(params, features)`, a forward pass that jits, vmaps and differentiates with
respect to both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.struct
import jax
import ml_collections
import numpy as np

from privjax import checks
from privjax.attacks.base import AuxSet, Context, Fitted, key_seed, read_settings, register
from privjax.attacks.decoder_net import Decoder
from privjax.attacks.decoder_training import Settings, train_decoder
from privjax.runtime import parallel

__all__ = [
  "DEFAULTS",
  "LOSSES",
  "Params",
  "attack",
  "check",
  "fit",
  "learned_nothing",
  "reconstruct",
  "training_warnings",
]

# What training reads (decoder_training.Settings): the architecture, then the optimisation.
DEFAULTS = {
  # Inverse model: features -> dense -> [conv + depth-to-space] x K -> image. Channels
  # at its lowest resolution, halved per upsampling stage (at least 16); 0: 64 for images
  # under 64 pixels a side, 128 from 64 up (docs/method.md: how the defaults were chosen).
  "width": 0,
  "start_size": 4,  # Spatial size after the dense layer (upsampled by 2 per stage).
  "hidden": 512,  # Hidden dense layer on the features; 0: 2 x feature dim in [512, 2048].
  # Convolutions work at up to this many pixels a side; the stages above are one sub-pixel
  # convolution straight to the image (64x64: 3x cheaper to train, and as strong there).
  "max_conv_size": 32,
  # Training: optax AdamW, warmup + cosine decay, early stopping on the held-out part of
  # the auxiliary set (config.val_fraction).
  "batch_size": 64,  # Global batch; rounded up to a multiple of the device count.
  "num_steps": 4000,  # Upper bound on steps; early stopping usually ends sooner.
  "learning_rate": 2e-3,  # Peak learning rate of the warmup + cosine schedule.
  "warmup_steps": 100,  # Linear warmup steps from 0 to the peak learning rate.
  "weight_decay": 1e-4,  # AdamW decoupled weight decay.
  # "mse", "ssim" (1 - dm_pix SSIM), "mse+ssim" (mse + ssim_weight * (1 - SSIM)) or
  # "log_mse+ssim" (log mse + ssim_weight * (1 - SSIM); the log of the mse is minus the
  # PSNR up to scale, so every image's relative error counts alike).
  "loss": "log_mse+ssim",
  # The weight of (1 - SSIM) next to the log mse (4) or the mse ("mse+ssim": 0.1).
  "ssim_weight": 4.0,
  # Decay of the debiased moving average of the weights that is evaluated for early
  # stopping and kept as the decoder; 0: the raw weights.
  "ema_decay": 0.995,
  "eval_every": 100,  # Steps between validation evaluations (and progress logs).
  # Stop after this many evaluations without improvement. The moving average (ema_decay)
  # makes the validation curve smooth: past its best it rises at every evaluation, so a
  # third evaluation (the old default) never found a later best in benchmarks/attacks.py.
  "patience": 2,
  "min_delta": 1e-5,  # Smallest validation-loss decrease that counts as improvement.
  "checkpoint_every": 500,  # Steps between orbax checkpoints (and one at the end).
}
LOSSES = ("mse", "ssim", "mse+ssim", "log_mse+ssim")


def check(name, cfg, names) -> None:
  """Raises ConfigError for a bad `config.attacks.<name>` of type decoder."""
  del names
  f = f"attacks.{name}"
  checks.positive_int(f"{f}.width", cfg.width, zero_ok=True)
  checks.positive_int(f"{f}.start_size", cfg.start_size)
  checks.positive_int(f"{f}.hidden", cfg.hidden, zero_ok=True)
  checks.positive_int(f"{f}.max_conv_size", cfg.max_conv_size)
  for key in ("batch_size", "num_steps", "eval_every", "patience", "checkpoint_every"):
    checks.positive_int(f"{f}.{key}", cfg[key])
  checks.require(
    isinstance(cfg.warmup_steps, int) and 0 <= cfg.warmup_steps < cfg.num_steps,
    f"config.{f}.warmup_steps must be an integer in [0, {f}.num_steps), got {cfg.warmup_steps!r}",
  )
  checks.number(f"{f}.learning_rate", cfg.learning_rate, 0.0)
  checks.require(
    cfg.learning_rate > 0, f"config.{f}.learning_rate must be > 0, got {cfg.learning_rate}"
  )
  checks.number(f"{f}.weight_decay", cfg.weight_decay, 0.0)
  checks.number(f"{f}.min_delta", cfg.min_delta, 0.0)
  checks.number(f"{f}.ssim_weight", cfg.ssim_weight, 0.0)
  checks.number(f"{f}.ema_decay", cfg.ema_decay, 0.0)
  checks.require(  # In float32 (train_step's): a decay that rounds to 1 would divide 0 by 0.
    np.float32(cfg.ema_decay) < 1.0,
    f"config.{f}.ema_decay must be below 1 in float32 (0: off; at most 0.9999999), got "
    f"{cfg.ema_decay!r}",
  )
  checks.require(
    cfg.loss in LOSSES,
    f"config.{f}.loss must be one of {', '.join(map(repr, LOSSES))}, got {cfg.loss!r}",
  )


# The "flat" test: the decoder learned something from the features when its held-out
# reconstructions are closer (mse) to their own images than to the other held-out images,
# by more than this fraction of the latter and this many standard errors of the paired
# difference. Not the mean image: with an SSIM term in the loss the decoder draws sharp
# images, whose mse can exceed the mean image's blur while they carry much of each image
# (so a decoder with a clear SSIM gain was called flat). In mse, whatever the loss: a log
# loss is negative, and a fraction of it means nothing.
FLAT_IMPROVEMENT = 0.02
FLAT_STANDARD_ERRORS = 2.0


def learned_nothing(convergence: dict) -> bool:
  """Whether the decoder's held-out reconstructions are no closer to their own images than
  to the others (False when it cannot tell: under 2 held-out images)."""
  other, se = convergence.get("mismatched_val_mse"), convergence.get("mismatched_val_mse_se")
  if other is None or se is None:
    return False
  gain = other - convergence["best_val_mse"]
  return not gain > max(FLAT_IMPROVEMENT * other, FLAT_STANDARD_ERRORS * se)


def training_warnings(convergence: dict, settings) -> list[str]:
  """Why a training run's numbers may understate the leakage (empty when none).

  `settings`: the run's Settings (its `warmup_steps` is read).

  The data-starved flags (too few auxiliary or held-out images) are every attacker's,
  added by the runner (base.data_warnings).
  """
  out = []
  history = convergence["history"]
  if learned_nothing(convergence):
    out.append(
      f"validation loss flat: the held-out reconstructions are no closer to their own images "
      f"(mse {convergence['best_val_mse']:.5g}) than to the other held-out images (mse "
      f"{convergence['mismatched_val_mse']:.5g}, standard error of the difference "
      f"{convergence['mismatched_val_mse_se']:.2g}); the decoder learned nothing from the "
      "features (they may carry little, or training failed)"
    )
  elif history and convergence["best_step"] <= min(
    h["step"] for h in history if h["step"] > settings.warmup_steps
  ):
    out.append(
      f"best validation loss at step {convergence['best_step']}, the first evaluation after "
      "warm-up: under-trained or over-fitting at once; try a lower learning rate or more data"
    )
  if convergence["stopped"].startswith("reached num_steps (still improving"):
    out.append("under-trained: still improving at its num_steps (raise it)")
  return out


@flax.struct.dataclass
class Params:
  """A trained decoder: its Flax variables (a pytree of arrays) and its architecture (the
  hashable Flax module, static: part of the pytree's structure)."""

  variables: Any  # {"params": ...} of `net`
  net: Decoder = flax.struct.field(pytree_node=False)


def reconstruct(params: Params, features: jax.Array) -> jax.Array:
  """Pure: standardised features [B, D] -> images [B, H, W, C] in [0, 1] (a sigmoid).

  The decoder's forward pass; jits, vmaps (over a batch axis, or over params trained with
  two keys) and differentiates with respect to `params` and `features`.
  """
  return params.net.apply(params.variables, features)


class _Fit(NamedTuple):
  params: Params
  info: dict  # JSON-ready: how training converged, the width and hidden size
  warnings: tuple[str, ...]  # why its numbers may understate the leakage


def _fit(
  aux: AuxSet,
  *,
  key,
  settings: Mapping | None,
  filter_size: int,
  filter_sigma: float,
  mesh,
  eval_batch_size: int,
  checkpoint_dir: str | None,
) -> _Fit:
  """Trains the decoder on aux.train, early-stopped on aux.val (`fit`)."""
  training = Settings.from_entry(
    read_settings(settings, DEFAULTS, name="decoder"),
    filter_size=filter_size,
    filter_sigma=filter_sigma,
    seed=key_seed(key),  # the batch order (numpy); the initial params take `key` itself
    eval_batch_size=eval_batch_size,
  )
  decoder, variables, convergence = train_decoder(
    aux.features,
    aux.images,
    training,
    mesh=mesh,
    checkpoint_dir=checkpoint_dir,
    split=(aux.train, aux.val),
    key=key,
  )
  info = {"convergence": convergence, "width": decoder.width, "hidden": decoder.hidden}
  warnings = tuple(training_warnings(convergence, training))
  return _Fit(Params(variables=variables, net=decoder), info, warnings)


def fit(
  aux: AuxSet,
  *,
  key,
  settings: Mapping | None = None,
  filter_size: int,
  filter_sigma: float,
  mesh=None,
  eval_batch_size: int = 256,
  checkpoint_dir: str | None = None,
) -> Params:
  """Trains the decoder attacker; returns its params (for `reconstruct`).

  Args:
    aux: the auxiliary set: features [N, D] standardised, images [N, H, W, C] in [0, 1];
      trained on aux.train, early-stopped on aux.val.
    key: a `jax.random` key: the initial params are drawn from it, the batch order with
      numpy from `key_seed(key)` (the audit passes `jax.random.key(config.seed)`).
    settings: DEFAULTS' keys (missing ones take their defaults).
    filter_size, filter_sigma: the SSIM window of the loss (the audit's `config.ssim`).
    mesh: the data mesh training is sharded over (None: every device).
    eval_batch_size: the batch of validation.
    checkpoint_dir: where training keeps its orbax checkpoints and resumes from; None
      keeps none.

  Returns:
    `Params`: the best variables by validation loss (replicated over `mesh`) and the
    Flax module.
  """
  return _fit(
    aux,
    key=key,
    settings=settings,
    filter_size=filter_size,
    filter_sigma=filter_sigma,
    mesh=parallel.data_mesh() if mesh is None else mesh,
    eval_batch_size=eval_batch_size,
    checkpoint_dir=checkpoint_dir,
  ).params


@register("decoder", defaults=DEFAULTS, check=check, default_on=True, checkpoints=True)
def attack(aux: AuxSet, ctx: Context, cfg: ml_collections.ConfigDict) -> Fitted:
  """The audit's decoder: `fit` with `jax.random.key(ctx.seed)` and the audit's SSIM window
  and checkpoints; `reconstruct` batched over the mesh (its reconstructions of aux.val are
  already held out: it never trains on them)."""
  out = _fit(
    aux,
    key=jax.random.key(ctx.seed),
    settings=cfg,
    filter_size=ctx.filter_size,
    filter_sigma=ctx.filter_sigma,
    mesh=ctx.mesh,
    eval_batch_size=ctx.eval_batch_size,
    checkpoint_dir=ctx.checkpoint_dir,
  )
  return Fitted.of(
    reconstruct,
    out.params,
    mesh=ctx.mesh,
    batch_size=ctx.eval_batch_size,
    info=out.info,
    warnings=out.warnings,
  )
