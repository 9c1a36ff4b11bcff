"""Arrays in one .npz file: images to embed, or stored features (a leaked database).

Images layout, embedded by the model (builtin needs `labels`):
  np.savez("data.npz", images=uint8_or_float_NHWC, labels=int_N)
  python launch.py --config=configs/npz.py --workdir=runs/npz --config.data.path=data.npz

Features layout, a black-box audit of stored feature vectors (no model runs; the
report says model re-id was not measured):
  np.savez("leak.npz", aux_images=..., aux_features=..., target_images=...,
           target_features=..., target_labels=..., aux_labels=...)
(target_labels and aux_labels are optional identities; with both, the builtin evaluator
trains on the auxiliary images and identity leakage is checked.)
  python launch.py --config=configs/npz.py --workdir=runs/leak \
      --config.data.path=leak.npz --config.model.kind=precomputed
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  c = default.get_config()
  c.data.source = "npz"
  c.data.path = ""  # Set with --config.data.path=...
  c.data.image_size = 0  # Keep the stored size.
  c.ssim.filter_size = 11  # Shrunk automatically for images smaller than 11 pixels.
  c.ssim.filter_sigma = 1.5
  return c
