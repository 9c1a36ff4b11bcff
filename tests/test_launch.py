"""End to end through launch.py on the smoke config: files, resume, exit codes."""

import json
import os

import pytest

from privjax import workdir as workdir_lib
from tests.conftest import launch


def _launch(workdir, *overrides):
  return launch("configs/smoke.py", workdir, *overrides)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("smoke")
  first = _launch(workdir)
  assert first.returncode == 0, first.stderr[-3000:]
  return workdir, first


def test_smoke_audit_writes_report_csv_png_and_checkpoints(smoke_run):
  workdir, first = smoke_run
  for name in ("report.json", "per_image.csv", "reconstructions.png"):
    assert (workdir / name).stat().st_size > 0
  report = json.loads(  # strict JSON: no NaN or Infinity tokens
    (workdir / "report.json").read_text(), parse_constant=lambda t: pytest.fail(f"not JSON: {t}")
  )
  assert report["risk_level"] in ("low", "medium", "high")
  assert report["devices"]["count"] == 4
  assert report["metadata"]["model"]["test_accuracy"] > 0.5
  assert set(report["attacks"]) == {"decoder", "ridge", "nearest", "whitebox"}
  assert report["deciding_attack"] in report["attacks"]
  assert f"decided by {report['deciding_attack']}" in first.stdout
  assert set(report["seconds"]) >= {"extraction", "attacks", "attack_scoring", "total"}
  with open(workdir / "per_image.csv") as f:
    assert len(f.readlines()) == report["num_targets"] + 1
  assert (workdir / "reconstructions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  steps = os.listdir(workdir / "checkpoints" / "decoder")
  assert "40" in steps, steps
  assert os.listdir(workdir / "checkpoints" / "recognition")
  assert "privjax: " in first.stdout and "risk" in first.stdout


def test_second_run_resumes_instead_of_retraining(smoke_run):
  workdir, _ = smoke_run
  before = json.loads((workdir / "report.json").read_text())
  second = _launch(workdir)
  assert second.returncode == 0, second.stderr[-3000:]
  for name in ("decoder", "ridge", "nearest", "whitebox"):
    assert f"attack {name}: reconstructions restored from" in second.stderr
  assert "recognition model restored" in second.stderr
  assert "decoder step" not in second.stderr  # no training step ran
  after = json.loads((workdir / "report.json").read_text())
  assert after["metadata"]["model"]["restored"] is True
  assert after["ssim_per_image"] == before["ssim_per_image"]


def test_workdir_is_marked_and_holds_no_temporaries(smoke_run):
  workdir, first = smoke_run
  assert (workdir / workdir_lib.MARKER_FILE).is_file()
  assert not (workdir / workdir_lib.PUBLISH_FILE).exists()
  left = [
    os.path.join(root, f)
    for root, _, files in os.walk(workdir)
    for f in files
    if f.endswith(workdir_lib.TMP_SUFFIX)
  ]
  assert left == []
  umask = os.umask(0)
  os.umask(umask)
  for name in ("report.json", "per_image.csv", "reconstructions.png"):
    assert (workdir / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
  assert f"report: {workdir}/report.json" in first.stdout


def _raised_while_handling(first, then):
  try:
    try:
      raise first
    except BaseException:  # noqa: B036
      raise then  # noqa: B904 (implicit chaining: then.__context__ is first)
  except BaseException as e:  # noqa: B036
    return e


def test_a_stop_signal_is_found_whatever_exception_it_became():
  import signal

  from privjax import cli as launch_py
  from privjax.errors import Interrupted, ModelError

  # What CI saw: SIGTERM raised inside jax.jit's signature inspection, and JAX's
  # traceback filter raising a TypeError while handling it.
  e = _raised_while_handling(Interrupted("stopped by SIGTERM; resume"), TypeError("lineno None"))
  assert launch_py._stop_reason(e) == ("stopped by SIGTERM; resume", signal.SIGTERM)
  e = _raised_while_handling(KeyboardInterrupt(), ModelError("embed_fn failed"))
  message, signum = launch_py._stop_reason(e)
  assert signum == signal.SIGINT and message.startswith("interrupted by Ctrl-C")
  assert launch_py._stop_reason(_raised_while_handling(ValueError(), TypeError())) is None
