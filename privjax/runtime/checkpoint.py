"""Orbax checkpoints of training stages under the workdir.

Each trained stage (the reference recognition model, the decoder) keeps one
`orbax.checkpoint.CheckpointManager` in its own directory, holding an array
pytree ("state") and a JSON record ("meta": progress, history, metrics).
Re-running with the same workdir restores the latest step that restores and whose
contents match the SHA-256 checksum saved in its "meta" record (orbax does not
check the array data it reads: a flipped byte restores as a changed number). A
damaged step (a file truncated, deleted, garbled or changed in place) is set aside
as `<step>.damaged` with a warning and the previous step is used; when no step
restores, the run stops with one line naming the damaged step.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from privjax.errors import WorkdirError
from privjax.runtime import parallel

__all__ = ["checksum", "manager", "restore_latest", "save"]


def manager(directory: str, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
  """A CheckpointManager over `directory` (created) keeping the last `max_to_keep` steps."""
  return ocp.CheckpointManager(
    os.path.abspath(directory),
    options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
    item_names=("state", "meta"),
  )


_CHECKSUM = "contents_sha256"  # the key in "meta" holding the checksum of state and meta


def save(mngr: ocp.CheckpointManager, step: int, state, meta: dict) -> None:
  """Saves `state` (a pytree of arrays) and `meta` (JSON) at `step` (asynchronously).

  `state` is copied to the host (on every process: a collective), the only synchronous
  part of a save; the checksum of both goes into the saved meta. The host copy is what
  is written (orbax writes replicated numpy arrays from process 0): writing the device
  arrays would compile a slice and a copy per leaf and device, about a second per
  stage on 2 CPU cores, for the same bytes.
  """
  meta = json.loads(json.dumps(meta))  # the record exactly as it will read back
  host = parallel.fetch(state)
  meta[_CHECKSUM] = _digest(host, meta)
  mngr.save(
    step,
    args=ocp.args.Composite(state=ocp.args.StandardSave(host), meta=ocp.args.JsonSave(meta)),
    force=True,
  )


def checksum(state, meta: dict) -> str:
  """SHA-256 of a state's logical arrays (tree paths, dtypes, shapes, bytes) and a meta record.

  The same on any device count or sharding: it reads the gathered arrays.
  """
  return _digest(parallel.fetch(state), meta)


def _digest(host, meta: dict) -> str:
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(host):
    a = np.ascontiguousarray(leaf)
    h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
  h.update(json.dumps({k: v for k, v in meta.items() if k != _CHECKSUM}, sort_keys=True).encode())
  return h.hexdigest()


def restore_latest(mngr: ocp.CheckpointManager, abstract_state):
  """Returns (step, state, meta) of the latest checkpoint that restores, or None if there is none.

  `abstract_state` is a pytree of jax.ShapeDtypeStruct (with shardings) that
  the restored arrays take their shapes, dtypes and placement from. Steps are tried
  newest first; a step that fails to restore is logged and, once an older one has
  restored, renamed to `<step>.damaged` (kept for inspection, invisible to orbax) so
  that training can save that step again.

  Raises:
    WorkdirError: there are checkpoints but none restores; names the newest's directory
      and why it failed (damage, or every step saved with another tree: another privjax
      version's training state, which is not renamed as damaged).
  """
  directory = os.fspath(mngr.directory)
  damaged, layouts = [], []  # layouts: steps whose saved tree differs from abstract_state's
  for step in sorted(mngr.all_steps(), reverse=True):
    restored, why, other_layout = _restore_step(mngr, step, abstract_state)
    if other_layout:
      layouts.append(step)
    if why:
      damaged.append((step, why))
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
    meta = {k: v for k, v in restored["meta"].items() if k != _CHECKSUM}
    return step, restored["state"], meta
  if damaged:
    _refuse(directory, damaged, layouts)
  return None


def _restore_step(mngr: ocp.CheckpointManager, step: int, abstract_state):
  """(restored, why it is unusable or "", whether it was saved with another tree)."""
  try:
    restored = mngr.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
      ),
    )
    return restored, _verify(restored["state"], restored["meta"]), False
  except Exception as e:  # orbax and tensorstore raise many types for a damaged file
    return None, _one_line(e), any(marker in str(e) for marker in _LAYOUT_MISMATCH)


def _refuse(directory: str, damaged: list, layouts: list) -> None:
  """Raises the WorkdirError of a checkpoint directory none of whose steps restores."""
  if len(layouts) == len(damaged):
    raise WorkdirError(
      f"the checkpoint in {os.path.join(directory, str(layouts[0]))} holds a training state "
      "laid out otherwise than this privjax's (saved by another version); delete "
      f"{directory} to redo this stage"
    )
  step, why = damaged[0]
  raise WorkdirError(
    f"the checkpoint in {os.path.join(directory, str(step))} is damaged ({why}) and no older "
    f"step restores; delete {directory} to redo this stage"
  )


def _verify(state, meta) -> str:
  """Why a restored step cannot be trusted ('' when its checksum matches)."""
  if not isinstance(meta, dict) or _CHECKSUM not in meta:
    return "saved without a checksum (by a privjax older than checksummed checkpoints)"
  if checksum(state, meta) != meta[_CHECKSUM]:
    return "its contents do not match the checksum saved with them"
  return ""


# What orbax 0.12 says when a checkpoint's tree differs from the one asked for (with and
# without shardings in the request): not damage but another layout (another privjax
# version's training state).
_LAYOUT_MISMATCH = ("tree structures do not match", "Structure mismatch: Target path")


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
