"""Smoke test: the default audit cut to seconds (used by the tests).

  python launch.py --config=configs/smoke.py --workdir=/tmp/privjax-smoke

Expect a finished report in well under a minute; the numbers are not meaningful
(the decoder trains for a few dozen steps).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  c = default.get_config()
  c.data.image_size = 8
  c.model.train_steps = 150
  c.evaluator.train_steps = 100
  c.attacks.decoder.batch_size = 32
  c.attacks.decoder.num_steps = 40
  c.attacks.decoder.warmup_steps = 5
  c.attacks.decoder.eval_every = 10
  c.attacks.decoder.checkpoint_every = 20
  c.attacks.decoder.width = 16
  c.attacks.decoder.hidden = 64
  c.ssim.filter_size = 5
  c.ssim.filter_sigma = 0.68
  c.bootstrap_samples = 200
  c.attacks.ridge.num_features = 128
  c.attacks.whitebox.steps = 20
  c.attacks.whitebox.tv_weights = (0.0,)
  return c
