"""The generic training loop: any Flax model, optax-trained, data-parallel, checkpointed.

The train step is a pure `(state, batch) -> (state, metrics)` function jitted once
with the state donated; params are replicated over the mesh, batches sharded along
"data", and the optimizer state split over the devices leaf by leaf, all expressed
as shardings (XLA inserts the collectives), so any optax chain computes what it
computes on one device. `fit` runs it on the caller's batches (a function of the step)
up to `num_steps`, optionally evaluating the caller's validation loss with early
stopping (patience), checkpointing with orbax so a killed run resumes, and stopping
cleanly on SIGTERM or Ctrl-C. It knows no model: the callers (the decoder attacker,
the builtin recognition model) bring their params, loss, optimizer and batches.
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

from privjax.errors import Interrupted, TrainingError
from privjax.runtime import checkpoint, events, parallel

__all__ = [
  "SPLIT_MIN_ELEMENTS",
  "Training",
  "fit",
  "make_training",
  "split_spec",
  "split_validation",
  "train_step",
]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  # The exponential moving average of `params` (Polyak averaging), or None when off.
  ema: Any = None


def train_step(state: TrainState, batch, *, loss: Callable, tx, ema_decay: float = 0.0):
  """One optimizer step on the global batch: `(state, batch) -> (state, metrics)`.

  With `ema_decay` > 0 it also updates `state.ema`, the debiased moving average of the
  params: after t steps the params of step s weigh (1 - d) d^(t - s) / (1 - d^t), so the
  weights sum to 1 and the random initial params weigh nothing (the average after the
  first step is that step's params). Without the debiasing the initial params would
  still weigh d^t: 37% after 100 steps at 0.99, and a short run's model would be
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
  """The jitted pieces of training a model on one mesh (see `make_training`)."""

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
  """(train, validation) sorted indices of n examples: `fraction` of them (at least 1) held out,
  drawn with `seed` (the validation set that `fit`'s `eval_fn` early-stops on)."""
  perm = np.random.default_rng((seed, 7)).permutation(n)
  n_val = max(1, int(round(fraction * n)))
  return np.sort(perm[n_val:]), np.sort(perm[:n_val])
