"""Orbax checkpoints of training stages under the workdir.

Each trained stage (the reference recognition model, the decoder) keeps one
`orbax.checkpoint.CheckpointManager` in its own directory, holding an array
pytree ("state") and a JSON record ("meta": progress, history, metrics).
Re-running with the same workdir restores the latest step that restores: a damaged
step (a file truncated, deleted or garbled; orbax's data files are checksummed) is
set aside as `<step>.damaged` with a warning and the previous step is used; when no
step restores, the run stops with one line naming the damaged step.
"""

from __future__ import annotations

import os

import orbax.checkpoint as ocp
from absl import logging

from privjax import parallel
from privjax.errors import WorkdirError


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
  """Returns (step, state, meta) of the latest checkpoint that restores, or None if there is none.

  `abstract_state` is a pytree of jax.ShapeDtypeStruct (with shardings) that
  the restored arrays take their shapes, dtypes and placement from. Steps are tried
  newest first; a step that fails to restore is logged and, once an older one has
  restored, renamed to `<step>.damaged` (kept for inspection, invisible to orbax) so
  that training can save that step again.

  Raises:
    WorkdirError: there are checkpoints but none restores; names the newest's directory
      and why it failed.
  """
  directory = os.fspath(mngr.directory)
  damaged = []
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      restored = mngr.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
        ),
      )
    except Exception as e:  # orbax and tensorstore raise many types for a damaged file
      damaged.append((step, _one_line(e)))
      logging.warning(
        "checkpoint step %d in %s cannot be restored (%s); trying an older step",
        step,
        directory,
        damaged[-1][1],
      )
      continue
    if damaged:
      _set_aside(mngr, [s for s, _ in damaged])
      logging.warning(
        "restored checkpoint step %d in %s instead; the damaged steps were renamed to "
        "<step>.damaged",
        step,
        directory,
      )
    return step, restored["state"], restored["meta"]
  if damaged:
    step, why = damaged[0]
    raise WorkdirError(
      f"the checkpoint in {os.path.join(directory, str(step))} is damaged ({why}) and no older "
      f"step restores; delete {directory} to redo this stage"
    )
  return None


def _one_line(e: Exception) -> str:
  text = " ".join(str(e).split()) or type(e).__name__
  return text if len(text) <= 300 else text[:297] + "..."


def _set_aside(mngr: ocp.CheckpointManager, steps) -> None:
  """Renames damaged step directories to `<step>.damaged` (process 0), then reloads."""
  parallel.barrier("checkpoint: restore tried")
  if parallel.is_writer():
    directory = os.fspath(mngr.directory)
    for step in steps:
      src = os.path.join(directory, str(step))
      dst, k = f"{src}.damaged", 1
      while os.path.exists(dst):
        dst, k = f"{src}.damaged-{k}", k + 1
      if os.path.exists(src):
        os.rename(src, dst)
  parallel.barrier("checkpoint: damaged steps set aside")
  mngr.reload()
