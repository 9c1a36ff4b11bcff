"""The workdir: one run at a time, fingerprinted stage caches, no silent blends.

A workdir is a directory privjax made: `prepare` creates it with a marker file
(`.privjax-workdir`) and refuses an empty `--workdir`, an existing file, and a
non-empty directory without the marker, so a mistyped path never has its files
overwritten (workdirs made before the marker, recognised by privjax's own files, get
it). `~` is expanded.

A run holds an exclusive `flock` on `<workdir>/.privjax.lock` for its whole length;
a second run on the same workdir fails at once, and the kernel drops the lock when
a run dies, however it dies, so a crash never leaves it stuck. In a multi-process
run, process p > 0 locks `.privjax-p.lock`, so two jobs cannot share a workdir while
the processes of one job can; the workdir must be storage every process sees.

Files are written to a temporary name beside their target (`.<name>.<random>.privjax-tmp`,
with the mode a plain `open` gives: 0o666 less the umask) and renamed over it; a set
of files (the report) is published together by `publish`. When process 0 takes the
lock it completes a publication a killed run had committed and removes the
temporaries a killed run left. A write the OS refuses (`WRITE_ERRNOS`: a full disk or
quota, a file-size limit, a read-only file system, permissions, an I/O error) is a
one-line WorkdirError naming the file, and leaves the previous file whole.

Each cached stage (the recognition model, features, the decoder checkpoints)
records a fingerprint of everything its result depends on (config fields, data
and model hashes). Re-running with the same inputs reuses it; different inputs are
an error naming what changed, unless `config.overwrite=True` discards the stale
stage. Results are never mixed.

A refused run (bad input: a `PrivjaxError`, training divergence aside, whose checkpoint is
kept) adds nothing: what it wrote into the workdir is removed, and a workdir it created
goes with it. A run that fails otherwise never leaves an empty workdir it created.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile

import jax
import numpy as np
from absl import logging

from privjax.errors import PrivjaxError, TrainingError, WorkdirError
from privjax.runtime import parallel

__all__ = [
  "PUBLISH_FILE",
  "TMP_SUFFIX",
  "WRITE_ERRNOS",
  "array_hash",
  "atomic_write",
  "claim_stage",
  "events_dir_of",
  "locked",
  "prepare",
  "publish",
  "recover",
  "resolve",
  "write_error",
]

LOCK_FILE = ".privjax.lock"
MARKER_FILE = ".privjax-workdir"
FINGERPRINT_FILE = "fingerprint.json"
TMP_SUFFIX = ".privjax-tmp"  # atomic_write's temporaries: `.<name>.<random>.privjax-tmp`
PUBLISH_FILE = ".privjax-publish.json"  # a committed, unfinished `publish`
_held: dict[str, int] = {}  # workdirs whose lock this process holds -> nesting depth


def resolve(path) -> str:
  """The absolute workdir `path` names (`~` expanded), if privjax may use it; reads only.

  Raises:
    WorkdirError: `path` is empty, an existing file, or a non-empty directory that is
      not a privjax workdir (privjax never writes among a user's own files).
  """
  if path is None or not os.fspath(path).strip():
    raise WorkdirError(
      "--workdir is empty: name a directory for the checkpoints and the report (privjax creates it)"
    )
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  if os.path.islink(path) and not os.path.exists(path):
    raise WorkdirError(
      f"workdir {path} is a symbolic link to {os.readlink(path)!r}, which does not exist: "
      "create that directory, or name another --workdir"
    )
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f"workdir must be a directory, got an existing file: {path}")
  if os.path.isdir(path) and not _is_privjax_workdir(path):
    raise WorkdirError(
      f"workdir {path} is not empty and is not a privjax workdir (no {MARKER_FILE} file): "
      "privjax writes its files only into a new or empty directory or one it made; name "
      "another --workdir"
    )
  return path


def _is_privjax_workdir(path: str) -> bool:
  """Empty, marked, or made by privjax before the marker (its lock or stage files)."""
  try:
    entries = set(os.listdir(path))
  except OSError as e:
    raise WorkdirError(f"workdir {path} cannot be read: {e.strerror or e}") from e
  if not entries or MARKER_FILE in entries:
    return True
  if any(e.startswith(".privjax") and e.endswith(".lock") for e in entries):
    return True
  checkpoints = os.path.join(path, "checkpoints")
  if not os.path.isdir(checkpoints):
    return False
  if "report.json" in entries:  # report.REPORT_JSON (report imports this module)
    return True
  return any(
    os.path.isfile(os.path.join(checkpoints, stage, FINGERPRINT_FILE))
    for stage in os.listdir(checkpoints)
  )


def prepare(path) -> str:
  """Creates the workdir `path` if needed (marked as privjax's) and checks it is writable.

  Returns the absolute path. Raises WorkdirError as `resolve` does, or when the
  directory cannot be created or written.
  """
  path = resolve(path)
  try:
    os.makedirs(path, exist_ok=True)
    # The marker first: in a multi-process run another process may be checking the
    # directory now, and must never find it non-empty without the marker.
    _create_marker(path)
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as e:
    finished = os.path.isfile(os.path.join(path, "report.json"))
    if finished and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
      raise WorkdirError(
        f"workdir {path} holds a finished audit but is read-only ({e.strerror}): privjax "
        "gives a verdict (and --fail_on's status) only from a run that re-checks every "
        "stage under the workdir's lock, which it cannot write here; open report.html "
        "directly, or copy the workdir and name the copy as --workdir"
      ) from e
    raise WorkdirError(f"workdir {path} is not writable: {e.strerror or e}") from e
  return path


def _create_marker(path: str) -> None:
  try:
    fd = os.open(os.path.join(path, MARKER_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  except FileExistsError:
    return
  with os.fdopen(fd, "w") as f:
    f.write("A privjax workdir: checkpoints, caches and the report of an audit.\n")


@contextlib.contextmanager
def locked(path):
  """Holds the workdir's exclusive lock (re-entrant within one process); yields its path.

  The workdir is made ready first (`prepare`). Process 0, on taking the lock, finishes
  what a killed run left (`recover`). When the outermost hold ends in a refusal, process
  0 removes what was added meanwhile (`_discard_added`).
  """
  existed = os.path.lexists(resolve(path))
  path = prepare(path)
  if path in _held:
    _held[path] += 1
    try:
      yield path
    finally:
      _held[path] -= 1
    return
  p = jax.process_index()
  name = LOCK_FILE if p == 0 else LOCK_FILE.replace(".lock", f"-{p}.lock")
  try:
    fd = os.open(os.path.join(path, name), os.O_RDWR | os.O_CREAT, 0o666)
  except OSError as e:
    raise WorkdirError(f"workdir {path} is not writable: {e.strerror or e}") from e
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
    os.close(fd)
    raise WorkdirError(
      f"another privjax run (pid {holder}) is using workdir {path}; wait for it or use "
      "another --workdir"
    ) from None
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
  except OSError as e:
    os.close(fd)
    if error := _write_error(e, os.path.join(path, name)):
      raise error from e
    raise
  _held[path] = 1
  before = _entries(path) if existed else set()
  try:
    if p == 0:
      recover(path)
    yield path
  except BaseException as e:
    if p == 0:
      _discard_added(path, before, created=not existed, refused=_refusal(e))
    raise
  finally:
    del _held[path]
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _refusal(e: BaseException) -> bool:
  """Whether `e` refuses the input (a diverged training keeps its last good checkpoint)."""
  return isinstance(e, PrivjaxError) and not isinstance(e, TrainingError)


def _entries(path: str) -> set:
  """Every file, link and folder under `path`, relative to it."""
  found = set()
  for root, dirs, files in os.walk(path):
    rel = os.path.relpath(root, path)
    found.update(os.path.normpath(os.path.join(rel, name)) for name in dirs + files)
  return found


def _discard_added(path: str, before: set, *, created: bool, refused: bool) -> None:
  """After a failed run: what it added to the workdir removed when it was refused (the
  workdir too, if it created it); else only a workdir it created that holds nothing of
  the run's (its marker and lock)."""
  added = _entries(path) - before
  if created and (refused or added <= {MARKER_FILE, LOCK_FILE}):
    shutil.rmtree(path, ignore_errors=True)
    return
  if not refused:
    return
  for rel in sorted(added):
    if os.path.dirname(rel) in added or rel == LOCK_FILE:
      continue  # inside a folder removed whole / the lock, held until the caller returns
    target = os.path.join(path, rel)
    if os.path.isdir(target) and not os.path.islink(target):
      shutil.rmtree(target, ignore_errors=True)
    else:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(target)
  if added:
    logging.info("the refused run's files were removed from %s", path)


def recover(path: str) -> None:
  """Finishes a killed run's committed `publish` in `path`, then removes stale temporaries.

  Called by process 0 with the lock held, so no other run is writing them.
  """
  record = os.path.join(path, PUBLISH_FILE)
  try:
    with open(record) as f:
      files = json.load(f)["files"]
  except FileNotFoundError:
    files = None
  except (OSError, ValueError, KeyError, TypeError):
    files = []  # cannot happen (the record is written atomically); drop it
  if files is not None:
    _finish_publish(path, files)
    logging.warning("workdir: finished publishing the files a killed run had committed in %s", path)
  stale = []
  for root, _, names in os.walk(path):
    stale += [os.path.join(root, n) for n in names if n.endswith(TMP_SUFFIX)]
  for name in stale:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(name)
  if stale:
    logging.info("workdir: removed %d temporary files a killed run left", len(stale))


def array_hash(*arrays) -> str:
  """sha256 of arrays' dtypes, shapes and bytes (a pytree's leaves, in order)."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(arrays):
    a = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def atomic_write(path: str, data: bytes) -> None:
  """Writes `data` to a temporary file beside `path`, then renames it over `path`.

  A crash leaves the previous complete file or the new one, never part of one. The
  file gets the mode `open` would give it (0o666 less the umask).

  Raises:
    WorkdirError: the OS refused the write (`WRITE_ERRNOS`): the disk is full ("no space
      left on device writing <path>"), a quota or file-size limit, a read-only file
      system, permissions, an I/O error.
  """
  path = os.path.abspath(path)
  tmp = _write_temp(path, data)
  try:
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    if isinstance(e, OSError) and (error := _write_error(e, path)):
      raise error from e
    raise


def publish(directory: str, files: dict[str, bytes]) -> None:
  """Writes `files` ({name: bytes}) into `directory` as one set; the last name is the index.

  Every file is first written in full to a temporary name; then a record of the set
  (`.privjax-publish.json`) is written atomically: the commit point. The last file (the
  one readers look for first, e.g. report.json) is removed, the others are renamed
  into place, the last one last, and the record is removed. So the last file, when it
  exists, always sits beside the rest of its own set: a kill before the commit leaves
  the previous set untouched (its temporaries are removed when the workdir is next
  locked), a kill after it leaves the last file missing until the next lock, which
  completes the set (`recover`). Raises WorkdirError as `atomic_write` does; before
  the commit, having changed nothing.
  """
  directory = os.path.abspath(directory)
  temps = []
  try:
    for name, data in files.items():
      temps.append((name, os.path.basename(_write_temp(os.path.join(directory, name), data))))
    atomic_write(os.path.join(directory, PUBLISH_FILE), json.dumps({"files": temps}).encode())
  except BaseException:
    for _, tmp in temps:
      with contextlib.suppress(OSError):
        os.unlink(os.path.join(directory, tmp))
    raise
  try:
    _fsync_directory(directory)  # the record is durable before anything is renamed
    _finish_publish(directory, temps)
  except OSError as e:  # committed: the next lock completes the set
    if error := _write_error(e, directory):
      raise error from e
    raise


def _finish_publish(directory: str, files: list) -> None:
  """Renames a committed set's temporaries into place (idempotent: a rerun after a kill
  continues where it stopped) and removes the record."""
  last, last_tmp = files[-1] if files else (None, None)
  if last is not None and os.path.exists(os.path.join(directory, last_tmp)):
    with contextlib.suppress(FileNotFoundError):
      os.unlink(os.path.join(directory, last))
  for name, tmp in files:
    with contextlib.suppress(FileNotFoundError):
      os.replace(os.path.join(directory, tmp), os.path.join(directory, name))
  _fsync_directory(directory)
  with contextlib.suppress(FileNotFoundError):
    os.unlink(os.path.join(directory, PUBLISH_FILE))


def _write_temp(path: str, data: bytes) -> str:
  """Writes `data` durably to a new temporary file beside `path`; returns its name."""
  directory, base = os.path.split(path)
  tmp = None
  try:
    os.makedirs(directory, exist_ok=True)
    while tmp is None:
      name = os.path.join(directory, f".{base}.{secrets.token_hex(4)}{TMP_SUFFIX}")
      try:  # not mkstemp: its files are 0600 whatever the umask
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
      except FileExistsError:
        continue
      tmp = name
    try:
      view = memoryview(data)
      while view:
        view = view[os.write(fd, view) :]
      os.fsync(fd)
    finally:
      os.close(fd)
    return tmp
  except BaseException as e:
    if tmp is not None:
      with contextlib.suppress(OSError):
        os.unlink(tmp)
    if isinstance(e, OSError) and (error := _write_error(e, path)):
      raise error from e
    raise


# The OS's reasons a write fails that lie outside privjax: each is one line naming the file.
WRITE_ERRNOS = (
  errno.ENOSPC,  # the disk is full
  errno.EDQUOT,  # the user's quota is full
  errno.EFBIG,  # a file-size limit (`ulimit -f`) or the file system's largest file
  errno.EROFS,  # a read-only file system
  errno.EACCES,  # permissions
  errno.EPERM,
  errno.EIO,  # the device failed
)


def write_error(code: int | None, path: str, strerror: str | None = None) -> WorkdirError | None:
  """The one-line error for a write of `path` that failed with errno `code` for a reason
  outside privjax (`WRITE_ERRNOS`), else None."""
  if code not in WRITE_ERRNOS:
    return None
  if code == errno.ENOSPC:
    return WorkdirError(f"no space left on device writing {path}")
  if code == errno.EDQUOT:
    return WorkdirError(f"disk quota exceeded writing {path}")
  if code == errno.EFBIG:
    return WorkdirError(
      f"file too large writing {path}: a file-size limit (see `ulimit -f`) or the file "
      "system's largest file; raise the limit or name a --workdir on another file system"
    )
  return WorkdirError(f"cannot write {path}: {strerror or os.strerror(code)}")


# What else stops privjax's own writes (atomic_write, publish): something in the way of the
# file or its folders (a file where a folder goes, a folder where the file goes), a name
# too long.
_IN_THE_WAY = (errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG)


def _write_error(e: OSError, path: str) -> WorkdirError | None:
  if e.errno in _IN_THE_WAY:
    return WorkdirError(f"cannot write {path}: {e.strerror or os.strerror(e.errno)}")
  return write_error(e.errno, path, e.strerror)


def _fsync_directory(directory: str) -> None:
  """Makes renames in `directory` durable (best effort: not every file system allows it)."""
  with contextlib.suppress(OSError):
    fd = os.open(directory, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += _differences(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append(f"{prefix}{key}: {a!r} -> {b!r}")
  return out


def events_dir_of(directory: str) -> str | None:
  """<workdir>/tensorboard/<stage> of a stage in <workdir>/checkpoints/<stage>, else None."""
  parent = os.path.dirname(os.path.normpath(directory))
  if os.path.basename(parent) != "checkpoints":
    return None
  return os.path.join(os.path.dirname(parent), "tensorboard", os.path.basename(directory))


# What privjax writes in a stage's folder (orbax steps, set-aside damaged steps, orbax's
# in-progress folders, the fingerprint) and in its tensorboard folder (event files).
_STAGE_NAMES = re.compile(r"^(\d+|\d+\.damaged|\d+\.orbax-checkpoint-tmp.*|fingerprint\.json)$")
_EVENT_NAMES = re.compile(r"^events\.out\.tfevents\..*$")


def _foreign(directory: str, events: str | None) -> str:
  """The path of a file in a stage's folders that privjax did not write, or ""."""
  for folder, names in ((directory, _STAGE_NAMES), (events, _EVENT_NAMES)):
    if folder and os.path.isdir(folder):
      for name in sorted(os.listdir(folder)):
        if not names.match(name):
          return os.path.join(folder, name)
  return ""


def claim_stage(directory: str, fingerprint: dict, *, overwrite: bool, what: str) -> None:
  """Makes `directory` hold results of `fingerprint`: reuse, error, or discard if overwrite.

  A directory without a fingerprint but with other content (an older run) counts as
  different. Raises WorkdirError naming the first differences. Every process checks
  (and fails alike); only process 0 changes the directory, between barriers.
  """
  fingerprint = json.loads(json.dumps(fingerprint))  # normalise (tuples -> lists)
  path = os.path.join(directory, FINGERPRINT_FILE)
  for folder in (directory, events_dir_of(directory)):  # before anything is deleted
    if folder and os.path.islink(folder):
      raise WorkdirError(
        f"the workdir's {what} folder {folder} is a symbolic link: expected a folder privjax "
        "makes (it never deletes through a link); remove the link"
      )
    if folder and os.path.lexists(folder) and not os.path.isdir(folder):
      raise WorkdirError(
        f"the workdir's {what} folder {folder} is a file: expected a folder privjax makes; "
        "move the file away"
      )
  if os.path.isdir(directory) and os.listdir(directory):
    try:
      with open(path) as f:
        stored = json.load(f)
    except (OSError, ValueError):
      stored = {}
    if stored == fingerprint:
      return
    if not overwrite:
      diffs = _differences(stored, fingerprint) or ["no fingerprint recorded"]
      raise WorkdirError(
        f"the workdir's {what} was made with different inputs ({'; '.join(diffs[:3])}); use "
        "another --workdir, or --config.overwrite=True to discard it"
      )
  foreign = _foreign(directory, events_dir_of(directory))
  if foreign:
    raise WorkdirError(
      f"the workdir's {what} folder holds {foreign}, which privjax did not write: "
      "--config.overwrite=True discards only what privjax wrote; move it away"
    )
  parallel.barrier(f"claim {directory}: checked")
  if parallel.is_writer():
    if os.path.isdir(directory):
      shutil.rmtree(directory)
    # The stage's training curves (privjax.runtime.events) go with it.
    stale = events_dir_of(directory)
    if stale and os.path.isdir(stale):
      shutil.rmtree(stale)
    os.makedirs(directory)
    atomic_write(path, json.dumps(fingerprint, indent=1, sort_keys=True).encode())
  parallel.barrier(f"claim {directory}: written")
