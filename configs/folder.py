"""Your own images: a folder of PNG/JPEG files, one subfolder per identity.

  python launch.py --config=configs/folder.py --workdir=runs/folder \
      --config.data.path=/path/to/faces

Layout: /path/to/faces/<identity>/<image>.png (subfolder names become the labels;
without subfolders the images are unlabelled and the builtin model cannot be
trained: use model.kind="flax" or "function"). Images are centre-cropped to a
square and resized to 32x32 RGB.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  c = default.get_config()
  c.data.source = "folder"
  c.data.path = ""  # Set with --config.data.path=...
  c.data.center_crop = True
  c.data.image_size = 32
  c.data.channels = 3
  c.ssim.filter_size = 11
  c.ssim.filter_sigma = 1.5
  return c
