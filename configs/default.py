"""Default audit: a CNN digit classifier's embeddings, inverted on sklearn's digits.

Run (no network needed; the data ships inside scikit-learn):

  python launch.py --config=configs/default.py --workdir=runs/default

What to expect, on 2 CPU cores: about 50 s; the recognition model reaches about
97% test accuracy; the decoder reconstructs held-out digits from their 64-d
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
  c.data.source = "digits"  # "digits" (sklearn, embedded), "tfds", "folder" or "npz".
  c.data.name = ""  # TFDS dataset name (source "tfds").
  c.data.data_dir = ""  # TFDS data_dir; "" is TFDS's default (~/tensorflow_datasets).
  c.data.download = False  # Let TFDS download and prepare a missing dataset.
  c.data.path = ""  # Directory (source "folder") or .npz file (source "npz").
  c.data.image_key = "image"  # TFDS feature holding the image ("a/b" for nested).
  c.data.label_key = "label"  # TFDS feature holding the label/identity; "" for none.
  # The roles, as "split" or "split[a:b]" (counts or percentages). Each split is
  # shuffled with split_seed before slicing; roles slicing one split must not overlap.
  # The digits, folder and npz sources have one split, "all".
  c.data.model_train_split = "all[:50%]"  # Trains the builtin model ("" otherwise).
  c.data.aux_split = "all[50%:80%]"  # The attacker's auxiliary set.
  c.data.target_split = "all[80%:]"  # The targets whose features are attacked.
  c.data.split_seed = 0  # Fixed apart from `seed`, so the targets stay the same.
  # Preprocessing: channels (1, 3; 0 keeps), centre crop, resize to image_size x image_size
  # (0 keeps the size). The decoder reconstructs, and SSIM is computed, at this resolution.
  c.data.image_size = 16
  c.data.channels = 0  # 1 (grey) or 3 (RGB); 0 keeps the source's channels.
  c.data.center_crop = False  # Crop a centred square (of crop_fraction) before resizing.
  c.data.crop_fraction = 1.0  # Side of the centre crop as a fraction of the shorter side.
  # Face photos (folder source): "dlib" replaces each by its 150x150 face chip as dlib
  # aligns it (5 landmarks, padding 0.25; the faces extra); photos with no face or several
  # are skipped and counted. "dlib_largest": of several faces, the largest one's chip.
  # "" reads the images as they are.
  c.data.align = ""
  c.data.save_chips = ""  # With align: a folder to write the chips used to, to inspect them.

  c.model = ml_collections.ConfigDict()
  # "builtin": privjax's RecognitionCNN, trained on the model-train split;
  # "flax": a Flax module by import path with params from an orbax checkpoint;
  # "function": a factory `make(config) -> (embed_fn, params)` by import path;
  # "precomputed": the npz source holds the features (no model to run);
  # "dlib_face": dlib's ResNet face encoder (configs/dlib_faces.py; the faces extra).
  c.model.kind = "builtin"
  c.model.embed_dim = 64  # Embedding (penultimate layer) size.
  c.model.width = 32  # Channels of the first convolution (the second has twice as many).
  # "builtin": the first convolution's stride (kernel max(3, stride)); 0: auto, 1 up to
  # 16x16 images, else ceil(side / 16), so larger images cost what 16x16 ones do (64 -> 4).
  c.model.stride = 0
  c.model.train_steps = 600  # "builtin": Adam steps (cosine decay), a fixed number.
  c.model.batch_size = 64  # "builtin": training batch.
  c.model.learning_rate = 2e-3  # "builtin": peak learning rate.
  c.model.module = ""  # "flax": "package.module:ClassName".
  c.model.kwargs = ml_collections.ConfigDict()  # "flax": constructor keyword arguments.
  c.model.checkpoint = ""  # "flax": orbax checkpoint directory of the params.
  c.model.method = ""  # "flax": method giving the embedding ("" = __call__).
  c.model.factory = ""  # "function": "package.module:make".

  # The independent evaluator that judges identity leakage (type I / type II success at a
  # false match rate; privjax/scoring/identity.py): a second recognition model, never the audited
  # one. Its kinds are the model's ("builtin", "flax", "function", same fields), "off"
  # (the report then says identity leakage was not checked) or "auto": "builtin" when the
  # auxiliary and target images are labelled, else "off". It needs labels (identities).
  # "builtin": another RecognitionCNN, wider, with its own random stream of `seed`,
  # trained on the auxiliary set (the audited model never saw it; the targets stay unseen)
  # and tested on the targets; digits: the digit class stands for the identity.
  c.evaluator = ml_collections.ConfigDict()
  c.evaluator.kind = "auto"  # "auto", "off", "builtin", "flax" or "function".
  c.evaluator.embed_dim = 128  # "builtin": embedding size (the audited model's is 64).
  c.evaluator.width = 48  # "builtin": first convolution's channels (the audited model: 32).
  c.evaluator.stride = 0  # "builtin": first convolution's stride; 0: auto, as the model's.
  c.evaluator.train_steps = 300  # "builtin": Adam steps on the auxiliary set.
  c.evaluator.batch_size = 64  # "builtin": training batch.
  c.evaluator.learning_rate = 2e-3  # "builtin": peak learning rate.
  c.evaluator.module = ""  # "flax": "package.module:ClassName".
  c.evaluator.kwargs = ml_collections.ConfigDict()  # "flax": constructor keyword arguments.
  c.evaluator.checkpoint = ""  # "flax": orbax checkpoint directory of the params.
  c.evaluator.method = ""  # "flax": method giving the embedding ("" = __call__).
  c.evaluator.factory = ""  # "function": "package.module:make".

  c.ssim.filter_size = 7
  c.ssim.filter_sigma = 0.955  # 1.5 * 7/11: the standard window, scaled to 7 pixels.
  return c
