"""The builtin recognition model's Flax module (also the builtin evaluator's): a small CNN.

The decoder attacker's inverse model is its own (privjax/attacks/decoder_net.py).
"""

from __future__ import annotations

import math

import flax.linen as nn

__all__ = ["WORKING_SIZE", "RecognitionCNN", "stem_stride"]

# The builtin model's working size: the first convolution strides larger images down to at
# most this many pixels a side (`stem_stride`), so its cost per image stays that of 16x16.
WORKING_SIZE = 16


def stem_stride(image_size: int) -> int:
  """The first convolution's stride for images of `image_size` pixels a side: 1 up to
  WORKING_SIZE, else the smallest that brings them to at most WORKING_SIZE (64 -> 4)."""
  return max(1, math.ceil(image_size / WORKING_SIZE))


class RecognitionCNN(nn.Module):
  """A small CNN classifier whose penultimate layer is the embedding.

  `embed` maps [N, H, W, C] images in [0, 1] to [N, embed_dim] features;
  `__call__` adds the classification head (used only to train the model).
  """

  num_classes: int
  embed_dim: int = 64
  width: int = 32  # channels of the first convolution; the second has twice as many
  # The first convolution's stride (its kernel is max(3, stride) wide, so it sees every
  # pixel): large images are brought down to the small working size the model is built for.
  stride: int = 1

  def setup(self):
    k = max(3, self.stride)
    self.conv1 = nn.Conv(self.width, (k, k), strides=(self.stride, self.stride))
    self.conv2 = nn.Conv(2 * self.width, (3, 3))
    self.dense = nn.Dense(self.embed_dim)
    self.head = nn.Dense(self.num_classes)

  def embed(self, images):
    x = nn.relu(self.conv1(images))
    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(self.conv2(x))
    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    return nn.relu(self.dense(x))

  def __call__(self, images):
    return self.head(self.embed(images))
