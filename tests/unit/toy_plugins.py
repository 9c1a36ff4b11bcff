"""Toy plug-ins of every kind, defined outside the package and named by import path
("tests.unit.toy_plugins:NAME"), as a user's own would be (tests/unit/test_plugins.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from privjax import attacks
from privjax.data import sources


def mean_image(aux, ctx, cfg):
  """An attacker: the mean auxiliary image (times cfg.gain), whatever the features."""
  del ctx
  mean = aux.images[aux.train].mean(axis=0) * cfg.gain
  return attacks.Fitted(lambda f: np.broadcast_to(mean, (len(f), *mean.shape)), {"gain": cfg.gain})


def scale(features, key, *, strength):
  """A defense: every feature times `strength` (deterministic: the key is unused)."""
  del key
  return features * strength


def mean_abs_error(originals, reconstructions):
  """A per-target metric: 1 - mean |error| (higher: closer, more leakage)."""
  return 1.0 - jnp.abs(originals - reconstructions).mean(axis=(1, 2, 3))


def metric_that_raises(originals, reconstructions):
  """A per-target metric with a bug: a RuntimeError as soon as it is traced."""
  del originals, reconstructions
  raise RuntimeError("the toy metric broke")


def metric_that_divides_by_zero(originals, reconstructions):
  """A per-target metric with a bug: a Python division by zero when traced."""
  weight = 1 // (originals.shape[-1] - reconstructions.shape[-1])
  return weight * jnp.abs(originals - reconstructions).mean(axis=(1, 2, 3))


def metric_that_fails_on_the_host(originals, reconstructions):
  """A per-target metric that traces fine and fails when it runs: its host callback raises
  (as a metric calling a remote service might)."""
  del reconstructions

  def host(x):
    raise OSError(f"the toy metric's service is down ({x.shape[0]} images unscored)")

  return jax.pure_callback(host, jax.ShapeDtypeStruct(originals.shape[:1], jnp.float32), originals)


def per_pixel_error(originals, reconstructions):
  """A per-target metric with a bug: an error per pixel, not one number per image."""
  return jnp.abs(originals - reconstructions)


def always_one(originals, reconstructions):
  """A per-target metric that carries no information: 1 whatever the images."""
  del reconstructions
  return jnp.ones(originals.shape[:1], jnp.float32)


def flat_model(m, image_shape, config, field):
  """A model kind: the flattened image times a fixed random projection of m.width columns."""
  del config, field
  d = int(np.prod(image_shape))
  proj = np.random.default_rng(0).normal(size=(d, m.width)).astype(np.float32)
  return (lambda p, x: x.reshape(x.shape[0], -1) @ p), proj, {"toy": "flat", "width": m.width}


def stripes(d):
  """A data source: 60 8x8 grey images of horizontal stripes at 3 phases (the labels)."""
  del d
  images = np.zeros((60, 8, 8), np.float32)
  labels = np.arange(60) % 3
  for i, phase in enumerate(labels):
    images[i, phase::3, :] = 1.0
  return {
    "all": sources.SplitSource(
      60, lambda idx: ([images[i] for i in idx], [int(labels[i]) for i in idx])
    )
  }


def feature_norm_ratio(aux_features, aux_labels, target_features, target_labels):
  """A utility: the mean target feature norm over the mean auxiliary one."""
  del aux_labels, target_labels
  return {
    "norm_ratio": float(
      np.linalg.norm(target_features, axis=1).mean() / np.linalg.norm(aux_features, axis=1).mean()
    )
  }


def mean_image_as(aux, ctx, cfg):
  """An attacker returning the mean auxiliary image in another form (cfg.form): "uint8"
  (0-255, read by the pixel rule), "float255" (0-255 floats), "wrong_shape", "none",
  "raises" (in reconstruct)."""
  del ctx
  mean = aux.images[aux.train].mean(axis=0)

  def reconstruct(f):
    out = np.broadcast_to(mean, (len(f), *mean.shape))
    if cfg.form == "uint8":
      return np.round(out * 255).astype(np.uint8)
    if cfg.form == "float255":
      return out * 255.0
    if cfg.form == "wrong_shape":
      return out[:, :4]
    if cfg.form == "none":
      return None
    raise RuntimeError("the toy attacker broke")

  return attacks.Fitted(reconstruct)


def broken_utility(aux_features, aux_labels, target_features, target_labels):
  """A utility that raises."""
  raise ZeroDivisionError("the toy utility divided by zero")


def widen(features, key, *, strength):
  """A defense that adds a feature column (the width changes)."""
  del key
  return jnp.concatenate([features, strength * jnp.ones((features.shape[0], 1))], axis=1)


def flatten(features, key, *, strength):
  """A defense that returns one number per batch, not a feature vector per row."""
  del key
  return strength * features.sum(axis=1)


def narrow(features, key, *, strength):
  """A defense that drops the last feature column (the width changes)."""
  del key
  return strength * features[:, :-1]


def mean_image_pure(aux, ctx, cfg):
  """An attacker that returns only its pure function and params, which the runner batches
  over the mesh: the mean auxiliary image times cfg.gain, whatever the features."""
  del ctx

  def apply(params, features):
    return jnp.broadcast_to(params["mean"] * cfg.gain, (features.shape[0], *params["mean"].shape))

  mean = jnp.asarray(aux.images[aux.train].mean(axis=0))
  return attacks.Fitted(params={"mean": mean}, apply=apply, info={"gain": cfg.gain})
