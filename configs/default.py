"""Default audit: a CNN digit classifier's embeddings, inverted on sklearn's digits.

Run (no network needed; the data ships inside scikit-learn):

  python launch.py --config=configs/default.py --workdir=runs/default

What to expect, on 2 CPU cores: about a minute; the recognition model reaches about
98% test accuracy; the decoder reconstructs held-out digits from their 64-d
embeddings; the verdict is in runs/default/report.json, with per_image.csv and
reconstructions.png beside it. Re-running with the same workdir reuses the trained
recognition model and the decoder checkpoint.

Resolution: the 8x8 digits are upsampled (antialiased bilinear) to 16x16, so the
SSIM window (7x7, sigma 0.955: the standard 11x11/1.5 Gaussian window scaled by
7/11, which skimage reproduces from sigma alone; it spans about 3.5 original pixels,
the width of a stroke) leaves a 10x10 grid of positions per image. At 8x8 any
useful window would leave almost no positions; the standard 11x11 window at 16x16
would leave 6x6 and blur over half a digit.
"""

import ml_collections

from privjax.config import audit_config


def get_config() -> ml_collections.ConfigDict:
  c = audit_config()

  c.data = ml_collections.ConfigDict()
  c.data.source = "digits"  # sklearn load_digits: 1,797 real handwritten 8x8 digits.
  c.data.image_size = 16  # Resolution of the model's input, the decoder output and SSIM.
  c.data.model_train_fraction = 0.35  # Share that trains the recognition model.
  c.data.aux_fraction = 0.4  # The attacker's auxiliary set; the rest are the targets.
  c.data.split_seed = 0  # Fixed apart from `seed`, so the targets stay the same.

  c.model = ml_collections.ConfigDict()
  c.model.kind = "builtin"  # privjax's RecognitionCNN, trained on the model-train split.
  c.model.embed_dim = 64  # Embedding (penultimate layer) size.
  c.model.train_steps = 600
  c.model.batch_size = 64
  c.model.learning_rate = 2e-3

  c.ssim.filter_size = 7
  c.ssim.filter_sigma = 0.955  # 1.5 * 7/11: the standard window, scaled to 7 pixels.
  return c
