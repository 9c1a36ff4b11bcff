"""CIFAR-10 (TFDS): the builtin CNN's embedding of 32x32 colour images.

Prepare once: tfds build cifar10 --data_dir=~/tensorflow_datasets --file_format=array_record
Run:          python launch.py --config=configs/cifar10.py --workdir=runs/cifar10

Expect several minutes on 2 CPU cores. The small builtin CNN reaches only ~60%
accuracy on CIFAR-10; audit your own model with model.kind="flax" or "function".
SSIM uses the standard 11x11, sigma 1.5 window at 32x32.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  c = default.get_config()
  c.data.source = "tfds"
  c.data.name = "cifar10"
  c.data.model_train_split = "train[:30000]"
  c.data.aux_split = "train[30000:40000]"
  c.data.target_split = "test[:1000]"
  c.data.image_size = 32
  c.model.train_steps = 3000
  c.model.batch_size = 128
  c.model.embed_dim = 128
  c.ssim.filter_size = 11
  c.ssim.filter_sigma = 1.5
  return c
