"""The Flax modules' shapes: where the decoder convolves, how the builtin model strides."""

import jax
import jax.numpy as jnp
import pytest

from privjax.models.nets import Decoder, RecognitionCNN, stem_stride


def _conv_sizes(module, x):
  """The spatial sizes every convolution of `module` applied to `x` outputs."""
  params = module.init(jax.random.key(0), x)
  jaxpr = jax.make_jaxpr(lambda p: module.apply(p, x))(params)
  return [
    eqn.outvars[0].aval.shape[1]
    for eqn in jaxpr.jaxpr.eqns
    if eqn.primitive.name == "conv_general_dilated"
  ]


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

  from privjax import train

  cfg = ml_collections.ConfigDict({"width": 0, "hidden": 512})
  assert train.decoder_capacity(cfg, (side, side, 3), 64) == (width, 512)
