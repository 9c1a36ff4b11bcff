"""CelebA faces (TFDS): identities (Identity_No) as labels, 32x32 RGB centre crops.

Prepare once (the images are a manual download; see the TFDS celeb_a page):
  tfds build celeb_a --data_dir=~/tensorflow_datasets --file_format=array_record
Run:
  python launch.py --config=configs/celeb_a.py --workdir=runs/celeb_a

Uses 20,000 training images for the builtin model, 10,000 validation images as the
attacker's auxiliary set and 1,000 test images as targets.
"""

import ml_collections

from configs import lfw


def get_config() -> ml_collections.ConfigDict:
  c = lfw.get_config()
  c.data.name = "celeb_a"
  c.data.label_key = "identity/Identity_No"
  c.data.model_train_split = "train[:20000]"
  c.data.aux_split = "validation[:10000]"
  c.data.target_split = "test[:1000]"
  c.data.crop_fraction = 0.7
  return c
