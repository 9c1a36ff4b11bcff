"""The workdir end to end: a real audit's report set is published whole, and the command
line's workdir faults are one line, exit code 2, and leave a finished workdir byte- and
mtime-identical (in the manner of tests/e2e/test_faults.py). Then Ctrl-C: exit code 130
and one line. (privjax.runtime.workdir's units: tests/unit/test_workdir.py.)"""

import dataclasses
import errno
import functools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import textwrap

import pytest

from privjax.errors import WorkdirError
from privjax.report import files as report_lib
from privjax.runtime import workdir as workdir_lib
from tests.conftest import REPO_ROOT, only_attackers, snapshot
from tests.e2e.conftest import launch, launch_until

MARKER = workdir_lib.MARKER_FILE


# --- The report published as one set, stale temporaries ----------------------------------


@pytest.fixture(scope="module")
def audit_report(digits8):
  """A real (small) audit's report, to publish with one number changed."""
  import ml_collections

  import privjax

  x, _ = digits8
  cfg = ml_collections.ConfigDict({"attacks": only_attackers(nearest={}), "bootstrap_samples": 100})
  return privjax.assess(
    lambda p, im: im.reshape(im.shape[0], -1), None, x[:300], x[300:330], config=cfg
  )


def _info(line: str) -> bool:
  """A log line at info level: `HH:MM:SS source: message` (no `warning:` or `error:`)."""
  return re.match(r"\d\d:\d\d:\d\d \S+: (?!warning: |error: )", line) is not None


def _no_space(*_):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


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
  before, mine = snapshot(tmp / "done"), snapshot(tmp / "mine")
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
  assert snapshot(tmp / "done") == before
  assert snapshot(tmp / "mine") == mine
  assert set(os.listdir(REPO_ROOT)) == repo_before  # --workdir= never wrote into the cwd


# Every reason the OS gives for refusing a write: (errno name, the one line's start).
WRITE_FAULTS = [
  ("ENOSPC", "no space left on device writing {t}/done/"),
  ("EDQUOT", "disk quota exceeded writing {t}/done/"),
  ("EFBIG", "file too large writing {t}/done/"),
  ("EROFS", "cannot write {t}/done/"),
  ("EACCES", "cannot write {t}/done/"),
  ("EIO", "cannot write {t}/done/"),
]


@pytest.mark.parametrize("name,expected", WRITE_FAULTS, ids=[f[0] for f in WRITE_FAULTS])
def test_every_refused_write_is_one_line_naming_the_file_and_changes_nothing(
  finished, monkeypatch, launch_here, name, expected
):
  tmp, code = finished, getattr(errno, name)
  real_write = os.write

  def refused(fd, data):  # every write into the workdir, as the OS would refuse it
    if os.path.realpath(f"/proc/self/fd/{fd}").startswith(str(tmp / "done")):
      raise OSError(code, os.strerror(code))
    return real_write(fd, data)

  before = snapshot(tmp / "done")
  monkeypatch.setattr(os, "write", refused)
  result = launch_here("configs/smoke.py", tmp / "done", "--fail_on=medium")
  monkeypatch.undo()
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-3000:]
  assert lines[-1].startswith("privjax: error: " + expected.replace("{t}", str(tmp))), lines[-1]
  assert sum(line.startswith("privjax: ") for line in lines) == 1
  assert "Traceback" not in result.stderr and "release gate" not in result.stdout
  assert snapshot(tmp / "done") == before  # nothing written is lost or half-overwritten


def _under_a_file_size_limit(workdir, kilobytes: int):
  """launch.py in a fresh process under `ulimit -f` (Python ignores SIGXFSZ: writes past
  the limit fail with EFBIG)."""
  import sys

  command = shlex.join(
    [sys.executable, "launch.py", "--config=configs/smoke.py", f"--workdir={workdir}"]
  )
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  return subprocess.run(
    ["bash", "-c", f"ulimit -f {kilobytes} && exec {command}"],  # (bash: 1024-byte blocks)
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_a_file_size_limit_is_one_line_naming_the_file_and_changes_nothing(finished, tmp_path):
  done = tmp_path / "done"
  shutil.copytree(finished / "done", done)
  before = snapshot(done)
  result = _under_a_file_size_limit(done, 100)  # the report's page (160 kB) is over it
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-3000:]
  assert lines[-1].startswith(
    f"privjax: error: file too large writing {done}/report.html: a file-size limit (see "
    "`ulimit -f`)"
  ), lines[-1]
  assert "Traceback" not in result.stderr
  assert snapshot(done) == before


def test_a_file_size_limit_in_a_checkpoint_is_one_line_naming_the_file(tmp_path):
  # The recognition model's checkpoint (a 200 kB file) is over it: TensorStore's error.
  result = _under_a_file_size_limit(tmp_path / "new", 100)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-3000:]
  assert lines[-1].startswith(
    f"privjax: error: file too large writing {tmp_path}/new/checkpoints/recognition/"
  ), lines[-1]
  assert "Traceback" not in result.stderr
  assert [line for line in lines if not _info(line)] == [lines[-1]], result.stderr


@pytest.fixture
def read_only(tmp_path):
  """A read-only bind mount at tmp_path/ro of tmp_path/src. Needs root; skipped elsewhere."""
  src, ro = tmp_path / "src", tmp_path / "ro"
  src.mkdir()
  ro.mkdir()
  if os.geteuid() != 0 or shutil.which("mount") is None:
    pytest.skip("a read-only bind mount needs root")
  for args in (["--bind", str(src), str(ro)], ["-o", "remount,bind,ro", str(ro)]):
    mounted = subprocess.run(["mount", *args], capture_output=True)
    if mounted.returncode != 0:
      subprocess.run(["umount", "-l", str(ro)], check=False)
      pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
  try:
    yield src, ro
  finally:
    subprocess.run(["umount", "-l", str(ro)], check=False)


def test_a_read_only_finished_workdir_with_the_gate_is_one_line_and_exit_2(
  finished, read_only, launch_here
):
  # No verdict without a run that re-checks every stage under the lock: not 0, not 3.
  src, ro = read_only
  shutil.copytree(finished / "done", src / "done", dirs_exist_ok=True)
  before = snapshot(ro / "done")
  result = launch_here("configs/smoke.py", ro / "done", "--fail_on=medium")
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-3000:]
  assert lines[-1] == (
    f"privjax: error: workdir {ro}/done holds a finished audit but is read-only (Read-only "
    "file system): privjax gives a verdict (and --fail_on's status) only from a run that "
    "re-checks every stage under the workdir's lock, which it cannot write here; open "
    "report.html directly, or copy the workdir and name the copy as --workdir"
  )
  assert result.stdout == ""
  assert snapshot(ro / "done") == before


@pytest.fixture
def small_disk(tmp_path):
  """A 3 MiB filesystem (tmpfs) that fills while the decoder saves its first checkpoint:
  a disk filling under orbax's and TensorStore's background writers, which the sitecustomize
  above (Python's os.write) cannot reach. Needs root; skipped elsewhere."""
  mount = tmp_path / "small"
  mount.mkdir()
  if os.geteuid() != 0 or shutil.which("mount") is None:
    pytest.skip("mounting a small tmpfs needs root")
  mounted = subprocess.run(
    ["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(mount)], capture_output=True
  )
  if mounted.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
  try:
    yield mount
  finally:
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_disk_filling_during_a_checkpoint_is_one_line_without_library_tracebacks(small_disk):
  result = launch("configs/smoke.py", small_disk / "wd", timeout=180, devices=2)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-3000:]
  assert lines[-1].startswith(f"privjax: error: no space left on device writing {small_disk}")
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert "Event loop is closed" not in result.stderr
  assert [line for line in lines if not _info(line)] == [lines[-1]], result.stderr


# --- Ctrl-C ---------------------------------------------------------------------------

LONG = [
  "--config.attacks.decoder.num_steps=300",
  "--config.attacks.decoder.eval_every=20",
  "--config.attacks.decoder.checkpoint_every=40",
  "--config.attacks.decoder.patience=100",
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
