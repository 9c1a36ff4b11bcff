"""The reference recognition model privjax audits by default: a small CNN classifier.

Trained (or restored from the workdir) on the model-train split; its penultimate
layer is the embedding the audit inverts. The model is trained for a fixed number of
steps with a seeded batch order, so the same config always yields the same model.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from privjax import checkpoint, parallel
from privjax.data import Split, batch_indices
from privjax.errors import ConfigError, TrainingError
from privjax.models import RecognitionCNN


def _classify_step(carry, batch, *, model, tx):
  params, opt_state = carry

  def objective(p):
    logits = model.apply(p, batch["images"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()

  loss, grads = jax.value_and_grad(objective)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return (optax.apply_updates(params, updates), opt_state), loss


def accuracy(model, params, split: Split, *, mesh, batch_size: int) -> float:
  """Top-1 accuracy of the classifier on a labelled split."""
  predict = jax.jit(lambda x: jnp.argmax(model.apply(params, x), axis=-1))
  pred = parallel.batched_map(predict, [split.images], batch_size=batch_size, mesh=mesh)
  return float(np.mean(pred == split.labels))


def embed_fn_for(model: RecognitionCNN):
  """The pure embedding function `embed_fn(params, images) -> [N, D]` of the model."""
  return functools.partial(model.apply, method=RecognitionCNN.embed)


def validate(model_config) -> None:
  """Checks config.model for the builtin model; raises ConfigError naming the bad field."""
  m = model_config
  if m.kind != "builtin":
    raise ConfigError(f"config.model.kind must be 'builtin', got {m.kind!r}")
  for name in ("embed_dim", "train_steps", "batch_size"):
    v = m[name]
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
      raise ConfigError(f"config.model.{name} must be a positive integer, got {v!r}")
  lr = m.learning_rate
  if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
    raise ConfigError(f"config.model.learning_rate must be a number > 0, got {lr!r}")


def train_or_restore(train: Split, test: Split, config, *, mesh, checkpoint_dir: str | None):
  """Returns (embed_fn, params, info) of the reference CNN, training it only if needed.

  Args:
    train: the labelled model-train split.
    test: held-out labelled images for the test accuracy (never seen in training).
    config: the audit config; reads config.model and config.seed.
    mesh: the data mesh.
    checkpoint_dir: where the trained params are kept; None keeps nothing.

  Returns:
    The embedding function, the replicated params and a JSON-ready info dict
    (architecture, training steps, test accuracy, whether it was restored).
  """
  mc = config.model
  if train.labels is None:
    raise ConfigError("config.model.kind='builtin' needs labels on the model-train split")
  num_classes = int(max(train.labels.max(), test.labels.max())) + 1
  model = RecognitionCNN(num_classes=num_classes, embed_dim=mc.embed_dim)
  tx = optax.adam(optax.cosine_decay_schedule(mc.learning_rate, mc.train_steps))
  repl = parallel.replicated(mesh)

  def init(key):
    params = model.init(key, jnp.zeros((1,) + train.images.shape[1:], jnp.float32))
    return params, tx.init(params)

  key = jax.random.fold_in(jax.random.key(config.seed), 1)
  abstract = jax.eval_shape(init, key)
  mngr = checkpoint.manager(checkpoint_dir, max_to_keep=1) if checkpoint_dir else None
  restored = None
  if mngr is not None:
    abstract_params = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=repl), abstract[0]
    )
    restored = checkpoint.restore_latest(mngr, abstract_params)
  if restored is not None:
    _, params, info = restored
    info = dict(info, restored=True)
    logging.info(
      "recognition model restored from %s (test accuracy %.4f)",
      checkpoint_dir,
      info["test_accuracy"],
    )
  else:
    carry = jax.jit(init, out_shardings=jax.tree.map(lambda _: repl, abstract))(key)
    step_fn = jax.jit(functools.partial(_classify_step, model=model, tx=tx), donate_argnums=(0,))
    batch_size = parallel.fit_batch_size(mc.batch_size, mesh, what="recognition training")
    loss = None
    for step in range(mc.train_steps):
      idx = batch_indices(train.images.shape[0], batch_size, step, config.seed + 1)
      batch = parallel.shard_batch({"images": train.images[idx], "labels": train.labels[idx]}, mesh)
      previous = loss
      carry, loss = step_fn(carry, batch)
      jax.block_until_ready(previous)  # At most two steps in flight (see train.py).
    final_loss = float(loss)
    if not np.isfinite(final_loss):
      raise TrainingError(f"recognition model training diverged: loss {final_loss}")
    params = carry[0]
    info = {
      "architecture": f"RecognitionCNN(conv32-pool-conv64-pool-dense{mc.embed_dim}-head"
      f"{num_classes}); embedding = the {mc.embed_dim}-d penultimate layer",
      "train_examples": int(train.images.shape[0]),
      "train_steps": int(mc.train_steps),
      "final_train_loss": final_loss,
      "test_examples": int(test.images.shape[0]),
      "test_accuracy": accuracy(model, params, test, mesh=mesh, batch_size=config.eval_batch_size),
    }
    logging.info(
      "recognition model trained: test accuracy %.4f on %d held-out images",
      info["test_accuracy"],
      info["test_examples"],
    )
    if mngr is not None:
      checkpoint.save(mngr, mc.train_steps, params, info)
      mngr.wait_until_finished()
    info = dict(info, restored=False)
  if mngr is not None:
    mngr.close()
  return embed_fn_for(model), params, info
