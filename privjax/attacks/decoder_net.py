"""The decoder attacker's Flax module: the inverse model, features -> image.

It upsamples with sub-pixel convolutions (a 3x3 convolution to 4x the channels, then
depth-to-space) rather than strided transposed convolutions: the two have the same
expressive power (Shi et al. 2016), and XLA:CPU computes the kernel gradient of a
strided transposed convolution 30-85x slower than oneDNN, while plain 3x3 convolutions
train at BLAS speed.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
  "Decoder",
  "decoder_grid",
  "depth_to_space",
]


def depth_to_space(x, factor: int = 2):
  """[B, H, W, C*f*f] -> [B, H*f, W*f, C] (the sub-pixel shuffle)."""
  b, h, w, c = x.shape
  c_out = c // (factor * factor)
  x = x.reshape(b, h, w, factor, factor, c_out)
  x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
  return x.reshape(b, h * factor, w * factor, c_out)


def decoder_grid(image_size: int, start_size: int) -> tuple[int, int]:
  """(start, stages): a start x start grid doubled `stages` times reaches image_size.

  Prefers an exact fit (image_size = start * 2^stages with start in
  [start_size, 2 * start_size), e.g. 28 = 7 * 2^2); otherwise starts at start_size,
  overshoots, and the decoder resizes its output down to image_size.
  """
  start_size = min(start_size, image_size)
  for k in range(1, 12):
    start = image_size // 2**k
    if image_size % 2**k == 0 and start_size <= start < 2 * start_size:
      return start, k
  return start_size, max(0, math.ceil(math.log2(image_size / start_size)))


class Decoder(nn.Module):
  """Inverse model: [N, D] features -> [N, H, W, C] images in [0, 1].

  Dense layers lift the features to a small square grid of `width` channels
  (`decoder_grid`); each stage doubles the resolution (sub-pixel convolution) and
  halves the channels (at least 16); a final 3x3 convolution gives C channels. Its
  convolutions work at no more than `max_conv_size` pixels a side: above it, one
  sub-pixel convolution gives the image's C channels directly at the full size (the
  output layer of Shi et al.'s ESPCN), so a 64x64 decoder costs about a third of one
  convolving at 64x64. If the grid overshoots the image size (sizes with no exact
  start * 2^k), the output is resized bilinearly to (H, W).
  """

  image_shape: tuple[int, int, int]
  width: int = 64
  start_size: int = 4
  hidden: int = 512
  max_conv_size: int = 32

  @nn.compact
  def __call__(self, features):
    h, w, c = self.image_shape
    start, stages = decoder_grid(max(h, w), self.start_size)
    x = nn.gelu(nn.Dense(self.hidden)(features))
    x = nn.Dense(start * start * self.width)(x)
    x = x.reshape(x.shape[0], start, start, self.width)
    channels, size = self.width, start
    for stage in range(stages):
      channels = max(16, channels // 2)
      x = nn.gelu(nn.Conv(channels, (3, 3))(nn.gelu(x)))
      rest = stages - stage  # doublings still to go, this one included
      if size * 2 > self.max_conv_size:
        factor = 2**rest  # the rest in one sub-pixel convolution to the image's channels
        x = depth_to_space(nn.Conv(c * factor * factor, (3, 3))(x), factor)
        break
      x = depth_to_space(nn.Conv(4 * channels, (3, 3))(x))
      size *= 2
    else:
      x = nn.gelu(nn.Conv(channels, (3, 3))(x))
      x = nn.Conv(c, (3, 3))(x)
    if x.shape[1:3] != (h, w):
      x = jax.image.resize(x, (x.shape[0], h, w, c), "bilinear")
    return nn.sigmoid(x)
