"""A folder of face photos from what ships with scikit-image, for configs/dlib_faces.py.

  python benchmarks/faces_folder.py runs/lfw_faces        # writes 100 PNG files (seconds)
  python launch.py --config=configs/dlib_faces.py --workdir=runs/dlib_faces \
      --config.data.path=runs/lfw_faces

scikit-image's lfw_subset: the first 100 of its 200 images are LFW faces (25x25 grey
crops; the rest are not faces), here upscaled to 150x150 (bicubic) so that dlib's
detector can find them; there are no identities (no subfolders). No larger labelled face
set is reachable offline: for a real audit, point the config at your own photos, one
subfolder per person.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out", help="the folder to write (created)")
  parser.add_argument("--size", type=int, default=150, help="the photos' side in pixels")
  args = parser.parse_args()
  import skimage.data
  from PIL import Image

  faces = skimage.data.lfw_subset()[:100]
  os.makedirs(args.out, exist_ok=True)
  for i, face in enumerate(faces):
    grey = Image.fromarray(np.round(face * 255).astype(np.uint8))
    grey.resize((args.size, args.size), Image.BICUBIC).save(os.path.join(args.out, f"{i:03d}.png"))
  print(f"wrote {len(faces)} face photos ({args.size}x{args.size}) to {args.out}")


if __name__ == "__main__":
  from benchmarks import require_test_extras

  require_test_extras()
  main()
