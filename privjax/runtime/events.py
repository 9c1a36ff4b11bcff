"""Training curves in TensorBoard's event format, written without TensorFlow.

The flax examples write metrics through CLU's `MetricWriter` interface, but clu 0.0.12
cannot be imported without TensorFlow: `clu.metric_writers` (and `clu.periodic_actions`,
which imports it) loads its TensorFlow summary writer when the package is imported. So
privjax keeps that interface (`write_scalars(step, {name: value})`, `flush`, `close`)
over tensorboardX's SummaryWriter, the usual TensorFlow-free writer, and logs steps/s
and ETA itself (`privjax.runtime.loop.fit`).

Curves go beside the checkpoints: a stage checkpointed in <workdir>/checkpoints/<stage>
writes <workdir>/tensorboard/<stage>; `tensorboard --logdir <workdir>/tensorboard`
shows them. Only process 0 writes.
"""

from __future__ import annotations

from privjax.runtime import parallel
from privjax.runtime import workdir as workdir_lib

__all__ = ["ScalarWriter", "writer_for"]


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


def writer_for(checkpoint_dir: str | None) -> ScalarWriter | None:
  """The stage's writer on process 0 of a run with a workdir; None otherwise."""
  if checkpoint_dir is None or not parallel.is_writer():
    return None
  logdir = workdir_lib.events_dir_of(checkpoint_dir)
  return None if logdir is None else ScalarWriter(logdir)
