"""Bad input, end to end through the CLI: one line, exit code 2, no traceback, and nothing
already in the workdir changes.

The table covers config, data, model and workdir faults. Each runs launch.py against a
workdir that holds a finished audit, and compares the workdir's files (content and
modification times, all but the lock file) before and after.
"""

import os
import textwrap

import numpy as np
import pytest
from PIL import Image

from privjax.workdir import LOCK_FILE
from tests.conftest import launch, save_module_params

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
  np.savez(tmp / "range.npz", images=x[:60] * 255.0, labels=y[:60])
  (tmp / "userpkg").mkdir()
  (tmp / "userpkg" / "fault_models.py").write_text(USER_MODULE)
  save_module_params(
    tmp / "userpkg", "fault_models", "Tower", {"features": 8}, (8, 8, 1), tmp / "tower_ckpt"
  )
  (tmp / "a_file").write_text("keep me")
  return p


FUNCTION = "--config.model.kind=function"
NPZ = "configs/npz.py"
FOLDER = "configs/folder.py"
# (id, config file, overrides ({t} = the test's temp dir), workdir ("done": the finished
# audit, or a path under {t}), the expected text of the one-line error)
TABLE = [
  ("unknown-key", None, ["--config.trian.batch_size=3"], "done", "unknown config key 'trian'"),
  ("wrong-type", None, ["--config.train.batch_size=abc"], "done", "invalid literal for int()"),
  (
    "zero-batch",
    None,
    ["--config.train.batch_size=0"],
    "done",
    "config.train.batch_size must be a positive integer, got 0",
  ),
  (
    "negative-steps",
    None,
    ["--config.train.num_steps=-5"],
    "done",
    "config.train.num_steps must be a positive integer, got -5",
  ),
  (
    "negative-size",
    None,
    ["--config.data.image_size=-3"],
    "done",
    "config.data.image_size must be an integer >= 0, got -3",
  ),
  ("even-window", None, ["--config.ssim.filter_size=4"], "done", "filter_size must be odd"),
  (
    "batch-over-data",
    None,
    ["--config.train.batch_size=100000"],
    "done",
    "config.train.batch_size=100000 is larger than the",
  ),
  ("missing-config", "configs/nope.py", [], "done", "cannot load the config file"),
  (
    "unknown-source",
    None,
    ["--config.data.source=cifar"],
    "done",
    "config.data.source must be one of",
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
  ("missing-npz", NPZ, ["--config.data.path={t}/nope.npz"], "done", "must be an .npz file"),
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
  ("workdir-is-file", None, [], "{t}/a_file", "workdir must be a directory"),
  ("read-only-workdir", None, [], "/sys/privjax-workdir", "is not writable"),
]


def _snapshot(workdir):
  out = {}
  for root, _, files in os.walk(workdir):
    for f in files:
      if f != LOCK_FILE:
        path = os.path.join(root, f)
        st = os.stat(path)
        with open(path, "rb") as fh:
          out[os.path.relpath(path, workdir)] = (st.st_mtime_ns, hash(fh.read()))
  return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits8):
  tmp = tmp_path_factory.mktemp("faults")
  paths = _setup(tmp, digits8)
  result = launch("configs/smoke.py", tmp / "done")
  assert result.returncode == 0, result.stderr[-3000:]
  return tmp, paths


def test_table_has_at_least_20_faults():
  assert len(TABLE) >= 20
  assert len({row[0] for row in TABLE}) == len(TABLE)


@pytest.mark.parametrize("name,config,overrides,workdir,expected", TABLE, ids=[r[0] for r in TABLE])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
  finished, name, config, overrides, workdir, expected
):
  tmp, _ = finished
  fill = lambda s: s.replace("{t}", str(tmp))  # noqa: E731
  workdir = tmp / "done" if workdir == "done" else fill(workdir)
  before = _snapshot(tmp / "done")
  file_before = (tmp / "a_file").read_text()
  result = launch(
    config or "configs/smoke.py",
    workdir,
    *map(fill, overrides),
    pythonpath=tmp / "userpkg",
    timeout=120,
  )
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-3000:]
  assert lines[-1].startswith("privjax: error: "), lines[-1]
  assert fill(expected) in lines[-1]
  assert "Traceback" not in result.stderr
  assert _snapshot(tmp / "done") == before
  assert (tmp / "a_file").read_text() == file_before
  assert not os.path.exists("/sys/privjax-workdir")
