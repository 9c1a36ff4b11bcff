"""`decoder`: the patent's inverse model, a Flax decoder trained features -> image.

Black-box: the adversary needs only auxiliary (features, image) pairs. Its settings
are `config.decoder` (architecture) and `config.train` (optax training with early
stopping on the held-out part of the auxiliary set); see privjax/train.py.
"""

from __future__ import annotations

import functools

import jax
import ml_collections

from privjax import parallel
from privjax.attacks.base import AuxSet, Context, Fitted, register
from privjax.train import train_decoder

# A best validation loss within this fraction of the mean image's is "flat".
FLAT_IMPROVEMENT = 0.02


def training_warnings(convergence: dict, train_cfg) -> list[str]:
  """Why a training run's numbers may understate the leakage (empty when none).

  The data-starved flags (too few auxiliary or held-out images) are every attacker's,
  added by the runner (base.data_warnings).
  """
  out = []
  history, best = convergence["history"], convergence["best_val_loss"]
  floor = convergence["mean_image_val_loss"]
  if best >= (1 - FLAT_IMPROVEMENT) * floor:
    out.append(
      f"validation loss flat: best {best:.5g} is no better than predicting the mean auxiliary "
      f"image ({floor:.5g}); the decoder learned nothing from the features (they may carry "
      "little, or training failed)"
    )
  elif history and convergence["best_step"] <= min(
    h["step"] for h in history if h["step"] > train_cfg.warmup_steps
  ):
    out.append(
      f"best validation loss at step {convergence['best_step']}, the first evaluation after "
      "warm-up: under-trained or over-fitting at once; try a lower learning rate or more data"
    )
  if convergence["stopped"].startswith("reached train.num_steps (still improving"):
    out.append("under-trained: still improving at train.num_steps (raise it)")
  return out


@functools.partial(jax.jit, static_argnames=("decoder",))
def _decode(params, features, *, decoder):
  """Compiled once per decoder architecture (a hashable Flax module) and batch shape."""
  return decoder.apply(params, features)


@register("decoder", checkpoints=True)
def attack(aux: AuxSet, ctx: Context, cfg: ml_collections.ConfigDict) -> Fitted:
  """Trains the decoder on aux.train, early-stopped on aux.val; reconstructs by a forward pass.

  `cfg` holds `decoder` and `train` (the audit's config.decoder and config.train).
  """
  run_cfg = ml_collections.ConfigDict(
    {
      "decoder": cfg.decoder.to_dict(),
      "train": cfg.train.to_dict(),
      "ssim": {"filter_size": ctx.filter_size, "filter_sigma": ctx.filter_sigma},
      "seed": ctx.seed,
      "eval_batch_size": ctx.eval_batch_size,
    }
  )
  decoder, params, convergence = train_decoder(
    aux.features,
    aux.images,
    run_cfg,
    mesh=ctx.mesh,
    checkpoint_dir=ctx.checkpoint_dir,
    split=(aux.train, aux.val),
  )
  decode = functools.partial(_decode, params, decoder=decoder)

  def reconstruct(features):
    return parallel.batched_map(decode, [features], batch_size=ctx.eval_batch_size, mesh=ctx.mesh)

  info = {
    "convergence": convergence,
    "width": decoder.width,
    "hidden": decoder.hidden,
  }
  return Fitted(reconstruct, info, tuple(training_warnings(convergence, cfg.train)))
