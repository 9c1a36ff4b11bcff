"""The fixed decoder geometries of the performance comparison, in Flax.

The same networks as ../shared/peers (PyTorch): "dcgan64" (Radford et al. 2015:
128-d input, 4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x64 -> 64x64x3, batch norm,
batch 128) and "digits32" (64-d input -> dense 4x4x128 -> 8x8x64 -> 16x16x32 ->
32x32x1, batch 256). Every upsampling layer is a PyTorch-style ConvTranspose2d with
kernel 4, stride 2, padding 1, computed one of these ways with the same mathematics
(or one mode per upsampling layer, comma-separated):

  "transpose"  flax.linen.ConvTranspose (XLA lowers its kernel gradient to a
               window-dilated convolution, slow on XLA:CPU);
  "subpixel"   one 3x3 stride-1 convolution to 4*C_out channels whose kernel is
               gathered from the 4x4 kernel (zeros where a phase has no tap), then
               depth-to-space;
  "phases"     four 2x2 stride-1 convolutions, one per output phase, interleaved:
               the transposed convolution's exact FLOP count;
  "gemm"       the 2x2 patches of all phases as one matrix product ((H+1)^2 positions);
  "gemm4"      one matrix product per phase over exactly the patches it reads.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# For output phase a (row parity) and input offset d in {-1, 0, +1}, the kernel tap of
# a stride-2, padding-1, kernel-4 transposed convolution: y[2m + a] sums x[m + d] * W[k].
# a = 0: x[m-1] W[3] + x[m] W[1];  a = 1: x[m] W[2] + x[m+1] W[0].
_TAP = {(0, -1): 3, (0, 0): 1, (1, 0): 2, (1, 1): 0}


def _subpixel_kernel(w):
  """[4, 4, Cin, Cout] transposed-conv kernel -> [3, 3, Cin, 4*Cout] (phase-major)."""
  cin, cout = w.shape[2], w.shape[3]
  idx = np.zeros((3, 3, 2, 2, 2), np.int32)  # dy, dx, a, b -> (ky, kx)
  mask = np.zeros((3, 3, 2, 2), np.float32)
  for (a, dy), ky in _TAP.items():
    for (b, dx), kx in _TAP.items():
      idx[dy + 1, dx + 1, a, b] = (ky, kx)
      mask[dy + 1, dx + 1, a, b] = 1.0
  k = w[idx[..., 0], idx[..., 1]] * mask[..., None, None]  # [3, 3, 2, 2, Cin, Cout]
  return jnp.transpose(k, (0, 1, 4, 2, 3, 5)).reshape(3, 3, cin, 4 * cout)


def _phase_kernel(kernel, a: int, b: int):
  """The [2, 2, Cin, Cout] taps of output phase (a, b), ordered by input offset."""
  ky = [_TAP[(a, d)] for d in ((-1, 0) if a == 0 else (0, 1))]
  kx = [_TAP[(b, d)] for d in ((-1, 0) if b == 0 else (0, 1))]
  return kernel[np.ix_(ky, kx)]


def _interleave(phases, b, h, w, c):
  """{(a, b): [B, H, W, C]} -> [B, 2H, 2W, C] with y[2i + a, 2j + b] = phases[a, b][i, j]."""
  rows = [jnp.stack([phases[(a, 0)], phases[(a, 1)]], axis=3) for a in (0, 1)]  # [B,H,W,2,C]
  y = jnp.stack(rows, axis=2)  # [B, H, 2, W, 2, C]
  return y.reshape(b, 2 * h, 2 * w, c)


class ConvTranspose4x4s2(nn.Module):
  """PyTorch ConvTranspose2d(k=4, s=2, p=1) on NHWC, computed as `mode` says."""

  features: int
  mode: str = "subpixel"
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    b, h, w, cin = x.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (4, 4, cin, self.features))
    dn = ("NHWC", "HWIO", "NHWC")
    if self.mode == "transpose":
      # lax.conv_transpose with a flipped kernel and padding k-1-p = 2 matches PyTorch.
      y = jax.lax.conv_transpose(
        x, kernel[::-1, ::-1], (2, 2), ((2, 2), (2, 2)), dimension_numbers=dn
      )
    elif self.mode == "subpixel":
      y = jax.lax.conv_general_dilated(
        x, _subpixel_kernel(kernel), (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn
      )
      y = y.reshape(b, h, w, 2, 2, self.features)
      y = jnp.transpose(y, (0, 1, 3, 2, 4, 5)).reshape(b, 2 * h, 2 * w, self.features)
    elif self.mode == "phases":
      phases = {}
      for a in (0, 1):
        for bb in (0, 1):
          k2 = _phase_kernel(kernel, a, bb)
          pad = ((1, 0) if a == 0 else (0, 1), (1, 0) if bb == 0 else (0, 1))
          phases[(a, bb)] = jax.lax.conv_general_dilated(x, k2, (1, 1), pad, dimension_numbers=dn)
      y = _interleave(phases, b, h, w, self.features)
    elif self.mode == "gemm":
      # 2x2 patches ending at each position of the zero-padded input, then one matrix
      # product with all four phase kernels; phase (a, b) reads positions offset by (a, b).
      xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
      patches = jnp.concatenate(
        [xp[:, dy : dy + h + 1, dx : dx + w + 1] for dy in (0, 1) for dx in (0, 1)], axis=-1
      )  # [B, H+1, W+1, 4*Cin], taps (dy, dx) = offsets (-1 + dy, -1 + dx) relative to row a=0
      kernels = []
      for a in (0, 1):
        for bb in (0, 1):
          kernels.append(_phase_kernel(kernel, a, bb).reshape(4 * cin, self.features))
      out = jnp.dot(patches, jnp.concatenate(kernels, axis=-1))  # [B, H+1, W+1, 4*Cout]
      out = out.reshape(b, h + 1, w + 1, 2, 2, self.features)
      phases = {(a, bb): out[:, a : a + h, bb : bb + w, a, bb] for a in (0, 1) for bb in (0, 1)}
      y = _interleave(phases, b, h, w, self.features)
    elif self.mode == "gemm4":
      # One matrix product per output phase, over exactly the 2x2 input patches it reads.
      xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
      phases = {}
      for a in (0, 1):
        for bb in (0, 1):
          patches = jnp.concatenate(
            [xp[:, a + i : a + i + h, bb + j : bb + j + w] for i in (0, 1) for j in (0, 1)],
            axis=-1,
          )
          phases[(a, bb)] = jnp.dot(patches, _phase_kernel(kernel, a, bb).reshape(4 * cin, -1))
      y = _interleave(phases, b, h, w, self.features)
    else:
      raise ValueError(
        f"mode must be transpose, subpixel, phases, gemm or gemm4, got {self.mode!r}"
      )
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


def _layer_modes(mode: str, n: int) -> list[str]:
  """One mode for each of n layers: "phases" repeated, or n comma-separated modes."""
  modes = mode.split(",")
  if len(modes) == 1:
    modes *= n
  if len(modes) != n:
    raise ValueError(f"expected 1 or {n} comma-separated modes, got {mode!r}")
  return modes


class DCGAN64(nn.Module):
  mode: str = "subpixel"

  @nn.compact
  def __call__(self, z, train: bool = True):
    modes = _layer_modes(self.mode, 4)
    # The first layer (convT k=4, s=1, p=0 on a 1x1 input) is exactly a dense layer.
    x = nn.Dense(4 * 4 * 512, use_bias=False)(z).reshape(z.shape[0], 4, 4, 512)
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    for c, mode in zip((256, 128, 64), modes[:3], strict=True):
      x = ConvTranspose4x4s2(c, mode, use_bias=False)(x)
      x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    return jnp.tanh(ConvTranspose4x4s2(3, modes[3])(x))


class Digits32(nn.Module):
  mode: str = "subpixel"

  @nn.compact
  def __call__(self, z, train: bool = True):
    del train
    modes = _layer_modes(self.mode, 3)
    x = nn.relu(nn.Dense(4 * 4 * 128)(z)).reshape(z.shape[0], 4, 4, 128)
    x = nn.relu(ConvTranspose4x4s2(64, modes[0])(x))
    x = nn.relu(ConvTranspose4x4s2(32, modes[1])(x))
    return nn.sigmoid(ConvTranspose4x4s2(1, modes[2])(x))


# The fastest formulation per geometry measured on a 2-core CPU (2026-11-28): four
# phase convolutions, except the output layer (3 or 1 channels), where four phase
# convolutions with that few output channels each cost more than one sub-pixel
# convolution to 4x the channels (dcgan64's layer alone: 96 vs 50 ms a step).
BEST_MODE = {"dcgan64": "phases,phases,phases,subpixel", "digits32": "phases,phases,subpixel"}

GEOMETRIES = {
  "dcgan64": {"model": DCGAN64, "batch": 128, "in_dim": 128, "out_shape": (64, 64, 3)},
  "digits32": {"model": Digits32, "batch": 256, "in_dim": 64, "out_shape": (32, 32, 1)},
}
