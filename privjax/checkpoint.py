"""Orbax checkpoints of training stages under the workdir.

Each trained stage (the reference recognition model, the decoder) keeps one
`orbax.checkpoint.CheckpointManager` in its own directory, holding an array
pytree ("state") and a JSON record ("meta": progress, history, metrics).
Re-running with the same workdir restores the latest step.
"""

from __future__ import annotations

import os

import orbax.checkpoint as ocp


def manager(directory: str, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
  """A CheckpointManager over `directory` (created) keeping the last `max_to_keep` steps."""
  return ocp.CheckpointManager(
    os.path.abspath(directory),
    options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
    item_names=("state", "meta"),
  )


def save(mngr: ocp.CheckpointManager, step: int, state, meta: dict) -> None:
  """Saves `state` (a pytree of arrays) and `meta` (JSON) at `step` (asynchronously)."""
  mngr.save(
    step,
    args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
    force=True,
  )


def restore_latest(mngr: ocp.CheckpointManager, abstract_state):
  """Returns (step, state, meta) of the latest checkpoint, or None if there is none.

  `abstract_state` is a pytree of jax.ShapeDtypeStruct (with shardings) that
  the restored arrays take their shapes, dtypes and placement from.
  """
  step = mngr.latest_step()
  if step is None:
    return None
  restored = mngr.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
    ),
  )
  return step, restored["state"], restored["meta"]
