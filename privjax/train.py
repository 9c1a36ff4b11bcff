"""Training the inverse model: an optax-trained Flax decoder, data-parallel, checkpointed.

The train step is a pure `(state, batch) -> (state, metrics)` function jitted once
with the state donated; params are replicated over the mesh, batches sharded along
"data", and the optimizer state split over the devices leaf by leaf, all expressed
as shardings (XLA inserts the collectives), so any optax chain computes what it
computes on one device. Training runs
until the loss on a held-out part of the auxiliary set stops improving (early
stopping with patience), bounded by `num_steps`; the best params by
validation loss are returned, and how the run converged goes into the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from privjax.data.splits import batch_indices
from privjax.errors import Interrupted, TrainingError
from privjax.models.nets import Decoder
from privjax.runtime import checkpoint, events, parallel
from privjax.scoring import metrics


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  # The exponential moving average of `params` (Polyak averaging), or None when off.
  ema: Any = None


WIDE_FROM = 64  # pixels a side from which the automatic decoder width is 128 (else 64)


def decoder_capacity(decoder_cfg, image_shape, feature_dim: int) -> tuple[int, int]:
  """(width, hidden) of the decoder: the configured values, or grown with the problem.

  `decoder.width=0` picks 64 channels for images under 64 pixels a side and 128 from 64
  up; `decoder.hidden=0` picks twice the feature dimension, in [512, 2048].
  """
  side = max(int(image_shape[0]), int(image_shape[1]))
  width = decoder_cfg.width or (64 if side < WIDE_FROM else 128)
  hidden = decoder_cfg.hidden or min(2048, max(512, 2 * int(feature_dim)))
  return width, hidden


def make_decoder(config, image_shape, feature_dim: int = 0) -> Decoder:
  d = config.decoder
  width, hidden = decoder_capacity(d, image_shape, feature_dim)
  return Decoder(
    image_shape=tuple(int(s) for s in image_shape),
    width=width,
    start_size=d.start_size,
    hidden=hidden,
    max_conv_size=d.get("max_conv_size", Decoder.max_conv_size),
  )


def make_optimizer(tc) -> optax.GradientTransformation:
  """AdamW with linear warmup and cosine decay to 1% over `num_steps`."""
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


def train_step(state: TrainState, batch, *, loss: Callable, tx, ema_decay: float = 0.0):
  """One optimizer step on the global batch: `(state, batch) -> (state, metrics)`.

  With `ema_decay` > 0 it also updates `state.ema`, the debiased moving average of the
  params: after t steps the params of step s weigh (1 - d) d^(t - s) / (1 - d^t), so the
  weights sum to 1 and the random initial params weigh nothing (the average after the
  first step is that step's params). Without the debiasing the initial params would
  still weigh d^t: 37% after 100 steps at 0.99, and a short run's decoder would be
  partly random, understating the leak.

  `loss(params, batch) -> scalar` is the mean loss of the batch. Written as on one
  device; its placement is the shardings `make_training` jits it with (params
  replicated, the batch split over "data", the optimizer state's large leaves split over
  "data": `split_spec`), and XLA inserts the collectives. So any optax chain (global-norm
  clipping, masked weight decay) computes what it computes on one device.
  """
  value, grads = jax.value_and_grad(loss)(state.params, batch)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema
  if ema_decay:
    # m_t = d m_(t-1) + (1 - d) p_t over 1 - d^t, written as one step towards p_t.
    # Both sides in float32, so that the first step's size is exactly 1.
    d, t = jnp.float32(ema_decay), (state.step + 1).astype(jnp.float32)
    step_size = (1.0 - d) / (1.0 - jnp.power(d, t))
    ema = optax.incremental_update(params, ema, step_size=step_size)
  new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state, ema=ema)
  return new_state, {"loss": value, "grad_norm": optax.tree.norm(grads)}


# Optimizer-state leaves below this many elements (16 MiB of float32) stay replicated:
# splitting one costs a collective per step for a memory saving no device notices. On 2
# CPU devices, replicating all of the default decoder's state took its step from 25 to
# 16.5 ms (16x16x1), and the 64x64x3 decoder's from 122 to 113 ms, where splitting even
# its one 1M-element leaf cost 10 ms.
SPLIT_MIN_ELEMENTS = 1 << 22


def split_spec(shape, num_devices: int) -> P:
  """The optimizer-state sharding rule: split a large leaf's (`SPLIT_MIN_ELEMENTS`) largest
  axis that the device count divides over "data" (ZeRO-1, as big_vision's sharding
  rules); replicate the rest."""
  if math.prod(shape) < SPLIT_MIN_ELEMENTS:
    return P()
  for axis in sorted(range(len(shape)), key=lambda i: -shape[i]):
    if shape[axis] >= num_devices and shape[axis] % num_devices == 0:
      return P(*[parallel.DATA_AXIS if i == axis else None for i in range(len(shape))])
  return P()


class Training(NamedTuple):
  """The jitted pieces of decoder training on one mesh (see `make_training`)."""

  init: Callable  # key -> TrainState, placed: params replicated, optimizer state split
  step: Callable  # (state, global batch) -> (state, {"loss", "grad_norm"}); donates state
  shardings: Any  # the TrainState's NamedShardings on this mesh
  abstract: Any  # ShapeDtypeStructs of the TrainState with those shardings (for restore)


def make_training(
  init_params: Callable, loss: Callable, tx, *, mesh, ema_decay: float = 0.0
) -> Training:
  """Jits `train_step` for a model with the state's shardings; the state is donated.

  Args:
    init_params: `key -> params` of the model.
    loss: `(params, batch) -> scalar` mean loss of a batch.
    tx: the optax transformation.
    mesh: the data mesh.
    ema_decay: > 0 keeps a moving average of the params in the state (`train_step`),
      which `fit` then evaluates and returns in place of the raw params.

  Checkpoints hold the logical (unsplit) arrays, so a run resumes on any device count:
  orbax restores them onto this mesh's shardings.
  """

  def init(key):
    params = init_params(key)
    ema = jax.tree.map(jnp.copy, params) if ema_decay else None
    return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), ema=ema
    )

  abstract = jax.eval_shape(init, jax.random.key(0))
  repl = parallel.replicated(mesh)
  shardings = TrainState(
    step=repl,
    params=jax.tree.map(lambda _: repl, abstract.params),
    opt_state=jax.tree.map(
      lambda a: NamedSharding(mesh, split_spec(a.shape, mesh.size)), abstract.opt_state
    ),
    ema=jax.tree.map(lambda _: repl, abstract.ema),
  )
  step = jax.jit(
    functools.partial(train_step, loss=loss, tx=tx, ema_decay=ema_decay),
    in_shardings=(shardings, parallel.batch_sharded(mesh)),
    out_shardings=(shardings, repl),
    donate_argnums=(0,),
  )
  return Training(
    init=functools.partial(_run_once, jax.jit(init, out_shardings=shardings)),
    step=step,
    shardings=shardings,
    abstract=jax.tree.map(
      lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), abstract, shardings
    ),
  )


# A program run once (drawing the initial parameters) gains nothing from XLA's optimising
# passes, which take most of its compilation: 3 of 4 s for the default decoder's init on CPU,
# 1 s at level 0. The drawn values are the same random streams, to float32 rounding.
_RUN_ONCE_OPTIONS = {"xla_backend_optimization_level": 0}


def _run_once(jitted, *args):
  """`jitted(*args)`, compiled without XLA's backend optimisations (it runs once)."""
  lowered = jitted.lower(*args)
  try:
    compiled = lowered.compile(_RUN_ONCE_OPTIONS)
  except Exception:  # a backend without the option: its default compilation
    compiled = lowered.compile()
  return compiled(*args)


def decoder_training(
  decoder: Decoder, tx, loss_fn, feature_dim: int, *, mesh, ema_decay: float = 0.0
) -> Training:
  """`make_training` for the decoder on {"features": [B, D], "images": [B, H, W, C]} batches."""

  def loss(params, batch):
    return jnp.mean(loss_fn(decoder.apply(params, batch["features"]), batch["images"]))

  def init_params(key):
    return decoder.init(key, jnp.zeros((1, feature_dim), jnp.float32))

  return make_training(init_params, loss, tx, mesh=mesh, ema_decay=ema_decay)


@flax.struct.dataclass
class _PlainState:
  """A TrainState without an average, as checkpoints held it before `ema` existed."""

  step: jax.Array
  params: Any
  opt_state: Any


def _stored(state):
  """The state as its checkpoint holds it: without the `ema` field when there is none, so
  a model trained without an average saves and restores (checksum included) the same tree
  as before the field existed."""
  if state.ema is None:
    return _PlainState(step=state.step, params=state.params, opt_state=state.opt_state)
  return state


def _loaded(stored) -> TrainState:
  """The TrainState of what `_stored` saved."""
  if isinstance(stored, _PlainState):
    return TrainState(step=stored.step, params=stored.params, opt_state=stored.opt_state)
  return stored


@contextlib.contextmanager
def _stop_requested():
  """Yields a flag set by SIGTERM (what preemption sends) or SIGINT (Ctrl-C) while training runs.

  The handler only sets the flag and records the signal in `flag.signum`; the loop
  saves a checkpoint at the next step and stops. A second Ctrl-C stops at once
  (KeyboardInterrupt). Outside the main thread (where signals cannot be handled) the
  flag stays unset.
  """
  flag = threading.Event()
  flag.signum = signal.SIGTERM
  if threading.current_thread() is not threading.main_thread():
    yield flag
    return

  def handler(signum, frame):
    if signum == signal.SIGINT and flag.is_set():
      raise KeyboardInterrupt
    flag.signum = signal.Signals(signum)
    flag.set()

  previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield flag
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


@dataclasses.dataclass
class _FitLoop:
  """One run of `fit`: its settings (`fit`'s arguments) and the training loop's state.

  `run` sets the state up (fresh, or restored from the latest checkpoint) and steps it
  until `meta["stopped"]` is set; each `_train_step` runs one optimizer step and what
  falls due at it (evaluation, logging, a checkpoint, a requested stop).
  """

  training: Training
  batch_fn: Callable[[int], dict]
  mesh: Any
  name: str
  num_steps: int
  batch_size: int
  checkpoint_every: int
  checkpoint_dir: str | None
  eval_fn: Callable[[Any], float] | None
  eval_every: int
  patience: int
  min_delta: float
  log_every: int
  remedy: str
  # The loop's state, set by `run`. The train step donates `state`: `best_params` and
  # checkpoints hold copies of it, never aliases of its buffers.
  state: TrainState = dataclasses.field(init=False)
  best_params: Any = dataclasses.field(init=False)
  meta: dict = dataclasses.field(init=False)  # the record `fit` returns, saved with each checkpoint
  mngr: Any = dataclasses.field(init=False)  # the orbax CheckpointManager, or None
  writer: Any = dataclasses.field(init=False, default=None)  # TensorBoard events, or None
  step: int = dataclasses.field(init=False)
  step_metrics: Any = dataclasses.field(init=False, default=None)  # of the latest step
  t_last: float = dataclasses.field(init=False)  # when `step_last` was logged (steps/s, ETA)
  step_last: int = dataclasses.field(init=False)

  def run(self, key):
    """Trains from `key`, or resumes from the latest checkpoint; returns what `fit` does."""
    self.state = self.training.init(key)
    self.meta = {
      "history": [],
      "best_val_loss": math.inf,
      "best_step": 0,
      "bad_evals": 0,
      "stopped": "",
    }
    # A copy, never an alias: the train step donates `state`, so an alias of its params
    # would be deleted by the first step, and a checkpoint before the first evaluation
    # (eval_every > checkpoint_every) would read a deleted buffer.
    self.best_params = jax.tree.map(jnp.copy, self.state.params)
    self.mngr = checkpoint.manager(self.checkpoint_dir) if self.checkpoint_dir is not None else None
    # Every exit (finished, diverged, SIGTERM, Ctrl-C) waits for the saves in flight and
    # closes the manager: no checkpoint is left half-written, no orbax thread outlives the run.
    try:
      self._restore()
      restored_finished = bool(self.meta["stopped"])
      if not restored_finished:
        self.writer = events.writer_for(self.checkpoint_dir)
      self.step = int(self.state.step)
      self.t_last, self.step_last = time.perf_counter(), self.step
      with _stop_requested() as stop:
        while not self.meta["stopped"]:
          self._train_step(stop)
    finally:
      if self.writer is not None:
        self.writer.close()
      if self.mngr is not None:
        self.mngr.wait_until_finished()
        self.mngr.close()
    return self.best_params, dict(self.meta, restored=restored_finished), self.step

  def _restore(self) -> None:
    """Replaces the fresh state, best params and record by the latest checkpoint's, if any."""
    if self.mngr is not None:
      abstract = self.training.abstract
      abstract_ckpt = {"train": _stored(abstract), "best_params": abstract.params}
      restored = checkpoint.restore_latest(self.mngr, abstract_ckpt)
      if restored is not None:
        ckpt_step, tree, self.meta = restored
        self.state, self.best_params = _loaded(tree["train"]), tree["best_params"]
        logging.info(
          "%s: resumed from checkpoint at step %d (%s)", self.name, ckpt_step, self.checkpoint_dir
        )

  def _train_step(self, stop: threading.Event) -> None:
    """Runs one optimizer step, then what falls due at it; raises Interrupted if `stop` is set."""
    batch = parallel.shard_batch(self.batch_fn(self.step), self.mesh)
    previous = self.step_metrics
    self.state, self.step_metrics = self.training.step(self.state, batch)
    # Keep at most two steps in flight: waiting on the previous step costs nothing
    # while this one runs, and a deep queue of steps with collectives can starve
    # XLA:CPU's thread pool when devices outnumber cores (a hang, seen with 4 forced
    # CPU devices on 2 cores).
    jax.block_until_ready(previous)
    self.step += 1
    step = self.step
    at_eval = self.eval_fn is not None and (step % self.eval_every == 0 or step == self.num_steps)
    at_checkpoint = step % self.checkpoint_every == 0
    at_log = self.eval_fn is None and self.log_every > 0 and step % self.log_every == 0
    if at_eval or at_checkpoint or at_log or step == self.num_steps:
      # The only host syncs: at evaluations, before a checkpoint and at the end, so a
      # diverged state is never saved over the last good one.
      loss = self._checked_loss()
    if at_eval:
      self._evaluate(loss)
    elif at_log:
      self._progress(loss)
    if self.eval_fn is None and step >= self.num_steps:
      # Without evaluations, the final params are the result.
      self.best_params = jax.tree.map(jnp.copy, self._result_params())
      self.meta.update(
        best_step=step, stopped=f"trained {self.num_steps} steps (final loss {loss:.5f})"
      )
      logging.info("%s: %s", self.name, self.meta["stopped"])
    if self.meta["stopped"] or at_checkpoint:
      self._save()
    if stop.is_set() and not self.meta["stopped"]:
      self._interrupt(stop, saved=at_checkpoint)

  def _result_params(self):
    """The params that are evaluated and returned: the moving average when the state keeps one."""
    return self.state.params if self.state.ema is None else self.state.ema

  def _checked_loss(self) -> float:
    """The latest step's training loss (a host sync); raises TrainingError if not finite."""
    loss = float(self.step_metrics["loss"])
    if not math.isfinite(loss):
      raise TrainingError(
        f"{self.name} training diverged: non-finite loss {loss} at step {self.step}; the last "
        f"good checkpoint is kept ({self.remedy})"
      )
    return loss

  def _evaluate(self, loss: float) -> None:
    """Evaluates the params: keeps them if the best, logs, and sets `stopped` when due.

    Stops after `patience` evaluations without a `min_delta` improvement, or at `num_steps`.
    """
    meta, step = self.meta, self.step
    params = self._result_params()
    val = self.eval_fn(params)
    meta["history"].append({"step": step, "train_loss": loss, "val_loss": val})
    if val < meta["best_val_loss"] - self.min_delta:
      meta.update(best_val_loss=val, best_step=step, bad_evals=0)
      self.best_params = jax.tree.map(jnp.copy, params)
    else:
      meta["bad_evals"] += 1
    self._progress(loss, val)
    if meta["bad_evals"] >= self.patience:
      meta["stopped"] = f"early stop: no improvement in {self.patience} evaluations"
    elif step >= self.num_steps:
      meta["stopped"] = (
        "reached num_steps (still improving: raise it for a stronger attack)"
        if meta["bad_evals"] == 0
        else "reached num_steps"
      )

  def _progress(self, loss: float, val: float | None = None) -> None:
    """Logs the losses with steps/s and ETA since the last log, and writes them to TensorBoard."""
    step, meta = self.step, self.meta
    now = time.perf_counter()
    rate = (step - self.step_last) * self.batch_size / max(now - self.t_last, 1e-9)
    eta = (self.num_steps - step) * self.batch_size / max(rate, 1e-9)
    scalars = {"loss/train": loss} if val is None else {"loss/train": loss, "loss/val": val}
    if self.writer is not None:
      self.writer.write_scalars(step, dict(scalars, images_per_second=rate))
    seen = "" if val is None else f", val {val:.5f} (best {meta['best_val_loss']:.5f} @ "
    seen += "" if val is None else f"{meta['best_step']})"
    logging.info(
      "%s step %d/%d: loss %.5f%s, %.0f img/s, ETA <= %.0fs",
      self.name,
      step,
      self.num_steps,
      loss,
      seen,
      rate,
      eta,
    )
    self.t_last, self.step_last = now, step

  def _save(self) -> None:
    """Saves a checkpoint of this step (state, best params, record), if there is a workdir."""
    if self.mngr is not None:
      # Copies: the next step donates `state` while the save may still read it.
      ckpt = jax.tree.map(jnp.copy, {"train": _stored(self.state), "best_params": self.best_params})
      checkpoint.save(self.mngr, self.step, ckpt, self.meta)

  def _interrupt(self, stop: threading.Event, *, saved: bool) -> NoReturn:
    """Stops at the signal `stop` records: checks the loss, saves this step unless `saved`
    (a checkpoint was just saved), and raises Interrupted."""
    self._checked_loss()
    if not saved:
      self._save()
    signame = stop.signum.name  # SIGTERM or SIGINT
    raise Interrupted(
      f"stopped by {signame} at {self.name} step {self.step}; checkpoint saved in "
      f"{self.checkpoint_dir}; re-run the same command to resume"
      if self.mngr is not None
      else f"stopped by {signame} at {self.name} step {self.step} (no workdir: nothing saved)",
      signum=stop.signum,
    )


def fit(
  training: Training,
  key,
  batch_fn: Callable[[int], dict],
  *,
  name: str,
  num_steps: int,
  batch_size: int,
  checkpoint_every: int,
  checkpoint_dir: str | None,
  mesh,
  eval_fn: Callable[[Any], float] | None = None,
  eval_every: int = 0,
  patience: int = 0,
  min_delta: float = 0.0,
  log_every: int = 0,
  remedy: str = "try a lower learning rate",
):
  """The one training loop, for every model privjax trains (the decoder, the builtin CNN).

  Runs `training.step` on `batch_fn(step)` (host arrays of the global batch, a function
  of the step only, so a resumed run sees the same batches) up to `num_steps`. With
  `eval_fn(params) -> validation loss`, evaluates every `eval_every` steps, keeps the
  best params and stops after `patience` evaluations without a `min_delta` improvement;
  without it, the final params are the result, and `log_every` (> 0) logs the training
  loss with steps/s and ETA that often. Losses also go to TensorBoard event files under
  <workdir>/tensorboard/<stage> (`privjax.runtime.events`). Checkpoints (orbax, every
  `checkpoint_every` steps and at the end) resume a killed run where it stopped; a
  finished run is restored without a step. SIGTERM or Ctrl-C saves a checkpoint at the
  next step and raises Interrupted; a non-finite loss raises TrainingError before that
  state can be saved. The checkpoint manager is closed on every exit.

  Returns:
    (params, meta, steps): the best (or final) params, a JSON-ready record of how it
    ran ("history", "best_val_loss", "best_step", "stopped", "restored"), and the steps run.
  """
  loop = _FitLoop(
    training=training,
    batch_fn=batch_fn,
    mesh=mesh,
    name=name,
    num_steps=num_steps,
    batch_size=batch_size,
    checkpoint_every=checkpoint_every,
    checkpoint_dir=checkpoint_dir,
    eval_fn=eval_fn,
    eval_every=eval_every,
    patience=patience,
    min_delta=min_delta,
    log_every=log_every,
    remedy=remedy,
  )
  return loop.run(key)


def split_validation(n: int, fraction: float, seed: int):
  """(train, validation) sorted indices of n examples: `fraction` of them (at least 1) held out."""
  perm = np.random.default_rng((seed, 7)).permutation(n)
  n_val = max(1, int(round(fraction * n)))
  return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class _OptimizerSettings(NamedTuple):
  """The training config's `train` fields `make_optimizer` reads, hashable (a cache key)."""

  learning_rate: float
  warmup_steps: int
  num_steps: int
  weight_decay: float


class _DecoderPrograms(NamedTuple):
  training: Training
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
    training=decoder_training(
      decoder, make_tx(optimizer), loss_fn, feature_dim, mesh=mesh, ema_decay=ema_decay
    ),
    val_loss=jax.jit(lambda p, f, x: loss_fn(decoder.apply(p, f), x)),
    loss=jax.jit(loss_fn),
    reconstruct=jax.jit(decoder.apply),
  )


def _decoder_batch_size(requested: int, num_train: int, mesh) -> int:
  """The decoder's global batch: `train.batch_size`, at most the `num_train` images it trains
  on, rounded up to a multiple of the device count (either change is logged)."""
  if requested > num_train:
    logging.info(
      "decoder: batch_size=%d is larger than the %d auxiliary images it trains on; using %d",
      requested,
      num_train,
      num_train,
    )
  return parallel.fit_batch_size(min(requested, num_train), mesh, what="decoder training")


def _fit_decoder(programs, train, val, config, *, batch_size: int, mesh, checkpoint_dir):
  """Logs the plan and trains the decoder with `fit`; returns what `fit` returns.

  Args:
    programs: the decoder's `_DecoderPrograms`.
    train: (features, images) to train on, in seeded batches of `batch_size`.
    val: (features, images) held out: their loss decides early stopping.
    config: the audit config (train, seed, eval_batch_size).
    batch_size: the global training batch.
    mesh: the data mesh.
    checkpoint_dir: as in `train_decoder`.
  """
  tc = config.train
  (x_train, y_train), (x_val, y_val) = train, val
  logging.info(
    "decoder: training on %d auxiliary images (%d held out for early stopping), batch %d, "
    "up to %d steps; batches are cut from one stream of seeded epochs, so no remainder is "
    "dropped (a batch that crosses an epoch end is completed from the next epoch)",
    len(x_train),
    len(x_val),
    batch_size,
    tc.num_steps,
  )

  def batch_fn(step):
    idx = batch_indices(len(x_train), batch_size, step, config.seed)
    return {"features": x_train[idx], "images": y_train[idx]}

  def eval_fn(params):
    losses = parallel.batched_map(
      functools.partial(programs.val_loss, params),
      [x_val, y_val],
      batch_size=config.eval_batch_size,
      mesh=mesh,
    )
    return float(np.mean(losses))

  return fit(
    programs.training,
    jax.random.key(config.seed),
    batch_fn,
    name="decoder",
    num_steps=tc.num_steps,
    batch_size=batch_size,
    checkpoint_every=tc.checkpoint_every,
    checkpoint_dir=checkpoint_dir,
    eval_fn=eval_fn,
    eval_every=tc.eval_every,
    patience=tc.patience,
    min_delta=tc.min_delta,
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


def train_decoder(features, images, config, *, mesh, checkpoint_dir: str | None = None, split=None):
  """Trains the decoder on auxiliary (features, images); returns (decoder, params, convergence).

  Args:
    features: [N, D] float32 auxiliary features.
    images: [N, H, W, C] float32 auxiliary images in [0, 1].
    config: the training config (privjax.attacks.decoder.training_config: decoder, train,
      ssim, seed, eval_batch_size).
    mesh: the data mesh.
    checkpoint_dir: where the orbax CheckpointManager keeps its steps; None keeps
      none. A directory with checkpoints resumes from the latest.
    split: (train indices, validation indices) of the auxiliary set; None draws
      `train.val_fraction` of it for validation with the seed.

  Returns:
    The decoder module, its best params (by validation loss, replicated), and a
    JSON-ready dict describing convergence.
  """
  tc = config.train
  decoder = make_decoder(config, images.shape[1:], features.shape[1])
  programs = _decoder_programs(
    decoder,
    make_optimizer,
    _OptimizerSettings(tc.learning_rate, tc.warmup_steps, tc.num_steps, tc.weight_decay),
    tc.loss,
    float(tc.ssim_weight),
    float(tc.ema_decay),
    config.ssim.filter_size,
    config.ssim.filter_sigma,
    features.shape[1],
    mesh,
  )
  if split is None:
    split = split_validation(features.shape[0], tc.val_fraction, config.seed)
  train_idx, val_idx = split
  x_train, y_train = features[train_idx], images[train_idx]
  x_val, y_val = features[val_idx], images[val_idx]
  batch_size = _decoder_batch_size(tc.batch_size, len(train_idx), mesh)
  # What predicting the mean training image scores on the validation images, shown beside
  # the decoder's. Not the test of whether it learned: with an SSIM term in its loss the
  # decoder draws sharp images, whose mse can exceed the mean image's (a blur, the
  # mse-best guess without information) while they carry much of each image.
  mean_image = np.broadcast_to(y_train.mean(axis=0), y_val.shape)
  mean_image_val_loss = float(np.mean(programs.loss(mean_image, y_val)))
  mean_image_val_mse = float(np.mean((mean_image - y_val) ** 2))
  best_params, meta, step = _fit_decoder(
    programs,
    (x_train, y_train),
    (x_val, y_val),
    config,
    batch_size=batch_size,
    mesh=mesh,
    checkpoint_dir=checkpoint_dir,
  )
  # Whether the decoder uses the features: its held-out reconstructions against their own
  # images and against the other held-out images (the "flat" warning reads these).
  reconstructions = parallel.batched_map(
    functools.partial(programs.reconstruct, best_params),
    [x_val],
    batch_size=config.eval_batch_size,
    mesh=mesh,
  )
  own_mse = _per_example_mse(reconstructions, y_val)
  other_mse = mismatched_mse(reconstructions, y_val)
  convergence = {
    "steps": step,
    "best_step": meta["best_step"],
    "best_val_loss": meta["best_val_loss"],
    "stopped": meta["stopped"],
    "batch_size": batch_size,
    "train_examples": int(len(train_idx)),
    "val_examples": int(len(val_idx)),
    "mean_image_val_loss": mean_image_val_loss,
    # In mse, whatever the loss: the held-out images against the decoder's reconstructions
    # of them, against the mean auxiliary image, and against the decoder's reconstructions
    # of the other held-out images (no information about the image at hand: a decoder
    # that learned nothing from the features is as close to them as to its own);
    # mismatched_val_mse_se: the standard error of the mean paired difference. None with
    # fewer than 2 held-out images.
    "best_val_mse": float(np.mean(own_mse)),
    "mean_image_val_mse": mean_image_val_mse,
    "mismatched_val_mse": None if other_mse is None else float(np.mean(other_mse)),
    "mismatched_val_mse_se": None if other_mse is None else _standard_error(other_mse - own_mse),
    "history": meta["history"],
  }
  return decoder, best_params, convergence
