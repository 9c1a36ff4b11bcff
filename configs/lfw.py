"""LFW faces (TFDS): identities as labels, faces centre-cropped to 32x32 RGB.

Prepare once: tfds build lfw --data_dir=~/tensorflow_datasets --file_format=array_record
Run:          python launch.py --config=configs/lfw.py --workdir=runs/lfw

LFW has one split ("train", 13,233 images of 5,749 people); the roles are disjoint
slices of it. The builtin CNN is trained to tell identities apart and audited; to
audit a real face model, set model.kind="flax" or "function" (see docs/guide.md). Labels
are the person names, so the report gives the rate at which the best-matching
original is the same person.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  c = default.get_config()
  c.data.source = "tfds"
  c.data.name = "lfw"
  c.data.model_train_split = "train[:60%]"
  c.data.aux_split = "train[60%:90%]"
  c.data.target_split = "train[90%:]"
  c.data.center_crop = True
  c.data.crop_fraction = 0.5  # The face fills the central half of LFW's 250x250 frames.
  c.data.image_size = 32
  c.data.channels = 3
  c.model.embed_dim = 128
  c.model.train_steps = 2000
  c.ssim.filter_size = 11
  c.ssim.filter_sigma = 1.5
  return c
