"""MNIST (TFDS): audit the builtin CNN's 64-d embedding of handwritten digits.

Prepare once (needs a network and TensorFlow for the build; reading needs neither):

  tfds build mnist --data_dir=~/tensorflow_datasets --file_format=array_record

Run:

  python launch.py --config=configs/mnist.py --workdir=runs/mnist

Expect a few minutes on 2 CPU cores: the classifier reaches ~98% test accuracy on
the held-out images, and the decoder reconstructs the 1,000 test-split targets.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  c = default.get_config()
  c.data.source = "tfds"
  c.data.name = "mnist"
  c.data.model_train_split = "train[:20000]"
  c.data.aux_split = "train[20000:30000]"
  c.data.target_split = "test[:1000]"
  c.data.image_size = 28
  c.model.train_steps = 1500
  c.model.batch_size = 128
  c.ssim.filter_size = 7  # The digits default's window, at a similar resolution.
  return c
