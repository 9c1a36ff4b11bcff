"""Data parallelism: one device mesh with a "data" axis, sharded batches, padded maps.

Every stage runs the same way: params replicated (`P()`), batches sharded over the
"data" axis (`P("data")`), and `jax.jit` inserts the collectives. `batched_map`
streams a dataset through a jitted per-example function in fixed-size batches,
padding the last batch and dropping the padded rows, so every example is processed
exactly once and the function compiles once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over all devices (of every process) with the axis "data"."""
  devices = list(jax.devices() if devices is None else devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), (AxisType.Auto,), devices=devices)


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree, mesh):
  """Places a pytree of arrays on every device of `mesh`."""
  return jax.device_put(tree, replicated(mesh))


def shard_batch(batch, mesh):
  """Places a pytree of host arrays [B, ...] on `mesh`, split along the batch axis.

  Each process passes its own rows; the global batch is their concatenation
  (`jax.make_array_from_process_local_data`), so this also serves multi-host runs.
  """
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def fit_batch_size(batch_size: int, mesh, *, what: str) -> int:
  """Rounds a global batch size up to a multiple of the mesh's device count (logged)."""
  n = mesh.size
  fitted = math.ceil(batch_size / n) * n
  if fitted != batch_size:
    logging.info(
      "%s batch size %d rounded up to %d (a multiple of %d devices)", what, batch_size, fitted, n
    )
  return fitted


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """Pads the leading axis of `x` with zeros up to `rows`."""
  if x.shape[0] == rows:
    return x
  pad = np.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)
  return np.concatenate([x, pad], axis=0)


def batched_map(
  fn: Callable,
  arrays: Sequence[np.ndarray],
  *,
  batch_size: int,
  mesh,
) -> dict | np.ndarray:
  """Applies a jitted per-example `fn(*batch) -> pytree of [B, ...]` over whole arrays.

  Args:
    fn: a jitted function of batches whose outputs are per-example (leading axis B).
    arrays: host arrays with the same leading size N.
    batch_size: global batch, rounded up to a multiple of the device count.
    mesh: the data mesh.

  Returns:
    The outputs for all N examples, as host numpy arrays in input order. The last
    batch is padded with zeros and its padded rows are dropped, so each example is
    processed exactly once. Results are fetched once, at the end.
  """
  n = arrays[0].shape[0]
  b = fit_batch_size(min(batch_size, max(n, 1)), mesh, what="evaluation")
  outputs = []
  for start in range(0, n, b):
    chunk = [pad_rows(np.asarray(a[start : start + b]), b) for a in arrays]
    outputs.append(fn(*shard_batch(chunk, mesh)))
    if len(outputs) > 1:  # At most two batches in flight (see train.py).
      jax.block_until_ready(outputs[-2])
  host = jax.device_get(outputs)
  return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0)[:n], *host)
