"""How images and labels are read: the integer rule, masks, label names and their checks."""

import os

import numpy as np
import pytest

from configs import npz as npz_config
from privjax.data import images as images_lib
from privjax.data import splits as data
from privjax.errors import DataError


def test_integer_rule_scales_by_dtype():
  np.testing.assert_array_equal(
    images_lib.to_unit_float(np.array([0, 51, 255], np.uint8), name="x"), np.float32([0, 0.2, 1])
  )
  sixteen = np.array([0, 257, 65535], np.uint16)
  np.testing.assert_allclose(images_lib.to_unit_float(sixteen, name="x"), [0.0, 257 / 65535, 1.0])
  np.testing.assert_allclose(
    images_lib.to_unit_float(sixteen.astype(">u2"), name="x"), [0, 257 / 65535, 1]
  )
  np.testing.assert_array_equal(
    images_lib.to_unit_float(np.array([True, False]), name="x"), [1.0, 0.0]
  )
  floats = np.array([0.0, 0.25, 1.0])
  out = images_lib.to_unit_float(floats, name="x")
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
    images_lib.to_unit_float(x, name="my images")
  assert str(e.value).startswith("my images ") and "\n" not in str(e.value)


def test_uint8_mask_is_refused_as_a_set_but_bool_mask_is_read():
  mask = np.zeros((4, 8, 8, 1), np.uint8)
  mask[:, 2:5, 2:5] = 1
  with pytest.raises(DataError, match="uint8 holding only 0 and 1"):
    images_lib.check_images(mask, name="aux_images")
  np.testing.assert_array_equal(images_lib.check_images(mask.astype(bool), name="m"), mask)
  # One image with only 0/1 values (a near-black photo) is read, not refused.
  assert images_lib.to_unit_float(mask[0], name="one").max() == np.float32(1 / 255)


def test_string_labels_in_npz_become_identity_names(tmp_path):
  n = 40
  x = np.arange(n, dtype=np.uint8)[:, None, None] * np.ones((1, 4, 4), np.uint8)  # image i: i/255
  who = np.array([["carol", "alice", "bob", "dave"][i % 4] for i in range(n)])
  np.savez(tmp_path / "named.npz", images=x, labels=who)
  config = npz_config.get_config()
  config.data.path = str(tmp_path / "named.npz")
  config.data.image_size = 0
  loaded = data.load(config.data)
  assert loaded.label_names == ["alice", "bob", "carol", "dave"]
  for split in (loaded.model_train, loaded.aux, loaded.targets):
    rows = np.rint(split.images[:, 0, 0, 0] * 255).astype(int)
    assert [loaded.label_names[i] for i in split.labels] == list(who[rows])


def test_labels_rules_for_the_api():
  np.testing.assert_array_equal(
    images_lib.check_labels(["bob", "al", "bob"], 3, name="t"), [1, 0, 1]
  )
  np.testing.assert_array_equal(
    images_lib.check_labels(np.array([b"x", b"y"]), 2, name="t"), [0, 1]
  )
  np.testing.assert_array_equal(
    images_lib.check_labels(np.array([3, 1], np.uint8), 2, name="t"), [3, 1]
  )
  with pytest.raises(DataError, match="t must be integers or strings .* got dtype float64"):
    images_lib.check_labels(np.array([1.0, 2.0]), 2, name="t")
  with pytest.raises(DataError, match=r"must be all integers or all strings .*\['int', 'str'\]"):
    data.label_ids({"aux": [1, 2], "target": ["a"]})


def test_only_a_source_that_declares_it_aligns_face_photos():
  from configs import folder
  from privjax.data import sources
  from privjax.errors import ConfigError

  assert sources.aligns("folder") and not sources.aligns("npz")
  assert not sources.aligns("tests.unit.toy_plugins:stripes") and not sources.aligns(None)
  d = folder.get_config().data
  d.align = "dlib"
  data.validate(d)  # the folder source declares `aligns`
  for source in ("npz", "tests.unit.toy_plugins:stripes"):
    d.source = source
    with pytest.raises(ConfigError, match=f"of a folder source, got data.source='{source}'"):
      data.validate(d)


# --- data.save_chips: checked before any work, written atomically -------------------------


def test_save_chips_is_checked_before_any_work(tmp_path, monkeypatch):
  from privjax.errors import ConfigError

  assert data.check_save_chips("") == ""
  monkeypatch.setenv("HOME", str(tmp_path))
  assert data.check_save_chips("~/chips/new") == str(tmp_path / "chips" / "new")
  (tmp_path / "a_file").write_text("mine")
  cases = [
    (
      str(tmp_path / "a_file"),
      None,
      f"must be a folder to write the face chips into, got an existing file: {tmp_path}/a_file",
    ),
    (str(tmp_path / "a_file" / "chips"), None, f"cannot be made: {tmp_path}/a_file is not a"),
    (
      str(tmp_path / "run" / "chips"),
      str(tmp_path / "run"),
      f"is inside the workdir {tmp_path}/run,",
    ),
    (str(tmp_path / "run"), str(tmp_path / "run"), f"is inside the workdir {tmp_path}/run,"),
    ("/sys/privjax-chips", None, "is not writable: cannot create a file in /sys ("),
    (7, None, "must be a folder path or '', got 7"),
  ]
  before = sorted(os.listdir(tmp_path))
  for path, workdir, expected in cases:
    with pytest.raises(ConfigError) as e:
      data.check_save_chips(path, workdir=workdir)
    assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)
  assert sorted(os.listdir(tmp_path)) == before  # it only looks
  assert (tmp_path / "a_file").read_text() == "mine"
  assert not os.path.exists("/sys/privjax-chips")
  # Beside the workdir (or the workdir inside the chips folder) is fine.
  assert data.check_save_chips(str(tmp_path / "run-chips"), workdir=str(tmp_path / "run"))


class _FakeAligner:
  """align.Aligner without dlib: each photo's chip is the photo, in RGB uint8."""

  def chip(self, image, *, largest=False):
    del largest
    grey = np.round(np.asarray(image) * 255).astype(np.uint8)
    return np.repeat(grey, 3, axis=-1), 1


def _faces(tmp_path, digits8):
  from PIL import Image

  x, _ = digits8
  root = tmp_path / "faces"
  for person in ("ann", "bob"):
    (root / person).mkdir(parents=True)
    for k in range(2):
      image = (x[k + (person == "bob") * 2, :, :, 0] * 255).astype(np.uint8)
      Image.fromarray(image).save(root / person / f"{k}.jpg", quality=100)
  return root


def test_chips_are_written_whole_beside_their_relative_paths(tmp_path, monkeypatch, digits8):
  from PIL import Image

  from privjax.data import align, sources

  monkeypatch.setattr(align, "Aligner", _FakeAligner)
  root, chips = _faces(tmp_path, digits8), tmp_path / "chips"
  split = sources.folder(str(root), "dlib", str(chips))["all"]
  assert sorted(str(p.relative_to(chips)) for p in chips.rglob("*")) == [
    "ann",
    "ann/0.png",
    "ann/1.png",
    "bob",
    "bob/0.png",
    "bob/1.png",
  ]
  images, _ = split.read(np.arange(4))
  for image, name in zip(images, split.names(np.arange(4)), strict=True):
    saved = np.asarray(Image.open(chips / name.replace(".jpg", ".png")))
    np.testing.assert_array_equal(saved, np.round(image * 255).astype(np.uint8))


@pytest.mark.parametrize("code", ["EACCES", "ENOSPC", "EFBIG"])
def test_a_refused_chip_write_is_one_line_and_keeps_the_chip_there(
  tmp_path, monkeypatch, digits8, code
):
  import errno

  from privjax.data import align, sources
  from privjax.errors import WorkdirError
  from tests.conftest import snapshot

  monkeypatch.setattr(align, "Aligner", _FakeAligner)
  root, chips = _faces(tmp_path, digits8), tmp_path / "chips"
  sources.folder(str(root), "dlib", str(chips))
  before = snapshot(chips)
  real_write, calls = os.write, []

  def refused_at_the_third(fd, data):
    calls.append(fd)
    if len(calls) == 3:
      raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))
    return real_write(fd, data)

  monkeypatch.setattr(os, "write", refused_at_the_third)
  with pytest.raises(WorkdirError) as e:
    sources.folder(str(root), "dlib", str(chips))
  monkeypatch.undo()
  assert f" {chips}/bob/0.png" in str(e.value) and "\n" not in str(e.value), str(e.value)
  assert snapshot(chips).keys() == before.keys()  # no temporary left, no chip half-written
  assert all(snapshot(chips)[name][1] == before[name][1] for name in before)
