"""The reference recognition model privjax audits by default: a small CNN classifier.

Trained (or restored from the workdir) on the model-train split by the same loop as
the decoder (`runtime.loop.fit`); its penultimate layer is the embedding the audit inverts.
The model is trained for a fixed number of steps with a seeded batch order, so the
same config always yields the same model.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from privjax.data.splits import Split, batch_indices
from privjax.errors import ConfigError
from privjax.models.nets import RecognitionCNN, stem_stride
from privjax.runtime import loop, parallel

__all__ = ["accuracy", "embed_fn_for", "train_or_restore", "validate"]


def accuracy(model, params, split: Split, *, mesh, batch_size: int) -> float:
  """Top-1 accuracy of the classifier on a labelled split."""
  predict = jax.jit(lambda x: jnp.argmax(model.apply(params, x), axis=-1))
  pred = parallel.batched_map(predict, [split.images], batch_size=batch_size, mesh=mesh)
  return float(np.mean(pred == split.labels))


def embed_fn_for(model: RecognitionCNN):
  """The pure embedding function `embed_fn(params, images) -> [N, D]` of the model."""
  return functools.partial(model.apply, method=RecognitionCNN.embed)


def validate(model_config, field: str = "model") -> None:
  """Checks config.model (or config.evaluator) for the builtin model; raises ConfigError
  naming the bad field."""
  m = model_config
  for name in ("width", "embed_dim", "train_steps", "batch_size"):
    v = m[name]
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
      raise ConfigError(f"config.{field}.{name} must be a positive integer, got {v!r}")
  v = m.get("stride", 0)
  if not isinstance(v, int) or isinstance(v, bool) or v < 0:
    raise ConfigError(f"config.{field}.stride must be an integer >= 0 (0: auto), got {v!r}")
  lr = m.learning_rate
  if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
    raise ConfigError(f"config.{field}.learning_rate must be a number > 0, got {lr!r}")


def _fit_classifier(
  model: RecognitionCNN,
  train: Split,
  mc,
  *,
  seed: int,
  stream: int,
  name: str,
  field: str,
  mesh,
  checkpoint_dir: str | None,
):
  """Trains `model` on `train` with `loop.fit`, or restores it; returns (params, meta).

  Its init and batch order draw from the random stream `stream` of `seed`; `name` names
  it in logs, `field` the learning rate to lower if training diverges.
  """
  tx = optax.adam(optax.cosine_decay_schedule(mc.learning_rate, mc.train_steps))

  def loss(params, batch):
    logits = model.apply(params, batch["images"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()

  def init_params(key):
    return model.init(key, jnp.zeros((1,) + train.images.shape[1:], jnp.float32))

  batch_size = parallel.fit_batch_size(mc.batch_size, mesh, what="recognition training")

  def batch_fn(step):
    idx = batch_indices(train.images.shape[0], batch_size, step, seed + stream)
    return {"images": train.images[idx], "labels": train.labels[idx]}

  # The same loop as the decoder's: checkpointed (at the end, and at SIGTERM or Ctrl-C,
  # which resume), a non-finite loss stops it, a finished run is restored without a step.
  params, meta, _ = loop.fit(
    loop.make_training(init_params, loss, tx, mesh=mesh),
    jax.random.fold_in(jax.random.key(seed), stream),
    batch_fn,
    name=name,
    num_steps=mc.train_steps,
    batch_size=batch_size,
    checkpoint_every=mc.train_steps,
    checkpoint_dir=checkpoint_dir,
    mesh=mesh,
    log_every=max(1, mc.train_steps // 10),
    remedy=f"try a lower config.{field}.learning_rate",
  )
  return params, meta


def _model_info(
  model: RecognitionCNN, params, meta, mc, train: Split, test: Split, *, mesh, batch_size: int
) -> dict:
  """The JSON-ready info of the trained model: architecture, training, test accuracy (by
  batches of `batch_size`), whether it was restored."""
  return {
    "architecture": f"RecognitionCNN(conv{mc.width}"
    + (f"/stride{model.stride}" if model.stride > 1 else "")
    + f"-pool-conv{2 * mc.width}-pool-"
    f"dense{mc.embed_dim}-head"
    f"{model.num_classes}); embedding = the {mc.embed_dim}-d penultimate layer",
    "train_examples": int(train.images.shape[0]),
    "train_steps": int(mc.train_steps),
    "training": meta["stopped"],
    "test_examples": int(test.images.shape[0]),
    "test_accuracy": accuracy(model, params, test, mesh=mesh, batch_size=batch_size),
    "restored": meta["restored"],
  }


def train_or_restore(
  train: Split,
  test: Split,
  mc,
  *,
  seed: int,
  eval_batch_size: int,
  mesh,
  checkpoint_dir: str | None,
  field: str = "model",
):
  """Returns (embed_fn, params, info) of the reference CNN, training it only if needed.

  Args:
    train: the labelled model-train split.
    test: held-out labelled images for the test accuracy (never seen in training).
    mc: the model's config (config.model, or config.evaluator for the evaluator).
    seed: the run's seed (config.seed).
    eval_batch_size: the batch for the test accuracy.
    mesh: the data mesh.
    checkpoint_dir: where the trained params are kept; None keeps nothing.
    field: "model" (the audited model) or "evaluator" (the independent evaluator):
      names it in logs and errors, and picks the random stream of `seed` its init and
      batch order draw from, so the two models never share them.

  Returns:
    The embedding function, the replicated params and a JSON-ready info dict
    (architecture, training steps, test accuracy, whether it was restored).
  """
  stream, name = (1, "recognition model") if field == "model" else (2, "evaluator")
  num_classes = int(max(train.labels.max(), test.labels.max())) + 1
  stride = mc.get("stride", 0) or stem_stride(max(train.images.shape[1:3]))
  model = RecognitionCNN(
    num_classes=num_classes, embed_dim=mc.embed_dim, width=mc.width, stride=stride
  )
  params, meta = _fit_classifier(
    model,
    train,
    mc,
    seed=seed,
    stream=stream,
    name=name,
    field=field,
    mesh=mesh,
    checkpoint_dir=checkpoint_dir,
  )
  info = _model_info(model, params, meta, mc, train, test, mesh=mesh, batch_size=eval_batch_size)
  logging.info(
    "%s %s: test accuracy %.4f on %d held-out images",
    name,
    f"restored from {checkpoint_dir}" if meta["restored"] else "trained",
    info["test_accuracy"],
    info["test_examples"],
  )
  return embed_fn_for(model), params, info
