"""The data sources: image files read to [0, 1] (Pillow modes, 16 bits, EXIF), pixel limits
checked from the header, FIFOs and links skipped, .npz read as the API reads arrays."""

import contextlib
import logging
import os
import signal
import types

import numpy as np
import pytest
from PIL import Image

from privjax.data import images as images_lib
from privjax.data import sources
from privjax.data import splits as data
from privjax.errors import DataError
from tests.conftest import png_header


@pytest.mark.parametrize("dtype,scale", [(np.uint8, 255), (np.uint16, 65535), (bool, 1)])
def test_api_and_npz_source_read_integer_images_the_same(tmp_path, dtype, scale):
  rng = np.random.default_rng(0)
  x = rng.integers(0, scale + 1, size=(12, 6, 5, 1)).astype(dtype)
  np.savez(tmp_path / "d.npz", images=x[..., 0], labels=np.arange(12))
  raw, _ = sources.npz(str(tmp_path / "d.npz"))["all"].read(np.arange(12))
  keep = types.SimpleNamespace(channels=0, center_crop=False, crop_fraction=1.0, image_size=0)
  cli = images_lib.preprocess(raw, keep, name="npz")
  api = images_lib.check_images(x, name="aux_images")
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
  ids, names = data.label_ids({"aux": labels})
  assert names == ["alice", "bob"] and ids["aux"].tolist() == [0, 1, 1]


def test_reading_a_fifo_directly_is_refused_without_opening_it(tmp_path):
  os.mkfifo(tmp_path / "p.png")
  with _fails_instead_of_hanging(20), pytest.raises(DataError, match="it is a FIFO"):
    sources._read_image(str(tmp_path / "p.png"))


def _faces(root, counts):
  """A folder of `counts[name]` tiny random PNGs per identity subfolder; its path."""
  rng = np.random.default_rng(0)
  for name, n in counts.items():
    (root / name).mkdir(parents=True)
    for i in range(n):
      Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(root / name / f"{i}.png")
  return str(root)


def _folder_config(path):
  from configs import folder

  c = folder.get_config()
  c.data.path, c.data.image_size, c.data.channels = path, 6, 1
  return c


def test_a_builtin_model_of_one_identity_is_refused_before_any_work(tmp_path, caplog):
  from privjax.errors import DataError
  from privjax.stages import loading

  config = _folder_config(_faces(tmp_path / "one", {"alice": 60}))
  with caplog.at_level(logging.WARNING), pytest.raises(DataError) as refused:
    loading.data(config)
  message = str(refused.value)
  assert "\n" not in message
  assert "model_train_split='all[:50%]', which holds 1 identity ('alice', 30 images)" in message
  assert "it needs 2 or more" in message
  assert not caplog.records  # no "the report says so" before a run that writes no report
  config.model.kind, config.model.factory = "function", "mine:make"  # the user's own model
  assert loading.data(config).evaluator_kind == "off"


def test_too_few_targets_say_how_many_images_the_split_needs(tmp_path, caplog):
  from privjax.errors import DataError
  from privjax.stages import loading

  config = _folder_config(_faces(tmp_path / "five", {"a": 3, "b": 2}))
  with caplog.at_level(logging.WARNING), pytest.raises(DataError) as refused:
    loading.data(config)
  message = str(refused.value)
  assert "need at least config.min_targets=10 target images" in message and "got 1" in message
  assert "the targets are 20% of split 'all' (config.data.target_split='all[80%:]')" in message
  need = int(message.split("at least ")[2].split(" images in all")[0])
  assert "(this run read 5)" in message and "\n" not in message
  assert not caplog.records
  # The size it names is the least that gives config.min_targets targets at that split.
  ok = _folder_config(_faces(tmp_path / "enough", {"a": need - need // 2, "b": need // 2}))
  assert len(loading.data(ok).target_images) == 10
  few = _folder_config(_faces(tmp_path / "one_less", {"a": need - 1 - need // 2, "b": need // 2}))
  with pytest.raises(DataError, match=f"at least {need} images in all"):
    loading.data(few)
  # A larger share for the targets: the same five images then need fewer in all.
  config.data.aux_split, config.data.target_split = "all[50%:60%]", "all[60%:]"
  with pytest.raises(DataError, match="the targets are 40% of split 'all'") as refused:
    loading.data(config)
  assert int(str(refused.value).split("at least ")[2].split(" images")[0]) < need
