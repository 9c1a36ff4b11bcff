"""Each data source and model kind, end to end through the command line on mock or small
data (the readers themselves: tests/unit/test_sources.py and test_data.py)."""

import csv
import json
import os
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests.e2e.conftest import SMOKE_OVERRIDES, save_module_params


def _ok(result):
  assert result.returncode == 0, result.stderr[-4000:]


def _report(workdir):
  return json.loads((workdir / "report.json").read_text())


@pytest.mark.parametrize(
  "config,splits",
  [
    (
      "configs/mnist.py",
      ["--config.data.model_train_split=train[:50%]", "--config.data.aux_split=train[50%:]"],
    ),
    ("configs/lfw.py", []),
    ("configs/celeb_a.py", []),
  ],
)
def test_tfds_configs_run_end_to_end_on_mock_data(tmp_path, launch_here, config, splits):
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=120):
    result = launch_here(config, tmp_path, *SMOKE_OVERRIDES, *splits)
  _ok(result)
  r = _report(tmp_path)
  assert r["num_targets"] >= 12
  assert r["image_shape"][:2] == [8, 8]
  assert r["metadata"]["model"]["kind"] == "builtin"
  assert "image_label_match_rate" in r


def _write_folder(root, digits8, identities=6, per_identity=12):
  x, y = digits8
  for label in range(identities):
    (root / f"person_{label}").mkdir(parents=True)
    for k, i in enumerate(np.flatnonzero(y == label)[:per_identity]):
      img = (x[i, :, :, 0] * 255).astype(np.uint8)
      Image.fromarray(img).resize((20, 24)).save(root / f"person_{label}" / f"{k}.png")


_PIXEL_EVALUATOR = """
def make(config):  # an evaluator: centred pixels, compared by cosine
  return (lambda params, images: images.reshape(images.shape[0], -1) - params), 0.5
"""


def test_folder_source_with_identity_subfolders_and_a_function_evaluator(
  tmp_path, digits8, launch_here
):
  _write_folder(tmp_path / "faces", digits8)
  (tmp_path / "pixel_evaluator.py").write_text(_PIXEL_EVALUATOR)
  result = launch_here(
    "configs/folder.py",
    tmp_path / "w",
    *SMOKE_OVERRIDES,
    f"--config.data.path={tmp_path / 'faces'}",
    "--config.data.channels=1",
    "--config.evaluator.kind=function",
    "--config.evaluator.factory=pixel_evaluator:make",
    pythonpath=tmp_path,
  )
  _ok(result)
  r = _report(tmp_path / "w")
  assert r["image_shape"] == [8, 8, 1]
  assert r["num_targets"] == 14 and "image_label_match_rate" in r
  # The subfolders are the identities the evaluator judges.
  ev = r["evaluator"]
  assert ev["measured"] and ev["model"] == {"kind": "function", "factory": "pixel_evaluator:make"}
  with open(tmp_path / "w" / "per_image.csv") as f:
    rows = list(csv.DictReader(f))
  assert ev["num_identities"] == len({row["label"] for row in rows}) >= 2
  for row in rows:  # each row traced to its picture, under its identity's folder name
    assert row["source"] == f"{row['label_name']}/{os.path.basename(row['source'])}"
    assert (tmp_path / "faces" / row["source"]).is_file()
    assert row["label_name"].startswith("person_")
  assert ev["type2_targets"] + ev["single_image_targets_excluded"] == 14
  for row in r["identity"]["fmrs"]:
    assert 0 <= row["type1_sar"]["rate"] <= 1 and 0 <= row["impostor_accept"] <= 1
  assert (tmp_path / "w" / "evaluator_scores.png").stat().st_size > 1000


def test_npz_images_layout_with_labels(tmp_path, digits8, launch_here):
  x, y = digits8
  np.savez(tmp_path / "d.npz", images=(x[:400, :, :, 0] * 255).astype(np.uint8), labels=y[:400])
  result = launch_here(
    "configs/npz.py", tmp_path / "w", *SMOKE_OVERRIDES, f"--config.data.path={tmp_path / 'd.npz'}"
  )
  _ok(result)
  r = _report(tmp_path / "w")
  assert r["num_targets"] == 80 and r["reid_rate"] is not None


def test_npz_precomputed_features_black_box_audit(tmp_path, digits8, launch_here):
  x, y = digits8
  proj = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)
  feats = x.reshape(len(x), -1) @ proj
  np.savez(
    tmp_path / "leak.npz",
    aux_images=x[:300],
    aux_features=feats[:300],
    target_images=x[300:360],
    target_features=feats[300:360],
    target_labels=y[300:360],
  )
  result = launch_here(
    "configs/npz.py",
    tmp_path / "w",
    *SMOKE_OVERRIDES,
    f"--config.data.path={tmp_path / 'leak.npz'}",
    "--config.model.kind=precomputed",
  )
  _ok(result)
  r = _report(tmp_path / "w")
  assert r["reid_rate"] is None and r["reid"].startswith("not measured")
  assert r["num_targets"] == 60 and r["image_reid_rate"] >= 0
  assert "model re-id n/a" in result.stdout
  # The real reason identity leakage was not checked: target labels were given.
  assert not r["evaluator"]["measured"]
  assert "auxiliary images have no identity labels" in r["evaluator"]["why"]
  assert "add aux_labels to the npz" in r["evaluator"]["why"]


def test_npz_precomputed_features_with_aux_labels_train_the_builtin_evaluator(
  tmp_path, digits8, launch_here
):
  x, y = digits8
  feats = x.reshape(len(x), -1) @ np.random.default_rng(0).normal(size=(64, 32))
  np.savez(
    tmp_path / "leak.npz",
    aux_images=x[:300],
    aux_features=feats[:300],
    aux_labels=np.array([f"id{v}" for v in y[:300]]),  # names, mapped with the targets'
    target_images=x[300:360],
    target_features=feats[300:360],
    target_labels=np.array([f"id{v}" for v in y[300:360]]),
  )
  result = launch_here(
    "configs/npz.py",
    tmp_path / "w",
    *SMOKE_OVERRIDES,
    f"--config.data.path={tmp_path / 'leak.npz'}",
    "--config.model.kind=precomputed",
  )
  _ok(result)
  r = _report(tmp_path / "w")
  assert r["evaluator"]["measured"] and r["evaluator"]["model"]["kind"] == "builtin"
  assert r["evaluator"]["model"]["trained_on"] == "the auxiliary set"


_USER_MODULE = textwrap.dedent("""
  import flax.linen as nn
  import jax.numpy as jnp

  class Tower(nn.Module):
    features: int = 16

    @nn.compact
    def __call__(self, x):
      return nn.Dense(self.features)(x.reshape(x.shape[0], -1))

    def embed(self, x):
      return jnp.tanh(self(x))

  def make(config):
    del config
    proj = jnp.asarray(__import__("numpy").random.default_rng(0).normal(size=(256, 24)),
                       jnp.float32)
    return (lambda params, x: x.reshape(x.shape[0], -1) @ params), proj
""")


@pytest.fixture
def user_module(tmp_path):
  pkg = tmp_path / "userpkg"
  pkg.mkdir()
  (pkg / "my_models.py").write_text(_USER_MODULE)
  return pkg


def test_flax_module_from_orbax_checkpoint(tmp_path, user_module, launch_here):
  save_module_params(
    user_module, "my_models", "Tower", {"features": 16}, (16, 16, 1), tmp_path / "ckpt" / "tower"
  )
  result = launch_here(
    "configs/default.py",
    tmp_path / "w",
    *SMOKE_OVERRIDES,
    "--config.data.image_size=16",
    "--config.model.kind=flax",
    "--config.model.module=my_models:Tower",
    "--config.model.method=embed",
    f"--config.model.checkpoint={tmp_path / 'ckpt' / 'tower'}",
    "--config.data.model_train_split=",
    pythonpath=user_module,
  )
  _ok(result)
  r = _report(tmp_path / "w")
  assert r["feature_dim"] == 16 and r["metadata"]["model"]["method"] == "embed"


def test_user_embedding_function_by_import_path(tmp_path, user_module, launch_here):
  result = launch_here(
    "configs/default.py",
    tmp_path / "w",
    *SMOKE_OVERRIDES,
    "--config.data.image_size=16",
    "--config.model.kind=function",
    "--config.model.factory=my_models:make",
    "--config.data.model_train_split=",
    pythonpath=user_module,
  )
  _ok(result)
  r = _report(tmp_path / "w")
  assert r["feature_dim"] == 24 and r["metadata"]["model"]["factory"] == "my_models:make"


def test_a_folder_of_one_identity_is_refused_in_one_line_before_the_builtin_model_trains(
  tmp_path, digits8, launch_here
):
  _write_folder(tmp_path / "faces", digits8, identities=1, per_identity=60)
  result = launch_here(
    "configs/folder.py", tmp_path / "w", f"--config.data.path={tmp_path / 'faces'}"
  )
  assert result.returncode == 2, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("privjax: error: config.model.kind='builtin' trains a recognition")
  assert "which holds 1 identity ('person_0', 30 images)" in last
  assert "identity leakage is not checked" not in result.stderr  # no promise of a report
  assert not (tmp_path / "w").exists()  # nothing trained, nothing written
