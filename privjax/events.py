"""Training curves in TensorBoard's event format, written without TensorFlow.

The flax examples write metrics through CLU's `MetricWriter` interface, but clu 0.0.12
cannot be imported without TensorFlow: `clu.metric_writers` (and `clu.periodic_actions`,
which imports it) loads its TensorFlow summary writer when the package is imported. So
privjax keeps that interface (`write_scalars(step, {name: value})`, `flush`, `close`)
over tensorboardX's SummaryWriter, the usual TensorFlow-free writer, and logs steps/s
and ETA itself (`privjax.train.fit`).

Curves go beside the checkpoints: a stage checkpointed in <workdir>/checkpoints/<stage>
writes <workdir>/tensorboard/<stage>; `tensorboard --logdir <workdir>/tensorboard`
shows them. Only process 0 writes.
"""

from __future__ import annotations

import os

from privjax import parallel


class ScalarWriter:
  """CLU's MetricWriter for scalars, over tensorboardX."""

  def __init__(self, logdir: str):
    from tensorboardX import SummaryWriter

    self._writer = SummaryWriter(logdir=logdir)

  def write_scalars(self, step: int, scalars: dict) -> None:
    for name, value in scalars.items():
      self._writer.add_scalar(name, float(value), global_step=int(step))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def events_dir(checkpoint_dir: str) -> str:
  """<workdir>/tensorboard/<stage> for a stage checkpointed in <workdir>/checkpoints/<stage>."""
  stage = os.path.basename(os.path.normpath(checkpoint_dir))
  workdir = os.path.dirname(os.path.dirname(os.path.normpath(checkpoint_dir)))
  return os.path.join(workdir, "tensorboard", stage)


def writer_for(checkpoint_dir: str | None) -> ScalarWriter | None:
  """The stage's writer on process 0 of a run with a workdir; None otherwise."""
  if checkpoint_dir is None or not parallel.is_writer():
    return None
  return ScalarWriter(events_dir(checkpoint_dir))
