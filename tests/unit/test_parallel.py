"""Extraction over the device mesh: ragged batches, each image embedded exactly once."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privjax.errors import ModelError
from privjax.runtime import parallel
from privjax.stages import extraction


def test_mesh_spans_all_devices():
  mesh = parallel.data_mesh()
  assert mesh.size == jax.device_count() == 4
  assert mesh.axis_names == (parallel.DATA_AXIS,)


@pytest.mark.parametrize("n,batch", [(10, 4), (10, 6), (3, 8), (16, 8)])
def test_extraction_embeds_each_image_exactly_once(n, batch):
  chex.clear_trace_counter()
  mesh = parallel.data_mesh()
  images = (np.arange(n, dtype=np.float32)[:, None, None, None] / n) * np.ones(
    (n, 2, 2, 1), np.float32
  )
  calls = []

  @chex.assert_max_traces(n=1)
  def embed(params, x):
    calls.append(x.shape)
    return jnp.stack([x[:, 0, 0, 0] * params, jnp.ones(x.shape[0])], axis=1)

  embed_jit = jax.jit(embed)
  features = extraction.extract_features(
    embed_jit, jnp.float32(2.0), images, mesh=mesh, batch_size=batch, name="test"
  )
  assert features.shape == (n, 2)
  np.testing.assert_allclose(features[:, 0], 2.0 * images[:, 0, 0, 0])  # input order kept
  assert features[:, 1].sum() == n  # padded rows dropped: every image counted once
  # Batches are a multiple of the device count, and one shape is traced once.
  assert len(calls) == 1 and calls[0][0] % mesh.size == 0


def test_batches_are_split_across_devices_and_params_replicated():
  mesh = parallel.data_mesh()
  batch = parallel.shard_batch(np.arange(24, dtype=np.float32).reshape(8, 3), mesh)
  assert batch.sharding.spec == jax.sharding.PartitionSpec(parallel.DATA_AXIS)
  assert sorted(s.data.shape for s in batch.addressable_shards) == [(2, 3)] * 4
  params = parallel.replicate(jnp.ones(5), mesh)
  assert all(s.data.shape == (5,) for s in params.addressable_shards)
  assert len(params.addressable_shards) == 4


@pytest.mark.parametrize(
  "fn,match",
  [
    (lambda p, x: x.reshape(x.shape[0], -1)[:, 0], "rank 2"),
    (lambda p, x: x.reshape(x.shape[0], -1) * jnp.nan, "non-finite features"),
  ],
)
def test_extraction_rejects_bad_embeddings(fn, match):
  images = np.ones((6, 2, 2, 1), np.float32)
  with pytest.raises(ModelError, match=match):
    extraction.extract_features(
      jax.jit(fn), None, images, mesh=parallel.data_mesh(), batch_size=4, name="targets"
    )
