"""The workdir never harms a user's files; files are published whole; faults are one line.

Unit tests of privjax.workdir (the marker, `~`, the umask, a full disk, the report
published as one set, stale temporaries), of checkpoint.restore_latest on a damaged
checkpoint, and CLI cases in the manner of tests/test_faults.py: exit code, a single
`privjax: error:` last line, no traceback, and a finished workdir left byte- and
mtime-identical. Then Ctrl-C: exit code 130 and one line.
"""

import dataclasses
import errno
import functools
import json
import os
import shutil
import signal
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privjax import checkpoint
from privjax import report as report_lib
from privjax import workdir as workdir_lib
from privjax.errors import WorkdirError
from tests.conftest import REPO_ROOT, launch, launch_until

MARKER = workdir_lib.MARKER_FILE


def _snapshot(directory):
  """{relative path: (mtime_ns, bytes)} of every file but the lock file."""
  out = {}
  for root, _, files in os.walk(directory):
    for f in files:
      if f != workdir_lib.LOCK_FILE:
        path = os.path.join(root, f)
        with open(path, "rb") as fh:
          out[os.path.relpath(path, directory)] = (os.stat(path).st_mtime_ns, fh.read())
  return out


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
  before = _snapshot(tmp_path)
  monkeypatch.chdir(tmp_path)
  with pytest.raises(WorkdirError, match="--workdir is empty"):
    with workdir_lib.locked(empty):
      pass
  assert _snapshot(tmp_path) == before
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
  before = _snapshot(tmp_path)
  with pytest.raises(WorkdirError, match=f"workdir {tmp_path} is not empty and is not a privjax"):
    with workdir_lib.locked(str(tmp_path)):
      pass
  assert _snapshot(tmp_path) == before
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


# --- Files: umask, full disk, the report as one set, stale temporaries -----------------


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


@pytest.fixture(scope="module")
def audit_report(digits8):
  """A real (small) audit's report, to publish with one number changed."""
  import ml_collections

  import privjax

  x, _ = digits8
  cfg = ml_collections.ConfigDict({"attacks": {"nearest": {}}, "bootstrap_samples": 100})
  return privjax.assess(
    lambda p, im: im.reshape(im.shape[0], -1), None, x[:300], x[300:330], config=cfg
  )


def _tiny_report(base, value: float) -> report_lib.Report:
  ssim = base.per_image["ssim"].copy()
  ssim[-1] = value
  return dataclasses.replace(
    base, summary=dict(base.summary, value=value), per_image=dict(base.per_image, ssim=ssim)
  )


SET = [
  report_lib.PER_IMAGE_CSV,
  report_lib.GRID_PNG,
  report_lib.REPORT_HTML,
  report_lib.REPORT_JSON,
]


def _report_set(workdir):
  return {n: (workdir / n).read_bytes() for n in SET if (workdir / n).exists()}


@pytest.fixture
def old_and_new(tmp_path, audit_report):
  """A workdir holding an old report set; the bytes of the old and of the new set, and a
  function making the new report."""
  wd = tmp_path / "w"
  workdir_lib.prepare(str(wd))
  other = tmp_path / "other"
  new_report = functools.partial(_tiny_report, audit_report, 0.9)
  report_lib.write(new_report(), str(other), per_row=2)
  new = _report_set(other)
  report_lib.write(_tiny_report(audit_report, 0.1), str(wd), per_row=2)
  old = _report_set(wd)
  assert all(old[n] != new[n] for n in SET) and len(old) == len(SET)
  return wd, old, new, new_report


def test_report_files_are_published_whole_with_nothing_left_over(old_and_new):
  wd, _, new, new_report = old_and_new
  report_lib.write(new_report(), str(wd), per_row=2)
  assert _report_set(wd) == new
  assert sorted(os.listdir(wd)) == sorted([MARKER, *SET])


def test_full_disk_while_publishing_keeps_the_old_set(old_and_new, monkeypatch):
  wd, old, _, new_report = old_and_new
  real_write, calls = os.write, []

  def fill_up(fd, data):
    calls.append(fd)
    if len(calls) > 1:  # the CSV is written, the picture is not
      _no_space()
    return real_write(fd, data)

  monkeypatch.setattr(os, "write", fill_up)
  with pytest.raises(WorkdirError, match=f"no space left on device writing {wd}/reconstructions"):
    report_lib.write(new_report(), str(wd), per_row=2)
  monkeypatch.undo()
  assert _report_set(wd) == old
  assert sorted(os.listdir(wd)) == sorted([MARKER, *SET])


def test_a_kill_while_switching_never_leaves_a_new_csv_beside_an_old_report(
  old_and_new, monkeypatch
):
  wd, _, new, new_report = old_and_new
  real_replace = os.replace

  def killed_after_the_csv(src, dst):
    if str(dst).endswith(report_lib.GRID_PNG):
      raise KeyboardInterrupt  # stands for SIGKILL: no cleanup runs
    return real_replace(src, dst)

  monkeypatch.setattr(os, "replace", killed_after_the_csv)
  with pytest.raises(KeyboardInterrupt):
    report_lib.write(new_report(), str(wd), per_row=2)
  monkeypatch.undo()
  half = _report_set(wd)
  assert report_lib.REPORT_JSON not in half  # the old report.json is gone, not mixed
  assert half[report_lib.PER_IMAGE_CSV] == new[report_lib.PER_IMAGE_CSV]
  # The next run on the workdir completes the set the killed run had committed.
  with workdir_lib.locked(str(wd)):
    pass
  assert _report_set(wd) == new
  assert not [n for n in os.listdir(wd) if n.endswith(workdir_lib.TMP_SUFFIX)]
  assert not (wd / workdir_lib.PUBLISH_FILE).exists()


def test_stale_temporaries_are_removed_when_the_workdir_is_locked(old_and_new):
  wd, old, _, _ = old_and_new
  # What a run killed while writing leaves: temporaries with no commit record.
  stale = [
    wd / f".per_image.csv.0123abcd{workdir_lib.TMP_SUFFIX}",
    wd / f".report.json.89abcdef{workdir_lib.TMP_SUFFIX}",
    wd / "cache" / f".aux.npz.deadbeef{workdir_lib.TMP_SUFFIX}",
  ]
  for path in stale:
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"half")
  (wd / "cache" / "aux.npz").write_bytes(b"complete")
  with workdir_lib.locked(str(wd)):
    assert not any(path.exists() for path in stale)
  assert _report_set(wd) == old
  assert (wd / "cache" / "aux.npz").read_bytes() == b"complete"


# --- Checkpoints: a damaged latest step falls back to the previous good one ------------


def _weights(step):  # [64, 16]: distinct values, so a changed byte changes a number
  return jnp.arange(1024, dtype=jnp.float32).reshape(64, 16) + step


def _two_steps(directory):
  mngr = checkpoint.manager(str(directory))
  for step in (10, 20):
    checkpoint.save(mngr, step, {"w": _weights(step)}, {"step": step})
  mngr.wait_until_finished()
  mngr.close()


ABSTRACT = {"w": jax.ShapeDtypeStruct((64, 16), jnp.float32)}


def _truncate(path):
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])


def _flip_a_data_byte(step):  # same size, one bit: orbax itself restores it as a changed number
  path = max((step / "state").glob("ocdbt.process_0/d/*"), key=lambda p: p.stat().st_size)
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0x01
  path.write_bytes(bytes(data))


def _edit_meta(step):  # same size: the record says another step
  path = step / "meta" / "metadata"
  path.write_text(path.read_text().replace('"step": 20', '"step": 29'))


def _drop_checksum(step):  # as a privjax from before checksummed checkpoints wrote it
  path = step / "meta" / "metadata"
  meta = json.loads(path.read_text())
  del meta["contents_sha256"]
  path.write_text(json.dumps(meta))


DAMAGE = {
  "no-checksum": _drop_checksum,
  "data-truncated": lambda step: [_truncate(p) for p in (step / "state" / "d").iterdir()],
  "data-byte-flipped": _flip_a_data_byte,
  "meta-edited": _edit_meta,
  "manifest-deleted": lambda step: (step / "state" / "manifest.ocdbt").unlink(),
  "meta-garbled": lambda step: (step / "meta" / "metadata").write_text('{"step": 2'),
  "metadata-deleted": lambda step: (step / "state" / "_METADATA").unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_latest_checkpoint_falls_back_to_the_previous_step(tmp_path, damage, caplog):
  _two_steps(tmp_path)
  DAMAGE[damage](tmp_path / "20")
  mngr = checkpoint.manager(str(tmp_path))
  try:
    with caplog.at_level("WARNING"):
      step, state, meta = checkpoint.restore_latest(mngr, ABSTRACT)
    assert step == 10 and meta == {"step": 10}
    np.testing.assert_array_equal(state["w"], _weights(10))
    assert "checkpoint step 20" in caplog.text and "cannot be restored" in caplog.text
    if damage in ("data-byte-flipped", "meta-edited"):  # caught by privjax's checksum
      assert "do not match the checksum" in caplog.text
    if damage == "no-checksum":
      assert "saved without a checksum" in caplog.text
    # The damaged step is set aside, so training can save step 20 again.
    assert (tmp_path / "20.damaged").is_dir() and not (tmp_path / "20").exists()
    checkpoint.save(mngr, 20, {"w": _weights(21)}, {"step": 21})
    mngr.wait_until_finished()
  finally:
    mngr.close()
  mngr = checkpoint.manager(str(tmp_path))
  try:
    step, state, meta = checkpoint.restore_latest(mngr, ABSTRACT)
  finally:
    mngr.close()
  assert step == 20 and meta == {"step": 21}


def test_no_restorable_checkpoint_is_one_line_naming_the_step(tmp_path):
  _two_steps(tmp_path)
  for step in ("10", "20"):
    DAMAGE["manifest-deleted"](tmp_path / step)
  mngr = checkpoint.manager(str(tmp_path))
  try:
    with pytest.raises(WorkdirError) as e:
      checkpoint.restore_latest(mngr, ABSTRACT)
  finally:
    mngr.close()
  message = str(e.value)
  assert f"the checkpoint in {tmp_path / '20'} is damaged" in message and "\n" not in message
  assert f"delete {tmp_path} to redo this stage" in message
  assert sorted(os.listdir(tmp_path)) == ["10", "20"]  # nothing moved when nothing restores


def test_no_checkpoint_is_none(tmp_path):
  mngr = checkpoint.manager(str(tmp_path / "c"))
  try:
    assert checkpoint.restore_latest(mngr, ABSTRACT) is None
  finally:
    mngr.close()


# --- CLI: one line, exit code, the finished workdir unchanged --------------------------

# Raises ENOSPC for every write to a file under the workdir (sitecustomize runs first).
_FULL_DISK = textwrap.dedent("""
  import errno, os
  _write = os.write
  def _full(fd, data):
    if os.path.realpath(f"/proc/self/fd/{fd}").startswith(os.environ["PRIVJAX_FULL_DISK"]):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _write(fd, data)
  os.write = _full
""")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, smoke_audit):
  tmp = tmp_path_factory.mktemp("workdir_faults")
  shutil.copytree(smoke_audit[0], tmp / "done")  # a finished smoke audit's workdir
  (tmp / "mine").mkdir()
  (tmp / "mine" / "report.json").write_text("the user's own report")
  (tmp / "fullpkg").mkdir()
  (tmp / "fullpkg" / "sitecustomize.py").write_text(_FULL_DISK)
  return tmp


# (id, --workdir ({t}: the test's temp dir), HOME={t}?, disk full?, the one-line error)
WORKDIR_FAULTS = [
  ("empty", "", False, False, "--workdir is empty"),
  ("not-a-workdir", "{t}/mine", False, False, "workdir {t}/mine is not empty and is not a"),
  ("tilde", "~/mine", True, False, "workdir {t}/mine is not empty and is not a privjax"),
  ("full-disk", "{t}/done", False, True, "no space left on device writing {t}/done/"),
]


@pytest.mark.parametrize(
  "name,workdir,home,full_disk,expected", WORKDIR_FAULTS, ids=[r[0] for r in WORKDIR_FAULTS]
)
def test_workdir_faults_exit_2_with_one_line_and_change_nothing(
  finished, monkeypatch, launch_here, name, workdir, home, full_disk, expected
):
  tmp = finished
  fill = lambda s: s.replace("{t}", str(tmp))  # noqa: E731
  if home:
    monkeypatch.setenv("HOME", str(tmp))
  if full_disk:
    monkeypatch.setenv("PRIVJAX_FULL_DISK", str(tmp / "done"))
  before, mine = _snapshot(tmp / "done"), _snapshot(tmp / "mine")
  repo_before = set(os.listdir(REPO_ROOT))
  if full_disk:  # a fresh process: sitecustomize fills the disk before anything runs
    result = launch("configs/smoke.py", fill(workdir), pythonpath=tmp / "fullpkg", timeout=180)
  else:
    result = launch_here("configs/smoke.py", fill(workdir))
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-3000:]
  assert lines[-1].startswith("privjax: error: "), lines[-1]
  assert fill(expected) in lines[-1], lines[-1]
  assert sum(line.startswith("privjax: ") for line in lines) == 1
  assert "Traceback" not in result.stderr
  assert _snapshot(tmp / "done") == before
  assert _snapshot(tmp / "mine") == mine
  assert set(os.listdir(REPO_ROOT)) == repo_before  # --workdir= never wrote into the cwd


# --- Ctrl-C ---------------------------------------------------------------------------

LONG = [
  "--config.train.num_steps=300",
  "--config.train.eval_every=20",
  "--config.train.checkpoint_every=40",
  "--config.train.patience=100",
]


def test_ctrl_c_before_training_is_one_line_and_exit_130(tmp_path):
  code, stderr = launch_until(
    "configs/smoke.py", tmp_path, "local devices", *LONG, sig=signal.SIGINT
  )
  lines = stderr.strip().splitlines()
  assert code == 130, stderr[-3000:]
  assert lines[-1].startswith("privjax: interrupted by Ctrl-C (SIGINT)"), lines[-1]
  assert "re-run the same command" in lines[-1]
  assert "Traceback" not in stderr


def test_ctrl_c_in_training_saves_a_checkpoint_like_sigterm_and_exits_130(tmp_path, launch_here):
  code, stderr = launch_until(
    "configs/smoke.py", tmp_path, "decoder step 60/", *LONG, sig=signal.SIGINT
  )
  assert code == 130, stderr[-3000:]
  assert "Traceback" not in stderr
  last = stderr.strip().splitlines()[-1]
  assert "stopped by SIGINT at decoder step" in last and "re-run the same command" in last
  step = int(last.split("decoder step ")[1].split(";")[0])
  assert str(step) in os.listdir(tmp_path / "checkpoints" / "decoder")
  result = launch_here("configs/smoke.py", tmp_path, *LONG)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"resumed from checkpoint at step {step}" in result.stderr
  assert json.loads((tmp_path / "report.json").read_text())["risk_level"]
