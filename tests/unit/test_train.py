"""The generic training loop (privjax/runtime/loop.py) and the decoder's training on it."""

import dataclasses
import functools
import shutil

import chex
import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from privjax.attacks import decoder_training
from privjax.data.splits import batch_indices
from privjax.runtime import loop, parallel
from tests.conftest import tiny_training


def test_only_large_optimizer_leaves_are_split():
  big = loop.SPLIT_MIN_ELEMENTS
  assert loop.split_spec((512, 1024), 4) == P()  # a collective per step saves nothing
  assert loop.split_spec((8, big // 8), 4) == P(None, "data")  # the largest axis
  assert loop.split_spec((3, big), 4) == P(None, "data")
  assert loop.split_spec((big + 1,), 4) == P()  # no axis the device count divides


@pytest.mark.slow
def test_train_step_reduces_loss(digits8, monkeypatch):
  monkeypatch.setattr(loop, "SPLIT_MIN_ELEMENTS", 1024)  # split this small model's state
  images = digits8[0][:256]
  features = images.reshape(256, -1) @ np.random.default_rng(0).normal(size=(64, 32)).astype(
    np.float32
  )
  cfg = tiny_training(images.shape[1:])
  mesh = parallel.data_mesh()
  decoder = decoder_training.make_decoder(cfg, images.shape[1:])
  tx = decoder_training.make_optimizer(cfg)
  loss_fn = functools.partial(
    decoder_training.per_example_loss, kind="mse", filter_size=5, filter_sigma=0.68
  )
  training = decoder_training.training_for(decoder, tx, loss_fn, features.shape[1], mesh=mesh)
  state, step = training.init(jax.random.key(0)), training.step
  batch = parallel.shard_batch({"features": features[:128], "images": images[:128]}, mesh)
  losses = []
  for _ in range(30):
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  assert int(state.step) == 30
  assert losses[-1] < 0.5 * losses[0]
  # Params replicated; the optimizer state split over the 4 devices (1/4 per device).
  p = max(jax.tree.leaves(state.params), key=lambda a: a.size)
  assert p.sharding.is_fully_replicated
  big = [a for a in jax.tree.leaves(state.opt_state) if a.size >= 1024]
  assert big and all(a.addressable_shards[0].data.size * 4 == a.size for a in big)


def test_batch_indices_cover_each_epoch_once():
  n, b = 10, 4
  stream = np.concatenate([batch_indices(n, b, s, seed=3) for s in range(5)])  # 2 epochs
  assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
  np.testing.assert_array_equal(batch_indices(n, b, 2, seed=3), batch_indices(n, b, 2, seed=3))
  assert not np.array_equal(batch_indices(n, b, 0, seed=3), batch_indices(n, b, 0, seed=4))


@pytest.mark.slow
def test_training_stops_early_and_returns_best(digits8):
  images = digits8[0][:300]
  features = np.zeros((300, 4), np.float32)  # nothing to learn beyond the mean image
  cfg = tiny_training(images.shape[1:], num_steps=3000, eval_every=20)
  cfg = dataclasses.replace(cfg, patience=3)
  _, _, conv = decoder_training.train_decoder(features, images, cfg, mesh=parallel.data_mesh())
  assert conv["stopped"].startswith("early stop")
  assert conv["steps"] < 3000
  assert conv["best_step"] <= conv["steps"] - 3 * 20
  # The kept evaluation is the last one that improved by at least min_delta: no later
  # one is lower by more than that.
  at_best = [h["val_loss"] for h in conv["history"] if h["step"] == conv["best_step"]]
  assert at_best == [conv["best_val_loss"]]
  assert min(h["val_loss"] for h in conv["history"]) >= conv["best_val_loss"] - cfg.min_delta


@pytest.mark.slow
def test_train_step_keeps_a_debiased_moving_average_of_the_params(digits8):
  images = digits8[0][:64]
  features = images.reshape(64, -1)[:, ::4].copy()
  cfg = tiny_training(images.shape[1:])
  mesh = parallel.data_mesh()
  decoder = decoder_training.make_decoder(cfg, images.shape[1:])
  loss_fn = functools.partial(
    decoder_training.per_example_loss, kind="mse", filter_size=5, filter_sigma=0.68
  )
  training = decoder_training.training_for(
    decoder, decoder_training.make_optimizer(cfg), loss_fn, 16, mesh=mesh, ema_decay=0.99
  )
  state = training.init(jax.random.key(0))
  p0 = jax.tree.map(np.asarray, state.params)
  chex.assert_trees_all_equal(state.ema, p0)
  batch = parallel.shard_batch({"features": features, "images": images}, mesh)
  history = []  # Every step's params: the average is their debiased weighted mean.
  for t in range(1, 4):
    state, _ = training.step(state, batch)
    history.append(jax.tree.map(np.asarray, state.params))
    weights = [0.01 * 0.99 ** (t - s) / (1 - 0.99**t) for s in range(1, t + 1)]
    expected = jax.tree.map(
      lambda *ps, ws=tuple(weights): sum(w * p for w, p in zip(ws, ps, strict=True)), *history
    )
    chex.assert_trees_all_close(state.ema, expected, rtol=1e-5, atol=1e-7)
    if t == 1:  # The random initial params weigh nothing: the average is the params.
      chex.assert_trees_all_equal(state.ema, state.params)
  with pytest.raises(AssertionError):  # it moved, and not onto the last params
    chex.assert_trees_all_close(state.ema, state.params)
  with pytest.raises(AssertionError):
    chex.assert_trees_all_close(state.ema, p0)


@pytest.mark.slow
def test_resume_on_another_device_count(digits8, tmp_path, monkeypatch):
  """A checkpoint from 4 devices resumes on 2 (optimizer vectors are stored unpadded)."""
  monkeypatch.setattr(loop, "SPLIT_MIN_ELEMENTS", 1024)  # split this small model's state
  fresh = functools.lru_cache(maxsize=8)(decoder_training._decoder_programs.__wrapped__)
  monkeypatch.setattr(decoder_training, "_decoder_programs", fresh)  # programs built with that rule
  images = digits8[0][:300]
  features = images.reshape(300, -1)[:, ::2].copy()
  cfg = tiny_training(images.shape[1:], num_steps=80, eval_every=40, checkpoint_every=40)
  cfg = dataclasses.replace(cfg, patience=10)
  ckpt = tmp_path / "decoder"
  _, params4, conv4 = decoder_training.train_decoder(
    features, images, cfg, mesh=parallel.data_mesh(), checkpoint_dir=str(ckpt)
  )
  shutil.rmtree(ckpt / "80")  # as if the 4-device run had stopped after step 40
  mesh2 = parallel.data_mesh(jax.devices()[:2])
  _, params2, conv2 = decoder_training.train_decoder(
    features, images, cfg, mesh=mesh2, checkpoint_dir=str(ckpt)
  )
  assert conv2["steps"] == 80 and [h["step"] for h in conv2["history"]] == [40, 80]
  np.testing.assert_allclose(conv2["best_val_loss"], conv4["best_val_loss"], rtol=1e-4)
  for a, b in zip(jax.tree.leaves(params4), jax.tree.leaves(params2), strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-5)


def _update_norms(tx, devices, digits8):
  """The first update's global norm and the params after 3 steps on a mesh of `devices`."""
  images = digits8[0][:64]
  features = images.reshape(64, -1)[:, ::4].copy()
  cfg = tiny_training(images.shape[1:])
  mesh = parallel.data_mesh(jax.devices()[:devices])
  decoder = decoder_training.make_decoder(cfg, images.shape[1:], features.shape[1])
  loss_fn = functools.partial(
    decoder_training.per_example_loss, kind="mse", filter_size=5, filter_sigma=0.68
  )
  training = decoder_training.training_for(decoder, tx, loss_fn, features.shape[1], mesh=mesh)
  state = training.init(jax.random.key(0))
  before = jax.tree.map(np.asarray, state.params)
  batch = parallel.shard_batch({"features": features, "images": images}, mesh)
  state, _ = training.step(state, batch)
  after = jax.tree.map(np.asarray, state.params)
  delta = jax.tree.map(lambda a, b: a - b, after, before)
  return float(np.sqrt(sum(np.sum(d**2) for d in jax.tree.leaves(delta)))), delta


@pytest.mark.slow
def test_any_optax_chain_computes_as_on_one_device(digits8):
  import optax

  clipped = optax.chain(optax.clip_by_global_norm(1e-3), optax.sgd(1.0))
  norms = [_update_norms(clipped, n, digits8)[0] for n in (1, 4)]
  np.testing.assert_allclose(norms, [1e-3] * 2, rtol=1e-4)  # the clip sees the global norm
  # Masked weight decay: only the kernels decay (here: no gradient step, decay only).
  decay = optax.masked(
    optax.add_decayed_weights(0.5), lambda p: jax.tree.map(lambda a: a.ndim > 1, p)
  )
  tx = optax.chain(decay, optax.scale(-1.0))
  _, d1 = _update_norms(optax.chain(optax.scale(0.0), tx), 1, digits8)
  _, d4 = _update_norms(optax.chain(optax.scale(0.0), tx), 4, digits8)
  for a, b in zip(jax.tree.leaves(d1), jax.tree.leaves(d4), strict=True):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
  kernels = [d for d in jax.tree.leaves(d4) if d.ndim > 1]
  biases = [d for d in jax.tree.leaves(d4) if d.ndim == 1]
  assert all(np.abs(k).max() > 0 for k in kernels) and all(np.all(b == 0) for b in biases)


@pytest.mark.slow
def test_the_ssim_weight_scales_only_the_ssim_term_of_the_mixed_losses():
  rng = np.random.default_rng(0)
  a, b = (rng.random((3, 16, 16, 1), np.float32) for _ in range(2))
  loss = functools.partial(
    decoder_training.per_example_loss, a, b, filter_size=5, filter_sigma=0.68
  )
  mse, dssim = loss(kind="mse"), loss(kind="ssim")
  np.testing.assert_allclose(loss(kind="mse+ssim", ssim_weight=0.1), mse + 0.1 * dssim, rtol=1e-6)
  np.testing.assert_allclose(loss(kind="mse+ssim"), mse + dssim, rtol=1e-6)
  np.testing.assert_allclose(
    loss(kind="log_mse+ssim", ssim_weight=3.0),
    np.log(mse + decoder_training.LOG_MSE_EPS) + 3.0 * dssim,
    rtol=1e-5,
  )


def test_a_state_without_an_average_is_stored_as_before_the_average_existed():
  """Checkpoints of models trained without an average (the recognition model) keep the
  tree paths, so their checksums, of the three-field state that older privjax saved."""
  state = loop.TrainState(step=np.int32(3), params={"w": np.ones(2)}, opt_state=(np.zeros(2),))
  stored = loop._stored(state)
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(stored)]
  assert paths == [".step", ".params['w']", ".opt_state[0]"]
  assert loop._loaded(stored) == state
  averaged = state.replace(ema={"w": np.zeros(2)})
  assert loop._loaded(loop._stored(averaged)) is averaged


def test_mismatched_mse_averages_every_other_pair(rng):
  predictions = rng.uniform(size=(7, 3, 2, 1)).astype(np.float32)
  images = rng.uniform(size=(7, 3, 2, 1)).astype(np.float32)
  p64, x64 = predictions.astype(np.float64), images.astype(np.float64)
  brute = [np.mean([np.mean((p64[j] - x64[i]) ** 2) for j in range(7) if j != i]) for i in range(7)]
  np.testing.assert_allclose(
    decoder_training.mismatched_mse(predictions, images, chunk=3), brute, rtol=1e-9
  )
  assert decoder_training.mismatched_mse(predictions[:1], images[:1]) is None  # no other image


def _record(best_mse, other_mse, se, mean_image_mse=0.073):
  return {
    "history": [{"step": 200, "val_loss": -3.6}, {"step": 300, "val_loss": -3.9}],
    "best_val_loss": -3.9,  # a log loss: negative, so no fraction of it means anything
    "mean_image_val_loss": -3.5,
    "best_val_mse": best_mse,
    "mean_image_val_mse": mean_image_mse,
    "mismatched_val_mse": other_mse,
    "mismatched_val_mse_se": se,
    "best_step": 300,
    "stopped": "early stop",
  }


@pytest.mark.parametrize(
  "best_mse, other_mse, se, flat",
  [
    # Sharp guesses (an SSIM term) worse than the mean image's blur in mse, yet clearly
    # closer to their own images than to the others: it learned (the old rule said flat).
    (0.080, 0.091, 0.0014, False),
    (0.012, 0.140, 0.0018, False),
    (0.091, 0.0909, 0.0017, True),  # no closer to its own images than to the others
    (0.0705, 0.0715, 0.0001, True),  # significant, but 1.4%: under 2% of the others' mse
    (0.085, 0.0900, 0.0030, True),  # 5.6%, but within 2 standard errors
    (0.085, None, None, False),  # one held-out image: nothing to compare with
  ],
)
def test_the_flat_warning_compares_the_decoder_with_its_reconstructions_of_other_images(
  best_mse, other_mse, se, flat
):
  from privjax.attacks.decoder import training_warnings

  cfg = ml_collections.ConfigDict({"warmup_steps": 100})
  warnings = training_warnings(_record(best_mse, other_mse, se), cfg)
  assert any("validation loss flat" in w for w in warnings) == flat


@pytest.mark.slow
@pytest.mark.parametrize("noise", [3.0, None])
def test_the_flat_warning_fires_only_on_a_decoder_that_learned_nothing(digits8, noise):
  """Features of the images under noise of 3 times their std: the decoder learns some
  of each image (its sharp guesses worse in mse than the mean image, which the old rule
  called flat); random features independent of the images: it learns nothing."""
  from privjax.attacks.decoder import training_warnings

  images = digits8[0][:600]
  rng = np.random.default_rng(0)
  signal = images.reshape(600, -1) @ rng.normal(size=(64, 16)).astype(np.float32)
  signal = (signal - signal.mean(0)) / signal.std(0)
  noise_only = rng.normal(size=signal.shape)
  features = (noise_only if noise is None else signal + noise * noise_only).astype(np.float32)
  cfg = tiny_training(images.shape[1:], num_steps=300, eval_every=50)
  _, _, conv = decoder_training.train_decoder(features, images, cfg, mesh=parallel.data_mesh())
  flat = [w for w in training_warnings(conv, cfg) if "validation loss flat" in w]
  assert bool(flat) == (noise is None), (conv["best_val_mse"], conv["mismatched_val_mse"], flat)
  if noise is not None:  # the case the mean image misjudged
    assert conv["best_val_mse"] > conv["mean_image_val_mse"]
