"""The decoder's train step and training loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from privjax import config as config_lib
from privjax import parallel, train
from privjax.data import batch_indices
from tests.conftest import tiny_config


def test_train_step_reduces_loss(digits8):
  images = digits8[0][:256]
  features = images.reshape(256, -1) @ np.random.default_rng(0).normal(size=(64, 32)).astype(
    np.float32
  )
  cfg = config_lib.for_images(images.shape[1:], tiny_config())
  mesh = parallel.data_mesh()
  decoder = train.make_decoder(cfg, images.shape[1:])
  tx = train.make_optimizer(cfg.train)
  params = decoder.init(jax.random.key(0), features[:1])
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  state = parallel.replicate(state, mesh)
  loss_fn = functools.partial(train.per_example_loss, kind="mse", filter_size=5, filter_sigma=0.68)
  step = jax.jit(
    functools.partial(train.train_step, decoder=decoder, tx=tx, loss_fn=loss_fn),
    donate_argnums=(0,),
  )
  batch = parallel.shard_batch({"features": features[:128], "images": images[:128]}, mesh)
  losses = []
  for _ in range(30):
    state, m = step(state, batch)
    losses.append(float(m["loss"]))
  assert int(state.step) == 30
  assert losses[-1] < 0.5 * losses[0]


def test_batch_indices_cover_each_epoch_once():
  n, b = 10, 4
  stream = np.concatenate([batch_indices(n, b, s, seed=3) for s in range(5)])  # 2 epochs
  assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
  np.testing.assert_array_equal(batch_indices(n, b, 2, seed=3), batch_indices(n, b, 2, seed=3))
  assert not np.array_equal(batch_indices(n, b, 0, seed=3), batch_indices(n, b, 0, seed=4))


def test_training_stops_early_and_returns_best(digits8):
  images = digits8[0][:300]
  features = np.zeros((300, 4), np.float32)  # nothing to learn beyond the mean image
  cfg = config_lib.for_images(images.shape[1:], tiny_config(num_steps=3000, eval_every=20))
  cfg.train.patience = 3
  _, _, conv = train.train_decoder(features, images, cfg, mesh=parallel.data_mesh())
  assert conv["stopped"].startswith("early stop")
  assert conv["steps"] < 3000
  assert conv["best_step"] <= conv["steps"] - 3 * 20
  best = min(h["val_loss"] for h in conv["history"])
  assert conv["best_val_loss"] == best
