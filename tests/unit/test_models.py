"""The Flax modules' shapes: where the decoder convolves, how the builtin model strides."""

import jax
import jax.numpy as jnp
import pytest

from privjax.attacks.decoder_net import Decoder
from privjax.models.nets import RecognitionCNN, stem_stride


def _conv_sizes(module, x):
  """The spatial sizes every convolution of `module` applied to `x` outputs."""
  params = module.init(jax.random.key(0), x)
  jaxpr = jax.make_jaxpr(lambda p: module.apply(p, x))(params)
  return [
    eqn.outvars[0].aval.shape[1]
    for eqn in jaxpr.jaxpr.eqns
    if eqn.primitive.name == "conv_general_dilated"
  ]


@pytest.mark.slow
@pytest.mark.parametrize("size,largest", [(16, 16), (32, 32), (64, 32), (128, 32)])
def test_the_decoder_convolves_at_up_to_max_conv_size_and_outputs_the_image(size, largest):
  decoder = Decoder((size, size, 3))
  features = jnp.zeros((2, 10))
  assert max(_conv_sizes(decoder, features)) == largest
  assert decoder.apply(decoder.init(jax.random.key(0), features), features).shape == (
    2,
    size,
    size,
    3,
  )


def test_a_larger_max_conv_size_convolves_at_the_full_size():
  assert max(_conv_sizes(Decoder((64, 64, 3), max_conv_size=64), jnp.zeros((2, 10)))) == 64


@pytest.mark.slow
@pytest.mark.parametrize("size,stride", [(8, 1), (16, 1), (17, 2), (32, 2), (64, 4), (150, 10)])
def test_the_builtin_model_strides_large_images_to_its_working_size(size, stride):
  assert stem_stride(size) == stride
  model = RecognitionCNN(num_classes=3, stride=stride)
  x = jnp.zeros((2, size, size, 3))
  sizes = _conv_sizes(model, x)
  assert sizes[0] == -(-size // stride) <= 16  # the first convolution's output
  params = model.init(jax.random.key(0), x)
  assert params["params"]["conv1"]["kernel"].shape[:2] == (max(3, stride),) * 2


@pytest.mark.parametrize("side,width", [(16, 64), (32, 64), (63, 64), (64, 128), (150, 128)])
def test_the_automatic_decoder_width_is_64_under_64_pixels_and_128_from_64(side, width):
  import ml_collections

  from privjax.attacks import decoder_training

  cfg = ml_collections.ConfigDict({"width": 0, "hidden": 512})
  assert decoder_training.decoder_capacity(cfg, (side, side, 3), 64) == (width, 512)


# --- model kinds: every one in the registry, each loader given its own settings ---------


def _builtin_settings(kind="builtin"):
  import ml_collections

  return ml_collections.ConfigDict(
    {
      "kind": kind,
      "width": 4,
      "embed_dim": 6,
      "stride": 0,
      "train_steps": 2,
      "batch_size": 4,
      "learning_rate": 1e-3,
    }
  )


def _labelled(n, seed):
  import numpy as np

  from privjax.data.splits import Split

  images = np.random.default_rng(seed).random((n, 8, 8, 1), dtype=np.float32)
  return Split(images, np.arange(n) % 2)


def test_every_model_kind_is_in_the_registry_with_what_it_declares():
  import ml_collections

  from privjax.errors import ConfigError
  from privjax.models import kinds

  own = ["builtin", "precomputed"]
  assert kinds.kinds("model") == [*own, "dlib_face", "flax", "function"]
  assert kinds.kinds("evaluator") == ["auto", "off", "builtin", "dlib_face", "flax", "function"]
  assert all(kinds.declared(name).get("own") for name in own)
  assert kinds.declared("builtin")["trains"] and kinds.declared("precomputed")["stored_features"]
  assert kinds.declared(kinds.AUTO)["trains"]  # what the evaluator's "auto" becomes
  stored = ml_collections.ConfigDict({"kind": "precomputed"})
  assert kinds.load_kind(stored, kinds.Given("model", (8, 8, 1))) == (None, None, {})
  # "auto" is the evaluator's alone; "precomputed" no evaluator's.
  for kind, field in [("auto", "model"), ("precomputed", "evaluator")]:
    with pytest.raises(ConfigError, match=f"config.{field}.kind must be one of"):
      kinds.validate(ml_collections.ConfigDict({"kind": kind}), field)
  with pytest.raises(ConfigError, match="config.evaluator.width must be a positive integer"):
    bad = _builtin_settings("auto")
    bad.width = 0
    kinds.validate(bad, "evaluator")  # "auto" is checked as the builtin it may become


@pytest.mark.slow
def test_the_builtin_kind_trains_from_its_own_settings_and_explicit_values(tmp_path):
  from privjax.models import kinds
  from privjax.runtime import parallel

  training = kinds.Training(
    _labelled(8, 0),
    _labelled(4, 1),
    seed=0,
    eval_batch_size=4,
    overwrite=False,
    workdir=str(tmp_path),
    mesh=parallel.data_mesh(),
  )
  m = _builtin_settings()
  given = kinds.Given("model", (8, 8, 1), training)
  embed_fn, params, info = kinds.load_kind(m, given)  # no run config
  assert embed_fn(params, training.test.images).shape == (4, 6)
  assert info["train_examples"] == 8 and not info["restored"]
  assert (tmp_path / "checkpoints" / "recognition").is_dir()
  assert kinds.load_kind(m, given)[2]["restored"]
  with pytest.raises(ValueError, match="needs Given.training"):
    kinds.load_kind(m, kinds.Given("model", (8, 8, 1)))


@pytest.mark.slow
def test_the_auto_evaluator_trains_as_the_builtin_kind_in_its_own_checkpoint(tmp_path):
  import json

  import ml_collections

  from privjax.data.splits import AuditData
  from privjax.models import kinds
  from privjax.runtime import parallel, workdir
  from privjax.stages import loading

  config = ml_collections.ConfigDict(
    {"seed": 0, "eval_batch_size": 4, "overwrite": False, "evaluator": _builtin_settings("auto")}
  )
  aux, targets = _labelled(8, 0), _labelled(4, 1)
  d = AuditData(None, aux, targets, "toy")
  loaded = loading.Loaded(
    d, aux.images, targets.images, targets.labels, aux.labels, None, "toy", kinds.AUTO, None, None
  )
  ev = loading.evaluator(config, loaded, workdir=str(tmp_path), mesh=parallel.data_mesh())
  assert ev.info["kind"] == "builtin" and ev.info["trained_on"] == "the auxiliary set"
  folder = tmp_path / "checkpoints" / "evaluator"
  stored = json.loads((folder / workdir.FINGERPRINT_FILE).read_text())
  assert stored["evaluator"]["kind"] == "builtin"  # the kind it became, as before
