"""The 64x64x3 workload: natural-image crops of 9 pictures that ship with scikit-image.

  python benchmarks/crops64.py runs/crops64.npz        # writes the .npz (seconds)
  python launch.py --config=configs/npz.py --workdir=runs/crops64 \
      --config.data.path=runs/crops64.npz

2,700 crops (300 per picture) of random square windows (a quarter to three quarters of
the picture's shorter side, at a random place), resized to 64x64 with antialiasing; the
label is the source picture. With configs/npz.py's roles the builtin model trains on
1,350, the attacker holds 810 and 540 are targets. Deterministic (seed 0).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PICTURES = (
  "astronaut",
  "coffee",
  "chelsea",
  "rocket",
  "hubble_deep_field",
  "immunohistochemistry",
  "retina",
  "camera",
  "brick",
)


def make(per_picture: int = 300, size: int = 64, seed: int = 0):
  """(images [9 * per_picture, size, size, 3] uint8, labels [9 * per_picture] int)."""
  from skimage import data, transform

  rng = np.random.default_rng(seed)
  images, labels = [], []
  for label, name in enumerate(PICTURES):
    pic = getattr(data, name)()
    if pic.ndim == 2:
      pic = np.repeat(pic[..., None], 3, axis=-1)
    pic = pic[..., :3].astype(np.float32) / 255.0
    h, w = pic.shape[:2]
    for _ in range(per_picture):
      side = int(rng.integers(min(h, w) // 4, 3 * min(h, w) // 4 + 1))
      i, j = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
      crop = transform.resize(pic[i : i + side, j : j + side], (size, size), anti_aliasing=True)
      images.append(np.clip(np.round(crop * 255), 0, 255).astype(np.uint8))
      labels.append(label)
  return np.stack(images), np.asarray(labels, np.int64)


def main():
  from benchmarks import require_test_extras

  require_test_extras()
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("out", help="the .npz to write (images, labels)")
  p.add_argument("--per_picture", type=int, default=300)
  a = p.parse_args()
  images, labels = make(a.per_picture)
  np.savez(a.out, images=images, labels=labels)
  print(f"{a.out}: {images.shape[0]} images {images.shape[1:]} of {len(PICTURES)} pictures")


if __name__ == "__main__":
  main()
