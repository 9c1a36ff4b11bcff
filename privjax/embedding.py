"""The audited model: what turns images into the features the attack inverts.

`config.model.kind` picks one:
  "builtin"      privjax's RecognitionCNN, trained on the model-train split (recognition.py);
  "flax"         a Flax linen module named by import path ("package.module:ClassName"),
                 built with config.model.kwargs, params restored from an orbax checkpoint,
                 the embedding given by config.model.method (default: __call__);
  "function"     a factory named by import path, `make(config) -> (embed_fn, params)`,
                 for any pure JAX embedding function;
  "precomputed"  no model: the npz source holds the features.

`config.evaluator` (the independent model that judges identity leakage, see
privjax/identity.py) takes the same kinds but "precomputed", plus "off" and "auto"
("builtin" when the auxiliary and target images are labelled, else "off").
"""

from __future__ import annotations

import functools
import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from privjax import parallel, recognition
from privjax.errors import ConfigError, ModelError

KINDS = ("builtin", "flax", "function", "precomputed")
EVALUATOR_KINDS = ("auto", "off", "builtin", "flax", "function")


def import_object(path: str, *, field: str):
  """Imports "package.module:name"; raises ConfigError naming the field on failure."""
  if not isinstance(path, str) or path.count(":") != 1:
    raise ConfigError(f"config.{field} must be 'package.module:name', got {path!r}")
  module_name, attr = path.split(":")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ConfigError(f"config.{field}={path!r}: cannot import module {module_name!r}: {e}") from e
  if not hasattr(module, attr):
    raise ConfigError(f"config.{field}={path!r}: module {module_name!r} has no {attr!r}")
  return getattr(module, attr)


def validate(m, field: str = "model") -> None:
  """Checks config.model (or config.evaluator, `field`) for its kind; raises ConfigError
  naming the bad field."""
  kinds = KINDS if field == "model" else EVALUATOR_KINDS
  if m.kind not in kinds:
    raise ConfigError(f"config.{field}.kind must be one of {list(kinds)}, got {m.kind!r}")
  if m.kind in ("builtin", "auto"):  # "auto" may become "builtin"
    recognition.validate(m, field)
  elif m.kind == "flax":
    if not m.module or not m.checkpoint:
      raise ConfigError(f"config.{field}.kind='flax' needs config.{field}.module and .checkpoint")
  elif m.kind == "function" and not m.factory:
    raise ConfigError(f"config.{field}.kind='function' needs config.{field}.factory")


def _restore_params(directory: str, field: str):
  """Restores a pytree from an orbax checkpoint: a CheckpointManager dir (latest step)
  or a single StandardCheckpointer checkpoint."""
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise ConfigError(
      f"config.{field}.checkpoint must be an orbax checkpoint directory, got {directory!r}"
    )
  steps = [int(e) for e in os.listdir(directory) if e.isdigit()]
  path = os.path.join(directory, str(max(steps))) if steps else directory
  if steps and os.path.isdir(os.path.join(path, "default")):
    path = os.path.join(path, "default")
  try:
    # Restore onto this run's mesh (replicated), not onto the devices it was saved
    # from: another machine, device count or process count is fine.
    ckptr = ocp.StandardCheckpointer()
    tree = ckptr.metadata(path).item_metadata
    repl = parallel.replicated(parallel.data_mesh())
    abstract = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=repl), getattr(tree, "tree", tree)
    )
    return ckptr.restore(path, abstract)
  except Exception as e:  # orbax raises many types for unreadable checkpoints
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ModelError(f"cannot restore an orbax checkpoint from {path}: {msg}") from e


def _first_mismatch(expected, got) -> str | None:
  exp = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(expected)}
  have = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(got)}
  for key in sorted(set(exp) | set(have)):
    if key not in have:
      return f"missing {key}"
    if key not in exp:
      return f"unexpected {key}"
    if tuple(exp[key].shape) != tuple(np.shape(have[key])):
      return f"{key} has shape {tuple(np.shape(have[key]))}, the module expects {exp[key].shape}"
  return None


def load_flax(m, image_shape, field: str = "model"):
  """(embed_fn, params) of a Flax module restored from an orbax checkpoint."""
  cls = import_object(m.module, field=f"{field}.module")
  kwargs = m.kwargs.to_dict() if hasattr(m.kwargs, "to_dict") else dict(m.kwargs or {})
  try:
    module = cls(**kwargs)
  except TypeError as e:
    raise ConfigError(f"config.{field}.kwargs do not fit {m.module}: {e}") from e
  method = getattr(type(module), m.method, None) if m.method else None
  if m.method and method is None:
    raise ConfigError(f"config.{field}.method={m.method!r}: {m.module} has no such method")
  try:
    expected = jax.eval_shape(
      functools.partial(module.init, method=method),
      jax.random.key(0),
      jnp.zeros((1, *image_shape), jnp.float32),
    )
  except Exception as e:  # the module rejects this input shape
    raise ModelError(
      f"{m.module} rejects images of shape {list(image_shape)}: {str(e).splitlines()[0]}"
    ) from e
  restored = _restore_params(m.checkpoint, field)
  variables = (
    restored if isinstance(restored, dict) and "params" in restored else {"params": restored}
  )
  problem = _first_mismatch(expected, variables)
  if problem:
    raise ModelError(f"checkpoint {m.checkpoint} does not match {m.module}: {problem}")
  variables = jax.tree.map(lambda e, v: jnp.asarray(v, e.dtype), expected, variables)
  return functools.partial(module.apply, method=method), variables


def load_function(m, config, field: str = "model"):
  """(embed_fn, params) from a user factory `make(config)`."""
  make = import_object(m.factory, field=f"{field}.factory")
  out = make(config)
  if not (isinstance(out, tuple) and len(out) == 2 and callable(out[0])):
    raise ModelError(f"{m.factory} must return (embed_fn, params), got {type(out).__name__}")
  return out
