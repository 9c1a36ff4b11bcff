"""privjax.runtime.workdir: the marker, `~`, refusals, the umask, a full disk, atomic writes.

(Publishing a real audit's report set, and the command line's workdir faults, are in
tests/e2e/test_workdir.py.)"""

import errno
import os

import pytest

from privjax.errors import WorkdirError
from privjax.runtime import workdir as workdir_lib
from tests.conftest import snapshot

MARKER = workdir_lib.MARKER_FILE


# --- The workdir: marker, `~`, refusals -------------------------------------------------


def test_new_workdir_gets_the_marker_and_tilde_is_expanded(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  path = workdir_lib.prepare("~/runs/a")
  assert path == str(tmp_path / "runs" / "a")
  assert (tmp_path / "runs" / "a" / MARKER).is_file()
  assert workdir_lib.prepare(path) == path  # a marked workdir is accepted again


@pytest.mark.parametrize("empty", ["", "  "])
def test_empty_workdir_is_refused_and_the_current_directory_is_untouched(
  tmp_path, monkeypatch, empty
):
  (tmp_path / "report.json").write_text("the user's own report")
  before = snapshot(tmp_path)
  monkeypatch.chdir(tmp_path)
  with pytest.raises(WorkdirError, match="--workdir is empty"):
    with workdir_lib.locked(empty):
      pass
  assert snapshot(tmp_path) == before
  assert sorted(os.listdir(tmp_path)) == ["report.json"]


@pytest.mark.parametrize(
  "contents",
  [
    {"report.json": "mine"},
    {"notes.txt": "mine", "checkpoints/model.ckpt": "mine"},  # checkpoints/ alone is not ours
    {".privjax-workdir.bak": "mine"},
  ],
  ids=["report", "checkpoints", "lookalike"],
)
def test_non_empty_directory_without_the_marker_is_refused(tmp_path, contents):
  for name, text in contents.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
  before = snapshot(tmp_path)
  with pytest.raises(WorkdirError, match=f"workdir {tmp_path} is not empty and is not a privjax"):
    with workdir_lib.locked(str(tmp_path)):
      pass
  assert snapshot(tmp_path) == before
  assert not (tmp_path / workdir_lib.LOCK_FILE).exists()


def test_existing_file_is_refused(tmp_path):
  (tmp_path / "f").write_text("keep")
  with pytest.raises(WorkdirError, match="workdir must be a directory"):
    workdir_lib.prepare(str(tmp_path / "f"))
  assert (tmp_path / "f").read_text() == "keep"


@pytest.mark.parametrize(
  "contents",
  [
    ["report.json", "per_image.csv", "checkpoints/decoder/40/x"],
    [".privjax.lock"],
    [".privjax-1.lock", "cache/features.npz"],
    ["checkpoints/recognition/fingerprint.json"],
  ],
  ids=["report+checkpoints", "lock", "process-lock", "fingerprint"],
)
def test_workdirs_made_before_the_marker_are_accepted_and_marked(tmp_path, contents):
  for name in contents:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text("{}")
  with workdir_lib.locked(str(tmp_path)) as path:
    assert path == str(tmp_path)
  assert (tmp_path / MARKER).is_file()


# --- Files: umask, full disk, atomic writes ---------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=oct)
def test_files_get_the_users_umask(tmp_path, umask):
  old = os.umask(umask)
  try:
    workdir_lib.atomic_write(str(tmp_path / "a.json"), b"{}")
    workdir_lib.publish(str(tmp_path), {"b.csv": b"x", "c.json": b"{}"})
    wd = workdir_lib.prepare(str(tmp_path / "w"))
  finally:
    os.umask(old)
  for path in (tmp_path / "a.json", tmp_path / "b.csv", tmp_path / "c.json", f"{wd}/{MARKER}"):
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask, path


def _no_space(*_):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_is_one_line_naming_the_file_and_keeps_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "report.json"
  workdir_lib.atomic_write(str(path), b"old complete report")
  monkeypatch.setattr(os, "write", _no_space)
  with pytest.raises(WorkdirError) as e:
    workdir_lib.atomic_write(str(path), b"new report")
  assert str(e.value) == f"no space left on device writing {path}"
  assert path.read_bytes() == b"old complete report"
  assert os.listdir(tmp_path) == ["report.json"]


# Every reason the OS gives for refusing a write: (errno name, the one line's start).
WRITE_FAULTS = [
  ("ENOSPC", "no space left on device writing {path}"),
  ("EDQUOT", "disk quota exceeded writing {path}"),
  ("EFBIG", "file too large writing {path}: a file-size limit (see `ulimit -f`)"),
  ("EROFS", "cannot write {path}: Read-only file system"),
  ("EACCES", "cannot write {path}: Permission denied"),
  ("EPERM", "cannot write {path}: Operation not permitted"),
  ("EIO", "cannot write {path}: Input/output error"),
]


def _refusing(name):
  def refuse(*_args, **_kwargs):
    code = getattr(errno, name)
    raise OSError(code, os.strerror(code))

  return refuse


@pytest.mark.parametrize("call", ["open", "write", "fsync", "replace"])
@pytest.mark.parametrize("name,expected", WRITE_FAULTS, ids=[f[0] for f in WRITE_FAULTS])
def test_every_refused_write_is_one_line_naming_the_file_and_keeps_the_old_file(
  tmp_path, monkeypatch, name, expected, call
):
  path = tmp_path / "cache" / "features.npz"
  workdir_lib.atomic_write(str(path), b"old complete features")
  before = snapshot(tmp_path)
  monkeypatch.setattr(os, call, _refusing(name))
  with pytest.raises(WorkdirError) as e:
    workdir_lib.atomic_write(str(path), b"new features, " * 1000)
  monkeypatch.undo()
  assert str(e.value).startswith(expected.format(path=path)), str(e.value)
  assert "\n" not in str(e.value)
  assert snapshot(tmp_path) == before  # the old file whole, no temporary left


@pytest.mark.parametrize("name,expected", WRITE_FAULTS, ids=[f[0] for f in WRITE_FAULTS])
def test_a_refused_write_while_publishing_keeps_the_old_set(tmp_path, monkeypatch, name, expected):
  workdir_lib.publish(str(tmp_path), {"per_image.csv": b"old rows", "report.json": b"{old}"})
  before = snapshot(tmp_path)
  real_write, calls = os.write, []

  def second_file_refused(fd, data):
    calls.append(fd)
    if len(calls) > 1:  # the CSV is written, the report is not
      _refusing(name)()
    return real_write(fd, data)

  monkeypatch.setattr(os, "write", second_file_refused)
  with pytest.raises(WorkdirError) as e:
    workdir_lib.publish(str(tmp_path), {"per_image.csv": b"new rows", "report.json": b"{new}"})
  monkeypatch.undo()
  assert str(e.value).startswith(expected.format(path=tmp_path / "report.json")), str(e.value)
  assert snapshot(tmp_path) == before


def test_a_file_in_the_way_of_a_write_is_one_line(tmp_path):
  (tmp_path / "cache").write_text("a file where a folder goes")
  with pytest.raises(WorkdirError, match=f"cannot write {tmp_path}/cache/a.npz: "):
    workdir_lib.atomic_write(str(tmp_path / "cache" / "a.npz"), b"x")
  assert (tmp_path / "cache").read_text() == "a file where a folder goes"


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
  path = tmp_path / "report.json"
  workdir_lib.atomic_write(str(path), b"old complete report")

  def crash(*_):
    raise KeyboardInterrupt

  monkeypatch.setattr(os, "replace", crash)
  with pytest.raises(KeyboardInterrupt):
    workdir_lib.atomic_write(str(path), b"new report, half")
  assert path.read_bytes() == b"old complete report"
  assert os.listdir(tmp_path) == ["report.json"]  # no temporary left behind


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("how", ["file", "link", "events-file"])
def test_a_stage_folder_that_is_a_file_or_a_link_is_refused_before_anything_is_deleted(
  tmp_path, how, overwrite
):
  stage = tmp_path / "checkpoints" / "decoder"
  events = tmp_path / "tensorboard" / "decoder"
  stage.parent.mkdir()
  events.mkdir(parents=True)
  (events / "events.out").write_text("curves")
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  (elsewhere / "keep").write_text("mine")
  if how == "file":
    stage.write_text("not a folder")
  elif how == "link":
    stage.symlink_to(elsewhere, target_is_directory=True)
  else:
    stage.mkdir()
    (stage / "old").write_text("an older run")
    (events / "events.out").unlink()
    events.rmdir()
    events.write_text("not a folder")
  with pytest.raises(WorkdirError, match="is a (file|symbolic link)") as e:
    workdir_lib.claim_stage(str(stage), {"a": 1}, overwrite=overwrite, what="decoder")
  assert "\n" not in str(e.value)
  assert (elsewhere / "keep").read_text() == "mine"
  if how != "events-file":
    assert (events / "events.out").read_text() == "curves"  # nothing deleted first


@pytest.mark.parametrize("where", ["stage", "events"])
def test_overwrite_refuses_a_stage_folder_holding_a_users_file(tmp_path, where):
  stage = tmp_path / "checkpoints" / "decoder"
  events = tmp_path / "tensorboard" / "decoder"
  (stage / "500").mkdir(parents=True)
  (stage / "fingerprint.json").write_text('{"a": 0}')
  events.mkdir(parents=True)
  (events / "events.out.tfevents.1.vm").write_text("curves")
  mine = (stage if where == "stage" else events) / "my_notes.txt"
  mine.write_text("mine")
  with pytest.raises(WorkdirError, match="my_notes.txt, which privjax did not write"):
    workdir_lib.claim_stage(str(stage), {"a": 1}, overwrite=True, what="decoder")
  assert mine.read_text() == "mine" and (stage / "500").is_dir()
  mine.unlink()
  workdir_lib.claim_stage(str(stage), {"a": 1}, overwrite=True, what="decoder")  # privjax's own
  assert sorted(p.name for p in stage.iterdir()) == ["fingerprint.json"] and not events.exists()


def test_a_dangling_symlink_workdir_says_so(tmp_path):
  link = tmp_path / "run"
  link.symlink_to(tmp_path / "gone")
  with pytest.raises(WorkdirError, match=r"is a symbolic link to .*gone.*which does not exist"):
    workdir_lib.prepare(str(link))
  assert not (tmp_path / "gone").exists()


def test_a_finished_read_only_workdir_says_read_only_plainly(tmp_path, monkeypatch):
  wd = tmp_path / "done"
  workdir_lib.prepare(str(wd))
  (wd / "report.json").write_text("{}")

  def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system")

  monkeypatch.setattr(workdir_lib.tempfile, "TemporaryFile", read_only)
  with pytest.raises(WorkdirError, match="holds a finished audit but is read-only"):
    workdir_lib.prepare(str(wd))
  (wd / "report.json").unlink()  # not finished: the plain words
  with pytest.raises(WorkdirError, match="is not writable: Read-only file system"):
    workdir_lib.prepare(str(wd))


# --- A refused run adds nothing ----------------------------------------------------------


def _run_that_writes_then_fails(wd, error):
  with workdir_lib.locked(str(wd)) as path:
    os.makedirs(os.path.join(path, "cache"), exist_ok=True)
    with open(os.path.join(path, "cache", "aux.npz"), "w") as f:
      f.write("features")
    os.makedirs(os.path.join(path, "checkpoints", "decoder", "20"))
    raise error


def test_a_refused_run_removes_what_it_added_and_a_workdir_it_created(tmp_path):
  from privjax.errors import ConfigError

  wd = tmp_path / "new"
  with pytest.raises(ConfigError):
    _run_that_writes_then_fails(wd, ConfigError("attacker 'mine' returned None"))
  assert not wd.exists()


def test_a_refused_run_keeps_what_was_there(tmp_path):
  from privjax.errors import ConfigError

  wd = tmp_path / "old"
  with workdir_lib.locked(str(wd)) as path:
    os.makedirs(os.path.join(path, "cache"))
    with open(os.path.join(path, "cache", "target.npz"), "w") as f:
      f.write("kept")
  before = snapshot(wd)
  with pytest.raises(ConfigError):
    _run_that_writes_then_fails(wd, ConfigError("refused"))
  assert snapshot(wd) == before
  assert not (wd / "checkpoints").exists()  # (folders too)


@pytest.mark.parametrize("kind", ["diverged", "bug"])
def test_a_run_failing_otherwise_keeps_its_work_but_never_an_empty_workdir(tmp_path, kind):
  from privjax.errors import TrainingError

  error = TrainingError("diverged") if kind == "diverged" else RuntimeError("a bug")
  wd = tmp_path / "kept"
  with pytest.raises(type(error)):
    _run_that_writes_then_fails(wd, error)
  assert (wd / "cache" / "aux.npz").read_text() == "features"  # resumable
  empty = tmp_path / "empty"
  with pytest.raises(RuntimeError), workdir_lib.locked(str(empty)):
    raise RuntimeError("failed before writing anything")
  assert not empty.exists()
