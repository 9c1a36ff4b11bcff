"""Bad input, end to end through the CLI: one line, exit code 2, no traceback, and nothing
already in the workdir changes.

The table covers config, data, model and workdir faults. Each runs the command against a
workdir that holds a finished audit, and compares the workdir's files (content and
modification times, all but the lock file) before and after. The rows run the command line
in this process (launch_here in tests/e2e/conftest.py: a fresh process each would pay JAX's
start-up, ~90 times); the last test checks that this prints what a fresh `python launch.py`
does.
"""

import logging
import os
import re
import signal
import textwrap

import numpy as np
import pytest
from absl import flags
from absl import logging as absl_logging
from PIL import Image

from tests.conftest import png_header, snapshot
from tests.e2e.conftest import launch, save_module_params

USER_MODULE = textwrap.dedent("""
  import flax.linen as nn
  import jax.numpy as jnp

  class Tower(nn.Module):
    features: int = 16

    @nn.compact
    def __call__(self, x):
      return nn.Dense(self.features)(x.reshape(x.shape[0], -1))

  def rank1(config):
    return (lambda params, x: x.sum(axis=(1, 2, 3))), None

  def nan(config):
    return (lambda params, x: x.reshape(x.shape[0], -1) * jnp.nan), None

  def fixed_256(config):  # a model built for 16x16 inputs
    return (lambda params, x: x.reshape(x.shape[0], 256) @ params), jnp.ones((256, 4))

  def flat(config):
    return (lambda params, x: x.reshape(x.shape[0], -1)), None

  def batch_stats(config):  # a BatchNorm left in training mode: features depend on the batch
    def embed(params, x):
      f = x.reshape(x.shape[0], -1)
      return (f - f.mean(axis=0)) @ jnp.ones((f.shape[1], 8))

    return embed, None
""")


def _images(tmp, digits8, name, *, sizes=((20, 24),), per_identity=6, corrupt=False):
  x, y = digits8
  root = tmp / name
  for label in range(3):
    (root / f"id{label}").mkdir(parents=True)
    for k, i in enumerate(np.flatnonzero(y == label)[:per_identity]):
      size = sizes[k % len(sizes)]
      Image.fromarray((x[i, :, :, 0] * 255).astype(np.uint8)).resize(size).save(
        root / f"id{label}" / f"{k}.png"
      )
  if corrupt:
    (root / "id0" / "broken.png").write_bytes(b"not a png")
  return root


def _bad_image_folders(tmp, digits8):
  """Image folders of good images plus one bad id0/bad.png each."""
  bad = {
    "pixels": lambda p: png_header(p, 8000, 8000),
    "bomb": lambda p: png_header(p, 20000, 20000),
    "int32": lambda p: Image.fromarray(np.ones((8, 8), np.int32), "I").save(p, "TIFF"),
    "floats": lambda p: Image.fromarray(np.full((8, 8), 4.0, np.float32), "F").save(p, "TIFF"),
    "lab": lambda p: Image.new("LAB", (8, 8)).save(p, "TIFF"),
  }
  for name, write in bad.items():
    write(_images(tmp, digits8, name) / "id0" / "bad.png")
  root = tmp / "fifos"  # identity folders holding nothing a reader may open
  for sub in ("id0", "id1", "id2"):
    (root / sub).mkdir(parents=True)
  os.mkfifo(root / "id0" / "a.png")
  os.symlink(root / "missing.png", root / "id1" / "b.png")
  (root / "id2" / "c.png").mkdir()


def _bad_npz(tmp, x, y):
  """.npz files with one wrong key each."""
  np.savez(tmp / "int64.npz", images=(x[:60, ..., 0] * 255).astype(np.int64), labels=y[:60])
  np.savez(tmp / "mask.npz", images=(x[:60] > 0.5).astype(np.uint8), labels=y[:60])
  np.savez(tmp / "object.npz", images=x[:60], labels=np.array(list(y[:60]), dtype=object))
  np.savez(tmp / "float_labels.npz", images=x[:60], labels=y[:60].astype(np.float64))
  np.savez(tmp / "labels_rank.npz", images=x[:60], labels=y[:60, None])
  np.savez(tmp / "images_rank.npz", images=x[:60].reshape(60, -1), labels=y[:60])
  np.savez(tmp / "text_images.npz", images=np.array(["a"] * 60), labels=y[:60])
  np.savez(
    tmp / "features_rank.npz",
    aux_images=x[:30],
    aux_features=np.ones(30),
    target_images=x[30:50],
    target_features=np.ones((20, 4)),
  )
  np.savez(
    tmp / "target_labels.npz",
    aux_images=x[:30],
    aux_features=np.ones((30, 4)),
    target_images=x[30:50],
    target_features=np.ones((20, 4)),
    target_labels=y[:5],
  )
  np.savez(
    tmp / "aux_labels.npz",
    aux_images=x[:30],
    aux_features=np.ones((30, 4)),
    aux_labels=y[:7],
    target_images=x[30:50],
    target_features=np.ones((20, 4)),
  )
  np.savez(tmp / "unlabelled.npz", images=x[:60])
  np.savez(
    tmp / "features_labelled.npz",
    aux_images=x[:30],
    aux_features=np.ones((30, 4)),
    target_images=x[30:50],
    target_features=np.ones((20, 4)),
    target_labels=y[30:50],
  )
  np.save(tmp / "array.npy", x[:60])
  os.rename(tmp / "array.npy", tmp / "array.npz")
  (tmp / "text.npz").write_text("images,labels\n")


def _setup(tmp, digits8):
  """Makes every file the table refers to; returns a dict of {name: path}."""
  x, y = digits8
  p = {}
  (tmp / "empty").mkdir()
  p["empty"] = tmp / "empty"
  p["corrupt"] = _images(tmp, digits8, "corrupt", corrupt=True)
  p["mixed"] = _images(tmp, digits8, "mixed", sizes=((20, 24), (16, 16)))
  nan_x = x[:60].copy()
  nan_x[3, 2, 2, 0] = np.nan
  np.savez(tmp / "nan.npz", images=nan_x, labels=y[:60])
  np.savez(
    tmp / "count.npz",
    aux_images=x[:30],
    aux_features=np.ones((29, 4)),
    target_images=x[30:50],
    target_features=np.ones((20, 4)),
  )
  np.savez(tmp / "labels.npz", images=x[:30], labels=y[:5])
  np.savez(
    tmp / "leak.npz",
    aux_images=x[:30],
    aux_features=np.ones((30, 4)),
    target_images=x[30:50],
    target_features=np.ones((20, 4)),
  )
  np.savez(tmp / "range.npz", images=x[:60] * 255.0, labels=y[:60])
  (tmp / "userpkg").mkdir()
  (tmp / "userpkg" / "fault_models.py").write_text(USER_MODULE)
  (tmp / "sweep.py").write_text(
    "import ml_collections\n\nfrom configs import smoke\n\n\ndef get_config():\n"
    "  c = smoke.get_config()\n  c.defense.sweep = ml_collections.ConfigDict({\n"
    "    'gaussian_noise': {'strengths': (0.5,)},\n"
    "    'quantize': {'type': 'quantize', 'strengths': (2,)},\n"
    "    'pca_truncate': {'strengths': (4,)}})\n  return c\n"
  )
  (tmp / "added_key.py").write_text(
    "from configs import smoke\n\n\ndef get_config():\n  c = smoke.get_config()\n"
    "  c.ssim.extra_setting = 1  # a key added to a group\n  return c\n"
  )
  save_module_params(
    tmp / "userpkg", "fault_models", "Tower", {"features": 8}, (8, 8, 1), tmp / "tower_ckpt"
  )
  (tmp / "none_config.py").write_text("def get_config():\n  return None\n")
  (tmp / "numpy_config.py").write_text(
    "import numpy as np\n\nfrom configs import smoke\n\n\ndef get_config():\n"
    "  c = smoke.get_config()\n  c.seed = np.int64(3)  # not a Python int\n  return c\n"
  )
  (tmp / "a_file").write_text("keep me")
  _bad_image_folders(tmp, digits8)
  _bad_npz(tmp, x, y)
  return p


FUNCTION = "--config.model.kind=function"
EVALUATOR = "--config.evaluator.kind=function"
NPZ = "configs/npz.py"
FOLDER = "configs/folder.py"
SWEEP = "{t}/sweep.py"
# (id, config file, overrides ({t} = the test's temp dir), workdir ("done": the finished
# audit, or a path under {t}), the expected text of the one-line error)
TABLE = [
  ("unknown-key", None, ["--config.trian.batch_size=3"], "done", "unknown config key 'trian'"),
  (
    "unknown-nested-key",
    None,
    ["--config.attacks.decoder.batchsize=3"],
    "done",
    "unknown config key 'batchsize'; Did you mean \"batch_size\"",
  ),
  (
    "unknown-attack-key",
    None,
    ["--config.attacks.ridge.lambd=3"],
    "done",
    "unknown config key 'lambd'",
  ),
  ("added-key", "{t}/added_key.py", [], "done", "unknown config key 'ssim.extra_setting'"),
  (
    "wrong-type",
    None,
    ["--config.attacks.decoder.batch_size=abc"],
    "done",
    "invalid literal for int()",
  ),
  (
    "zero-batch",
    None,
    ["--config.attacks.decoder.batch_size=0"],
    "done",
    "config.attacks.decoder.batch_size must be a positive integer, got 0",
  ),
  (
    "negative-steps",
    None,
    ["--config.attacks.decoder.num_steps=-5"],
    "done",
    "config.attacks.decoder.num_steps must be a positive integer, got -5",
  ),
  (
    "negative-size",
    None,
    ["--config.data.image_size=-3"],
    "done",
    "config.data.image_size must be an integer >= 0, got -3",
  ),
  ("even-window", None, ["--config.ssim.filter_size=4"], "done", "filter_size must be odd"),
  # Attackers (config.attacks) and the attacker-strength sweep.
  ("attack-type", None, ["--config.attacks.ridge.type=nope"], "done", "unknown attack type 'nope'"),
  (
    "attack-import",
    None,
    ["--config.attacks.ridge.type=no_such_pkg:fn"],
    "done",
    "config.attacks.ridge.type='no_such_pkg:fn': cannot import module 'no_such_pkg'",
  ),
  (
    "ridge-features",
    None,
    ["--config.attacks.ridge.num_features=0"],
    "done",
    "config.attacks.ridge.num_features must be a positive integer, got 0",
  ),
  (
    "ridge-penalty",
    None,
    ["--config.attacks.ridge.penalties=(0.1,-1.0)"],
    "done",
    "config.attacks.ridge.penalties[1] must be a number",
  ),
  (
    "ridge-bandwidth",
    None,
    ["--config.attacks.ridge.bandwidths=(1.0,0.0)"],
    "done",
    "config.attacks.ridge.bandwidths[1] must be a number",
  ),
  (
    "ridge-no-bandwidths",
    None,
    ["--config.attacks.ridge.bandwidths=()"],
    "done",
    "config.attacks.ridge.bandwidths must be a non-empty list of numbers",
  ),
  (
    "whitebox-learning-rate",
    None,
    ["--config.attacks.whitebox.learning_rate=0.0"],
    "done",
    "config.attacks.whitebox.learning_rate must be a number",
  ),
  (
    "decoder-width",
    None,
    ["--config.attacks.decoder.width=-8"],
    "done",
    "config.attacks.decoder.width must be a non-negative integer, got -8",
  ),
  (
    "strength-part-too-small",
    None,
    ["--config.attack_strength.aux_fractions=(0.001,1.0)"],
    "done",
    "config.attack_strength.aux_fractions[0]=0.001 leaves",
  ),
  (
    "whitebox-init",
    None,
    ["--config.attacks.whitebox.init=nobody"],
    "done",
    "config.attacks.whitebox.init must be 'mean' or another configured attacker",
  ),
  (
    "whitebox-steps",
    None,
    ["--config.attacks.whitebox.steps=0"],
    "done",
    "config.attacks.whitebox.steps must be a positive integer, got 0",
  ),
  (
    "whitebox-tv",
    None,
    ["--config.attacks.whitebox.tv_weights=(-1.0,)"],
    "done",
    "config.attacks.whitebox.tv_weights[0] must be a number",
  ),
  (
    "all-attacks-off",
    None,
    [
      f"--config.attacks.{n}.type=off" for n in ("decoder", "ridge", "nearest", "whitebox", "blend")
    ],
    "done",
    "every attacker is 'off'",
  ),
  (
    "strength-fraction",
    None,
    ["--config.attack_strength.aux_fractions=(0.5,1.5)"],
    "done",
    "config.attack_strength.aux_fractions[1] must be a number in",
  ),
  # Degenerate statistics and seeds.
  ("few-targets", None, ["--config.min_targets=1"], "done", "config.min_targets must be at least"),
  (
    "few-resamples",
    None,
    ["--config.bootstrap_samples=1"],
    "done",
    "config.bootstrap_samples must be at least 100",
  ),
  (
    "window-too-wide",
    None,
    ["--config.ssim.filter_size=101"],
    "done",
    "config.ssim.filter_size=101 (sigma 0.68) does not fit 8x8 images",
  ),
  ("negative-seed", None, ["--config.seed=-1"], "done", "in [0, 2**32), got -1"),
  ("huge-seed", None, ["--config.seed=4294967296"], "done", "in [0, 2**32), got 4294967296"),
  ("missing-config", "configs/nope.py", [], "done", "config file 'configs/nope.py' not found"),
  ("mistyped-config", "configs/defualt.py", [], "done", "did you mean configs/default.py?"),
  (
    "unknown-source",
    None,
    ["--config.data.source=cifar"],
    "done",
    "unknown data source type",
  ),
  (
    "overlapping-roles",
    None,
    ["--config.data.aux_split=all[30%:80%]"],
    "done",
    "overlaps model_train_split",
  ),
  (
    "unknown-model-kind",
    None,
    ["--config.model.kind=resnet"],
    "done",
    "config.model.kind must be one of",
  ),
  ("missing-npz", NPZ, ["--config.data.path={t}/nope.npz"], "done", "no such file"),
  (
    "features-without-precomputed",
    NPZ,
    ["--config.data.path={t}/leak.npz"],
    "done",
    "holds stored features (aux/target features), which no model re-embeds: add "
    "--config.model.kind=precomputed",
  ),
  (
    "precomputed-without-features",
    None,
    ["--config.model.kind=precomputed"],
    "done",
    "config.model.kind='precomputed' needs an npz source holding aux/target features",
  ),
  ("npz-is-a-folder", NPZ, ["--config.data.path={t}/empty"], "done", "got the directory"),
  (
    "empty-folder",
    FOLDER,
    ["--config.data.path={t}/empty"],
    "done",
    "no .png/.jpg/.jpeg images found",
  ),
  (
    "corrupt-image",
    FOLDER,
    ["--config.data.path={t}/corrupt"],
    "done",
    "cannot read image {t}/corrupt/id0/broken.png",
  ),
  (
    "mixed-sizes",
    FOLDER,
    [
      "--config.data.path={t}/mixed",
      "--config.data.image_size=0",
      "--config.data.center_crop=False",
    ],
    "done",
    "images have different sizes",
  ),
  ("nan-in-npz", NPZ, ["--config.data.path={t}/nan.npz"], "done", "contains non-finite values"),
  (
    "npz-out-of-range",
    NPZ,
    ["--config.data.path={t}/range.npz"],
    "done",
    "must be scaled to [0, 1], got values in [0, 255]",
  ),
  (
    "features-count",
    NPZ,
    ["--config.data.path={t}/count.npz", "--config.model.kind=precomputed"],
    "done",
    "aux_images has 30 rows but aux_features has 29",
  ),
  (
    "labels-length",
    NPZ,
    ["--config.data.path={t}/labels.npz"],
    "done",
    "labels has 5 rows, images has 30",
  ),
  (
    "tfds-not-prepared",
    "configs/mnist.py",
    ["--config.data.data_dir={t}/tfds"],
    "done",
    "'mnist' is not prepared in",
  ),
  # The independent evaluator (config.evaluator) and the identity thresholds.
  (
    "evaluator-kind",
    None,
    ["--config.evaluator.kind=precomputed"],
    "done",
    "config.evaluator.kind must be one of ['auto', 'off', 'builtin', 'dlib_face', 'flax', "
    "'function'], got 'precomputed'",
  ),
  (
    "evaluator-width",
    None,
    ["--config.evaluator.width=0"],
    "done",
    "config.evaluator.width must be a positive integer, got 0",
  ),
  (
    "evaluator-no-factory",
    None,
    ["--config.evaluator.kind=function"],
    "done",
    "config.evaluator.kind='function' needs config.evaluator.factory",
  ),
  (
    "evaluator-flax-no-checkpoint",
    None,
    ["--config.evaluator.kind=flax", "--config.evaluator.module=fault_models:Tower"],
    "done",
    "config.evaluator.kind='flax' needs config.evaluator.module and .checkpoint",
  ),
  (
    "evaluator-no-such-name",
    None,
    [EVALUATOR, "--config.evaluator.factory=fault_models:nope"],
    "done",
    "config.evaluator.factory='fault_models:nope': module 'fault_models' has no 'nope'",
  ),
  (
    "factory-not-a-factory",
    None,
    [FUNCTION, "--config.model.factory=os:system"],
    "done",
    "config.model.factory (os:system) raised TypeError",
  ),
  ("config-returns-none", "{t}/none_config.py", [], "done", "get_config() returned None"),
  (
    "evaluator-rank",
    None,
    [EVALUATOR, "--config.evaluator.factory=fault_models:rank1"],
    "done",
    "the evaluator's embed_fn must return features of rank 2",
  ),
  (
    "evaluator-nan",
    None,
    [EVALUATOR, "--config.evaluator.factory=fault_models:nan"],
    "done",
    "the evaluator's embed_fn returned non-finite features",
  ),
  (
    "evaluator-impure",
    None,
    [EVALUATOR, "--config.evaluator.factory=fault_models:batch_stats"],
    "done",
    "the evaluator's embed_fn is not deterministic",
  ),
  (
    "evaluator-shape",
    None,
    [EVALUATOR, "--config.evaluator.factory=fault_models:fixed_256"],
    "done",
    "the evaluator's embed_fn rejected images of shape [N, 8, 8, 1]",
  ),
  (
    "evaluator-unlabelled",
    NPZ,
    [
      "--config.data.path={t}/unlabelled.npz",
      "--config.model.kind=function",
      "--config.model.factory=fault_models:flat",
      "--config.evaluator.kind=builtin",
    ],
    "done",
    "config.evaluator.kind='builtin' judges identities: it needs labels on the targets",
  ),
  (
    "evaluator-builtin-on-features",
    NPZ,
    [
      "--config.data.path={t}/features_labelled.npz",
      "--config.model.kind=precomputed",
      "--config.evaluator.kind=builtin",
    ],
    "done",
    "this npz holds no aux_labels",
  ),
  (
    "identity-fmr",
    None,
    ["--config.risk.identity_fmr=0.05"],
    "done",
    "config.risk.identity_fmr must be one of config.identity.fmrs (0.01, 0.001), got 0.05",
  ),
  (
    "identity-fmrs-range",
    None,
    ["--config.identity.fmrs=(0.6, 0.01)"],
    "done",
    "config.identity.fmrs[0] must be a number in [0.0, 0.5], got 0.6",
  ),
  (
    "identity-sar-order",
    None,
    ["--config.risk.medium_identity_sar=0.9"],
    "done",
    "config.risk.medium_identity_sar 0.9 must not exceed high_identity_sar 0.5",
  ),
  # The defense sweep (config.defense): bad strengths, types and attackers.
  (
    "defense-negative-sigma",
    SWEEP,
    ["--config.defense.sweep.gaussian_noise.strengths=(0.5, -1.0)"],
    "done",
    "config.defense.sweep.gaussian_noise.strengths[1]=-1.0: a noise scale must be >= 0",
  ),
  (
    "defense-zero-bits",
    SWEEP,
    ["--config.defense.sweep.quantize.strengths=(0,)"],
    "done",
    "config.defense.sweep.quantize.strengths[0]=0: bits per dimension must be an integer in "
    "[1, 16]",
  ),
  (
    "defense-k-above-width",
    SWEEP,
    ["--config.defense.sweep.pca_truncate.strengths=(4, 65)"],
    "done",
    "config.defense.sweep.pca_truncate.strengths[1]=65: cannot keep more principal directions "
    "than the 64 feature dimensions",
  ),
  (
    "defense-no-strengths",
    SWEEP,
    ["--config.defense.sweep.gaussian_noise.strengths=()"],
    "done",
    "config.defense.sweep.gaussian_noise.strengths must be a non-empty list",
  ),
  (
    "defense-unknown-type",
    SWEEP,
    ["--config.defense.sweep.quantize.type=blur"],
    "done",
    "unknown defense type 'blur': expected one of ['gaussian_noise', 'learned', 'none', "
    "'normalize_noise', 'pca_truncate', 'quantize']",
  ),
  (
    "defense-no-such-name",
    SWEEP,
    ["--config.defense.sweep.quantize.type=fault_models:nope"],
    "done",
    "config.defense.sweep.quantize.type='fault_models:nope': module 'fault_models' has no 'nope'",
  ),
  (
    "defense-attacker",
    SWEEP,
    ["--config.defense.attacks=('ridge', 'whitebox2')"],
    "done",
    "config.defense.attacks: 'whitebox2' is not a running attacker of config.attacks",
  ),
  (
    "defense-utility",
    SWEEP,
    ["--config.defense.utility=fault_models:nope"],
    "done",
    "config.defense.utility='fault_models:nope': module 'fault_models' has no 'nope'",
  ),
  (
    "no-such-module",
    None,
    [FUNCTION, "--config.model.factory=no_such_mod:make"],
    "done",
    "cannot import module 'no_such_mod'",
  ),
  (
    "no-such-name",
    None,
    [FUNCTION, "--config.model.factory=fault_models:nope"],
    "done",
    "module 'fault_models' has no 'nope'",
  ),
  (
    "embedding-rank",
    None,
    [FUNCTION, "--config.model.factory=fault_models:rank1"],
    "done",
    "must return features of rank 2",
  ),
  (
    "embedding-nan",
    None,
    [FUNCTION, "--config.model.factory=fault_models:nan"],
    "done",
    "returned non-finite features",
  ),
  (
    "input-rejected",
    None,
    [FUNCTION, "--config.model.factory=fault_models:fixed_256"],
    "done",
    "embed_fn rejected images of shape [N, 8, 8, 1]",
  ),
  (
    "embedding-impure",
    None,
    [FUNCTION, "--config.model.factory=fault_models:batch_stats"],
    "done",
    "embed_fn is not deterministic",
  ),
  (
    "checkpoint-mismatch",
    None,
    [
      "--config.model.kind=flax",
      "--config.model.module=fault_models:Tower",
      "--config.model.checkpoint={t}/tower_ckpt",
    ],
    "done",
    "does not match fault_models:Tower: ['params']['Dense_0']['bias'] has shape (8,)",
  ),
  # How images and labels are read (data.to_unit_float's rule, Pillow modes, npz keys).
  (
    "npz-int64-images",
    NPZ,
    ["--config.data.path={t}/int64.npz"],
    "done",
    "{t}/int64.npz: images has integer dtype int64, whose full scale is unknown",
  ),
  (
    "npz-uint8-mask",
    NPZ,
    ["--config.data.path={t}/mask.npz"],
    "done",
    "{t}/mask.npz: images is uint8 holding only 0 and 1",
  ),
  (
    "npz-object-labels",
    NPZ,
    ["--config.data.path={t}/object.npz"],
    "done",
    "{t}/object.npz: labels is an object array (pickled Python objects), which is never unpickled",
  ),
  (
    "npz-float-labels",
    NPZ,
    ["--config.data.path={t}/float_labels.npz"],
    "done",
    "labels must be [N] integers or strings, got dtype float64 with shape (60,)",
  ),
  (
    "npz-labels-rank",
    NPZ,
    ["--config.data.path={t}/labels_rank.npz"],
    "done",
    "labels must be [N] integers or strings, got dtype int64 with shape (60, 1)",
  ),
  (
    "npz-images-rank",
    NPZ,
    ["--config.data.path={t}/images_rank.npz"],
    "done",
    "images must be [N, H, W] or [N, H, W, C] of uint8, uint16, bool or float, got dtype "
    "float32 with shape (60, 64)",
  ),
  (
    "npz-text-images",
    NPZ,
    ["--config.data.path={t}/text_images.npz"],
    "done",
    "images must be [N, H, W] or [N, H, W, C] of uint8, uint16, bool or float, got dtype <U1",
  ),
  (
    "npz-features-rank",
    NPZ,
    ["--config.data.path={t}/features_rank.npz", "--config.model.kind=precomputed"],
    "done",
    "aux_features must be [N, D] numbers, got dtype float64 with shape (30,)",
  ),
  (
    "npz-target-labels-count",
    NPZ,
    ["--config.data.path={t}/target_labels.npz", "--config.model.kind=precomputed"],
    "done",
    "target_labels has 5 rows, target_images has 20",
  ),
  (
    "npz-aux-labels-count",
    NPZ,
    ["--config.data.path={t}/aux_labels.npz", "--config.model.kind=precomputed"],
    "done",
    "aux_labels has 7 rows, aux_images has 30",
  ),
  ("npz-is-npy", NPZ, ["--config.data.path={t}/array.npz"], "done", "is a single .npy array"),
  ("npz-not-zip", NPZ, ["--config.data.path={t}/text.npz"], "done", "is not an .npz file"),
  (
    "image-pixel-limit",
    FOLDER,
    ["--config.data.path={t}/pixels"],
    "done",
    "image {t}/pixels/id0/bad.png has 8000x8000 = 64,000,000 pixels, over the limit of 50,000,000",
  ),
  (
    "image-decompression-bomb",
    FOLDER,
    ["--config.data.path={t}/bomb"],
    "done",
    "image {t}/bomb/id0/bad.png has 400,000,000 pixels, over the limit",
  ),
  (
    "image-32-bit-int",
    FOLDER,
    ["--config.data.path={t}/int32"],
    "done",
    "image {t}/int32/id0/bad.png: 32-bit integer pixels (Pillow mode 'I') have no known",
  ),
  (
    "image-float-range",
    FOLDER,
    ["--config.data.path={t}/floats"],
    "done",
    "image {t}/floats/id0/bad.png must be scaled to [0, 1], got values in [4, 4]",
  ),
  (
    "image-unknown-mode",
    FOLDER,
    ["--config.data.path={t}/lab"],
    "done",
    "image {t}/lab/id0/bad.png: Pillow mode 'LAB' is not read",
  ),
  (
    "folder-of-fifos-and-links",
    FOLDER,
    ["--config.data.path={t}/fifos"],
    "done",
    "no .png/.jpg/.jpeg images found in {t}/fifos",
  ),
  ("workdir-is-file", None, [], "{t}/a_file", "workdir must be a directory"),
  ("read-only-workdir", None, [], "/sys/privjax-workdir", "is not writable"),
  (
    "config-numpy-scalar",
    "{t}/numpy_config.py",
    [],
    "done",
    "the config file sets field 'seed' to numpy.int64 3: expected a Python int",
  ),
  ("fail-on-unknown-level", None, ["--fail_on=severe"], "done", "--fail_on must be 'medium' or"),
  (
    "save-chips-is-a-file",
    None,
    ["--config.data.save_chips={t}/a_file"],
    "done",
    "config.data.save_chips must be a folder to write the face chips into, got an existing "
    "file: {t}/a_file",
  ),
  (
    "save-chips-not-writable",
    None,
    ["--config.data.save_chips=/sys/privjax-chips"],
    "done",
    "config.data.save_chips='/sys/privjax-chips' is not writable: cannot create a file in /sys",
  ),
  (
    "save-chips-in-the-workdir",
    None,
    ["--config.data.save_chips={t}/done/chips"],
    "done",
    "config.data.save_chips='{t}/done/chips' is inside the workdir {t}/done, which holds only",
  ),
  (
    "save-chips-in-a-new-workdir",  # (it once wrote the chips, then refused its own workdir)
    None,
    ["--config.data.save_chips={t}/chips-run/chips"],
    "{t}/chips-run",
    "config.data.save_chips='{t}/chips-run/chips' is inside the workdir {t}/chips-run,",
  ),
]


def _fill(row, tmp):
  """A table row's launch arguments (config, workdir, *overrides), {t} filled in."""
  _, config, overrides, workdir, _ = row
  fill = lambda s: s.replace("{t}", str(tmp))  # noqa: E731
  workdir = tmp / "done" if workdir == "done" else fill(workdir)
  return (fill(config) if config else "configs/smoke.py", workdir, *map(fill, overrides))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits8):
  tmp = tmp_path_factory.mktemp("faults")
  paths = _setup(tmp, digits8)
  result = launch("configs/smoke.py", tmp / "done")
  assert result.returncode == 0, result.stderr[-3000:]
  return tmp, paths


def test_table_has_at_least_80_faults():
  assert len(TABLE) >= 89
  assert len({row[0] for row in TABLE}) == len(TABLE)


@pytest.mark.parametrize("name,config,overrides,workdir,expected", TABLE, ids=[r[0] for r in TABLE])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
  finished, launch_here, name, config, overrides, workdir, expected
):
  tmp, _ = finished
  fill = lambda s: s.replace("{t}", str(tmp))  # noqa: E731
  args = _fill((name, config, overrides, workdir, expected), tmp)
  before = snapshot(tmp / "done")
  file_before = (tmp / "a_file").read_text()
  result = launch_here(*args, pythonpath=tmp / "userpkg")
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-3000:]
  assert lines[-1].startswith("privjax: error: "), lines[-1]
  assert sum(line.startswith("privjax:") for line in lines) == 1, result.stderr[-3000:]
  assert fill(expected) in lines[-1]
  assert "Traceback" not in result.stderr
  assert snapshot(tmp / "done") == before
  assert (tmp / "a_file").read_text() == file_before
  assert not os.path.exists("/sys/privjax-workdir") and not os.path.exists("/sys/privjax-chips")
  assert not (tmp / "chips-run").exists() and not (tmp / "done" / "chips").exists()


def test_in_process_run_prints_what_a_fresh_process_does(finished, launch_here):
  # A row that logs, imports the user's module and runs JAX before its error; it runs
  # after the whole table, so this also checks that no row's state leaked into the next.
  tmp, _ = finished
  args = _fill(next(row for row in TABLE if row[0] == "evaluator-nan"), tmp)
  sigterm = signal.getsignal(signal.SIGTERM)
  here = launch_here(*args, pythonpath=tmp / "userpkg")
  fresh = launch(*args, pythonpath=tmp / "userpkg", timeout=120)
  # Without absl's line prefix (level, date, time, thread id) and numbers (stage times).
  strip = lambda s: re.sub(r"\d+", "0", re.sub(r"(?m)^[IWEF]\d{4} [\d:.]+ +\d+ ", "", s))  # noqa: E731
  assert (here.returncode, here.stdout) == (fresh.returncode, fresh.stdout) == (2, "")
  assert strip(here.stderr) == strip(fresh.stderr), (here.stderr, fresh.stderr)
  assert strip(here.stderr).count("\n") >= 3, here.stderr  # its progress lines were shown
  assert not flags.FLAGS.is_parsed()
  assert not [name for name in flags.FLAGS if name.startswith("config.")]
  assert absl_logging.get_absl_handler() not in logging.getLogger().handlers
  assert signal.getsignal(signal.SIGTERM) is sigterm


def test_a_refusal_after_work_was_written_leaves_no_new_workdir(finished, launch_here):
  # The recognition model trains and saves its checkpoints before the evaluator is refused.
  tmp, _ = finished
  config, _, *overrides = _fill(next(row for row in TABLE if row[0] == "evaluator-nan"), tmp)
  result = launch_here(config, tmp / "fresh", *overrides, pythonpath=tmp / "userpkg")
  assert result.returncode == 2, result.stderr[-3000:]
  assert "the refused run's files were removed" not in result.stderr  # (it made the workdir)
  assert not (tmp / "fresh").exists()
