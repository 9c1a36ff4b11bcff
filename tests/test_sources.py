"""Bring your own data and model: every source and model kind end to end from the CLI."""

import contextlib
import csv
import json
import logging
import os
import signal
import textwrap
import types

import numpy as np
import pytest
from PIL import Image

from configs import npz as npz_config
from privjax import data, sources
from privjax.errors import DataError
from tests.conftest import SMOKE_OVERRIDES, png_header, save_module_params


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


# How images and labels are read: units tested directly (no audits).


def test_integer_rule_scales_by_dtype():
  np.testing.assert_array_equal(
    data.to_unit_float(np.array([0, 51, 255], np.uint8), name="x"), np.float32([0, 0.2, 1])
  )
  sixteen = np.array([0, 257, 65535], np.uint16)
  np.testing.assert_allclose(data.to_unit_float(sixteen, name="x"), [0.0, 257 / 65535, 1.0])
  np.testing.assert_allclose(
    data.to_unit_float(sixteen.astype(">u2"), name="x"), [0, 257 / 65535, 1]
  )
  np.testing.assert_array_equal(data.to_unit_float(np.array([True, False]), name="x"), [1.0, 0.0])
  floats = np.array([0.0, 0.25, 1.0])
  out = data.to_unit_float(floats, name="x")
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, floats)


@pytest.mark.parametrize(
  "x,message",
  [
    (np.array([0, 1, 255]), "integer dtype int64, whose full scale is unknown"),
    (np.array([0, 1], np.int8), "integer dtype int8"),
    (np.array([0, 1], np.uint32), "integer dtype uint32"),
    (np.array([0.0, 255.0]), r"scaled to \[0, 1\], got values in \[0, 255\]"),
    (np.array([-0.5, 0.5], np.float32), r"got values in \[-0.5, 0.5\]"),
    (np.array([0.0, np.nan]), "non-finite"),
    (np.array(["a"]), "must hold numbers"),
    (np.array([1j]), "must hold numbers"),
  ],
)
def test_integer_rule_refuses_with_one_line(x, message):
  with pytest.raises(DataError, match=message) as e:
    data.to_unit_float(x, name="my images")
  assert str(e.value).startswith("my images ") and "\n" not in str(e.value)


def test_uint8_mask_is_refused_as_a_set_but_bool_mask_is_read():
  mask = np.zeros((4, 8, 8, 1), np.uint8)
  mask[:, 2:5, 2:5] = 1
  with pytest.raises(DataError, match="uint8 holding only 0 and 1"):
    data.check_images(mask, name="aux_images")
  np.testing.assert_array_equal(data.check_images(mask.astype(bool), name="m"), mask)
  # One image with only 0/1 values (a near-black photo) is read, not refused.
  assert data.to_unit_float(mask[0], name="one").max() == np.float32(1 / 255)


@pytest.mark.parametrize("dtype,scale", [(np.uint8, 255), (np.uint16, 65535), (bool, 1)])
def test_api_and_npz_source_read_integer_images_the_same(tmp_path, dtype, scale):
  rng = np.random.default_rng(0)
  x = rng.integers(0, scale + 1, size=(12, 6, 5, 1)).astype(dtype)
  np.savez(tmp_path / "d.npz", images=x[..., 0], labels=np.arange(12))
  raw, _ = sources.npz(str(tmp_path / "d.npz"))["all"].read(np.arange(12))
  keep = types.SimpleNamespace(channels=0, center_crop=False, crop_fraction=1.0, image_size=0)
  cli = data.preprocess(raw, keep, name="npz")
  api = data.check_images(x, name="aux_images")
  np.testing.assert_array_equal(cli, api)
  np.testing.assert_array_equal(api, x.astype(np.float32) / np.float32(scale))


def _save(im, path, **kwargs):
  im.save(path, **kwargs)
  return sources._read_image(str(path))


def test_pillow_modes_read_to_unit_range(tmp_path):
  gray = np.array([[0, 51, 255], [255, 102, 0]], np.uint8)
  bits = gray > 100
  x = _save(Image.fromarray(bits), tmp_path / "bilevel.png")
  np.testing.assert_array_equal(x[..., 0], bits)
  np.testing.assert_array_equal(
    _save(Image.fromarray(gray), tmp_path / "l.png")[..., 0], gray / np.float32(255)
  )
  rgb = np.stack([gray, gray[::-1], 255 - gray], -1)
  np.testing.assert_allclose(_save(Image.fromarray(rgb), tmp_path / "rgb.png"), rgb / 255)
  # Alpha is dropped, not composited: transparent pixels keep their stored colour.
  alpha = np.zeros_like(gray)
  la = Image.fromarray(np.stack([gray, alpha], -1), "LA")
  np.testing.assert_allclose(_save(la, tmp_path / "la.png")[..., 0], gray / 255)
  rgba = Image.fromarray(np.concatenate([rgb, alpha[..., None]], -1), "RGBA")
  np.testing.assert_allclose(_save(rgba, tmp_path / "rgba.png"), rgb / 255)
  # Palette, without and with a transparent entry: the palette colours.
  pal = Image.fromarray(np.array([[0, 1, 2]], np.uint8), "P")
  pal.putpalette([10, 20, 30, 255, 0, 0, 0, 255, 0])
  want = np.array([[[10, 20, 30], [255, 0, 0], [0, 255, 0]]]) / 255
  np.testing.assert_allclose(_save(pal, tmp_path / "p.png"), want)
  np.testing.assert_allclose(_save(pal, tmp_path / "pt.png", transparency=1), want)


def test_sixteen_bit_png_keeps_its_full_range(tmp_path):
  v = np.array([[0, 255, 4096], [32768, 60000, 65535]], np.uint16)
  x = _save(Image.fromarray(v), tmp_path / "deep.png")
  assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
  np.testing.assert_allclose(x[..., 0], v / 65535, rtol=1e-6)
  assert x.max() == 1.0 and 0 < x[0, 1, 0] < 0.01  # 255 is dark in 16 bits: not clipped
  # An older Pillow decodes a 16-bit PNG as mode "I" (int32): read the same way.
  im = Image.fromarray(v.astype(np.int32), "I")
  im.format = "PNG"
  np.testing.assert_allclose(sources.image_array(im, name="old")[..., 0], v / 65535, rtol=1e-6)


def test_other_modes_convert_or_refuse(tmp_path):
  cmyk = Image.new("CMYK", (2, 1))
  cmyk.putpixel((1, 0), (255, 0, 0, 0))  # cyan
  np.testing.assert_allclose(_save(cmyk, tmp_path / "c.tif"), [[[1, 1, 1], [0, 1, 1]]])
  white = sources.image_array(Image.new("YCbCr", (1, 1), (255, 128, 128)), name="y")
  np.testing.assert_allclose(white, [[[1, 1, 1]]], atol=0.01)
  f = np.array([[0.0, 0.5]], np.float32)
  np.testing.assert_array_equal(_save(Image.fromarray(f, "F"), tmp_path / "f.tif")[..., 0], f)
  with pytest.raises(DataError, match=r"f2.tif must be scaled to \[0, 1\], got values in \[0, 2\]"):
    _save(Image.fromarray(f * 4, "F"), tmp_path / "f2.tif")
  with pytest.raises(DataError, match=r"32-bit integer pixels \(Pillow mode 'I'\)"):
    _save(Image.fromarray(np.array([[0, 70000]], np.int32), "I"), tmp_path / "i.tif")
  with pytest.raises(DataError, match="Pillow mode 'LAB' is not read"):
    _save(Image.new("LAB", (2, 2)), tmp_path / "lab.tif")


@pytest.mark.parametrize("orientation,turn", [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
  stored = np.zeros((16, 32), np.uint8)
  stored[:8, :16] = 255  # top-left quarter white
  exif = Image.Exif()
  exif[0x0112] = orientation
  x = _save(Image.fromarray(stored), tmp_path / "e.jpg", exif=exif, quality=100)
  np.testing.assert_allclose(x[..., 0], np.rot90(stored, turn) / 255, atol=0.05)


@pytest.mark.parametrize(
  "size,message",
  [
    ((8000, 8000), "8000x8000 = 64,000,000 pixels, over the limit of 50,000,000"),
    ((10000, 10000), "100,000,000 pixels, over the limit"),  # Pillow's warning
    ((20000, 20000), "400,000,000 pixels, over the limit"),  # Pillow's DecompressionBombError
  ],
)
def test_pixel_limit_is_checked_from_the_header(tmp_path, size, message):
  path = png_header(tmp_path / "bomb.png", *size)
  with pytest.raises(DataError, match=message) as e:
    sources._read_image(path)
  assert str(e.value).startswith(f"image {path} has ")


def test_pixel_limit_applies_before_decoding(tmp_path, monkeypatch):
  path = png_header(tmp_path / "small.png", 100, 100)  # too little data to decode
  with pytest.raises(DataError, match="cannot read image"):
    sources._read_image(path)
  monkeypatch.setattr(sources, "MAX_IMAGE_PIXELS", 5000)
  with pytest.raises(DataError, match="100x100 = 10,000 pixels, over the limit of 5,000"):
    sources._read_image(path)


@contextlib.contextmanager
def _fails_instead_of_hanging(seconds):
  def hung(*_):
    raise AssertionError(f"still running after {seconds} s: a FIFO was opened?")

  old = signal.signal(signal.SIGALRM, hung)
  signal.alarm(seconds)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_folder_skips_non_regular_files_with_a_warning(tmp_path, caplog):
  root = tmp_path / "faces"
  for name in ("bob", "alice"):
    (root / name).mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(root / name / "1.png")
  os.mkfifo(root / "alice" / "pipe.png")
  os.symlink(root / "nowhere.png", root / "bob" / "gone.png")
  os.symlink(root / "alice" / "1.png", root / "bob" / "linked.png")  # a live link is read
  (root / "bob" / "nested").mkdir()
  os.mkfifo(root / "top.png")
  with caplog.at_level(logging.WARNING), _fails_instead_of_hanging(20):
    split = sources.folder(str(root))["all"]
    images, labels = split.read(np.arange(split.size))
  assert split.size == 3 and labels == ["alice", "bob", "bob"]
  assert all(x.shape == (4, 4, 1) for x in images)
  skipped = caplog.text
  for entry, kind in [
    ("pipe.png", "FIFO"),
    ("gone.png", "dangling symlink"),
    ("nested", "directory"),
  ]:
    assert f"{entry} (a {kind}, not a regular file)" in skipped
  assert "top.png (a FIFO" in skipped
  ids, names = data._label_ids({"aux": labels})
  assert names == ["alice", "bob"] and ids["aux"].tolist() == [0, 1, 1]


def test_reading_a_fifo_directly_is_refused_without_opening_it(tmp_path):
  os.mkfifo(tmp_path / "p.png")
  with _fails_instead_of_hanging(20), pytest.raises(DataError, match="it is a FIFO"):
    sources._read_image(str(tmp_path / "p.png"))


def test_string_labels_in_npz_become_identity_names(tmp_path):
  n = 40
  x = np.arange(n, dtype=np.uint8)[:, None, None] * np.ones((1, 4, 4), np.uint8)  # image i: i/255
  who = np.array([["carol", "alice", "bob", "dave"][i % 4] for i in range(n)])
  np.savez(tmp_path / "named.npz", images=x, labels=who)
  config = npz_config.get_config()
  config.data.path = str(tmp_path / "named.npz")
  config.data.image_size = 0
  loaded = data.load(config)
  assert loaded.label_names == ["alice", "bob", "carol", "dave"]
  for split in (loaded.model_train, loaded.aux, loaded.targets):
    rows = np.rint(split.images[:, 0, 0, 0] * 255).astype(int)
    assert [loaded.label_names[i] for i in split.labels] == list(who[rows])


def test_labels_rules_for_the_api():
  np.testing.assert_array_equal(data.check_labels(["bob", "al", "bob"], 3, name="t"), [1, 0, 1])
  np.testing.assert_array_equal(data.check_labels(np.array([b"x", b"y"]), 2, name="t"), [0, 1])
  np.testing.assert_array_equal(data.check_labels(np.array([3, 1], np.uint8), 2, name="t"), [3, 1])
  with pytest.raises(DataError, match="t must be integers or strings .* got dtype float64"):
    data.check_labels(np.array([1.0, 2.0]), 2, name="t")
  with pytest.raises(DataError, match=r"must be all integers or all strings .*\['int', 'str'\]"):
    data._label_ids({"aux": [1, 2], "target": ["a"]})
