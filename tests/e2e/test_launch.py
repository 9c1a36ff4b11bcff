"""End to end through launch.py on the smoke config: files, resume, exit codes."""

import base64
import contextlib
import html.parser
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from privjax import cli
from privjax.runtime import workdir as workdir_lib
from tests.conftest import REPO_ROOT
from tests.e2e.conftest import launch_until


@pytest.fixture(scope="module")
def smoke_run(smoke_audit):
  return smoke_audit  # (workdir, result): the session's smoke audit, run in this process


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
  assert set(report["attacks"]) == {"decoder", "ridge", "nearest", "whitebox", "blend"}
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
  # Each warning of the report once, one line each, after the summary line (a CI log).
  printed = first.stdout.strip().splitlines()
  assert printed[0].startswith("privjax: ") and " risk " in printed[0]
  expected = list(dict.fromkeys(" ".join(w.split()) for w in report["warnings"]))
  assert printed[1:] == [f"privjax: warning: {w}" for w in expected]


def test_second_run_resumes_instead_of_retraining(smoke_run, tmp_path, launch_here):
  workdir = tmp_path / "w"
  shutil.copytree(smoke_run[0], workdir)  # the shared workdir stays as the first run left it
  before = json.loads((workdir / "report.json").read_text())
  second = launch_here("configs/smoke.py", workdir)
  assert second.returncode == 0, second.stderr[-3000:]
  for name in ("decoder", "ridge", "nearest", "whitebox", "blend"):
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


class _Page(html.parser.HTMLParser):
  """Every element with its attributes, and the text of each top-level section."""

  def __init__(self):
    super().__init__()
    self.elements, self.sections, self._depth = [], [], 0

  def handle_starttag(self, tag, attrs):
    self.elements.append((tag, dict(attrs)))
    if tag == "section" and not self._depth:
      self.sections.append("")
    self._depth += tag == "section"

  def handle_endtag(self, tag):
    self._depth -= tag == "section"

  def handle_data(self, data):
    if self.sections and self._depth:
      self.sections[-1] += data


def test_report_html_is_one_self_contained_page_that_leads_with_the_verdict(smoke_run):
  workdir, _ = smoke_run
  report = json.loads((workdir / "report.json").read_text())
  parser = _Page()
  parser.feed((workdir / "report.html").read_text())
  parser.close()
  images = [a["src"] for tag, a in parser.elements if tag == "img"]
  assert len(images) >= 4  # reconstructions, SSIM histogram, evaluator scores, curves
  for src in images:
    assert src.startswith("data:image/png;base64,")
    Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
  for tag, attrs in parser.elements:  # nothing fetched from anywhere: no network at all
    assert tag not in ("script", "link", "iframe", "object", "embed"), tag
    for key in ("src", "href", "action", "srcset"):
      assert not re.match(r"\s*(https?:|//|ftp:)", attrs.get(key) or ""), (tag, attrs)
  first = " ".join(parser.sections[0].split())
  assert f"Privacy risk: {report['risk_level']}" in first
  assert f"Decided by the {report['deciding_attack']} attacker" in first
  for number in (report["ssim"], report["ssim_gain"], *report["ssim_gain_ci"]):
    assert f"{number:.3f}" in first
  assert f"{report['image_reid_rate']:.3f}" in first and f"{report['reid_chance']:.4f}" in first
  text = " ".join(" ".join(parser.sections).split()) + (workdir / "report.html").read_text()
  rows = [a for tag, a in parser.elements if tag == "tr"]
  assert len(rows) >= len(report["attacks"]) + 1
  for name, row in report["attacks"].items():
    assert f"<td>{name}</td>" in text or f"<td><b>{name}</b></td>" in text, name
    assert f"{row['ssim']:.3f}" in text


def test_tensorboard_events_hold_the_training_curves(smoke_run):
  from tensorboard.backend.event_processing import event_accumulator

  workdir, _ = smoke_run
  report = json.loads((workdir / "report.json").read_text())
  events = event_accumulator.EventAccumulator(str(workdir / "tensorboard" / "decoder"))
  events.Reload()
  val = [(e.step, e.value) for e in events.Scalars("loss/val")]
  want = [(h["step"], h["val_loss"]) for h in report["convergence"]["history"]]
  assert [s for s, _ in val] == [s for s, _ in want]
  np.testing.assert_allclose([v for _, v in val], [v for _, v in want], rtol=1e-6)
  for stage in ("recognition", "evaluator"):
    curve = event_accumulator.EventAccumulator(str(workdir / "tensorboard" / stage))
    curve.Reload()
    assert len(curve.Scalars("loss/train")) >= 5, stage


def test_help_lists_privjax_flags_only():
  command = shutil.which("privjax", path=os.path.dirname(sys.executable))
  assert command, "the privjax console script is not installed beside this python"
  for cmd in ([command, "--help"], [sys.executable, "-m", "privjax", "--help"]):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    listed = re.findall(r"^  --(\w+):", result.stdout, flags=re.M)
    assert listed == list(cli.OWN_FLAGS)
    assert "--print_config" in result.stdout
    for foreign in ("test_srcdir", "chex", "jax_", "orbax", "xml_output_file"):
      assert foreign not in result.stdout, foreign


def test_print_config_prints_every_field_with_its_comment(tmp_path):
  from configs import smoke

  # The console script from another directory: the config still imports its siblings.
  result = subprocess.run(
    [
      shutil.which("privjax", path=os.path.dirname(sys.executable)),
      f"--config={REPO_ROOT}/configs/smoke.py",
      "--print_config",
    ],
    capture_output=True,
    text=True,
    timeout=120,
    cwd=tmp_path,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  lines = dict(line.split(" = ", 1) for line in result.stdout.strip().splitlines())
  fields = []

  def walk(node, prefix):
    for key, value in node.items():
      if isinstance(value, dict) and value:
        walk(value, f"{prefix}{key}.")
      else:
        fields.append(f"{prefix}{key}")

  walk(smoke.get_config().to_dict(), "")
  assert sorted(lines) == sorted(fields)
  for field, rest in lines.items():
    assert "  # " in rest and rest.split("  # ", 1)[1].strip(), f"{field} has no comment"
  assert lines["attacks.decoder.num_steps"].startswith("40  # Upper bound on steps")


def test_the_page_renders_in_a_browser_without_overflowing(smoke_run, tmp_path):
  from benchmarks import report_screenshot

  if report_screenshot.browser() is None:
    pytest.skip("no Chromium on PATH (Debian: apt install chromium); the page is not rendered")
  workdir, _ = smoke_run
  shot = report_screenshot.screenshot(str(workdir / "report.html"), str(tmp_path / "page.png"))
  assert shot["right_margin_blank"], "something overflows the page at 1280 px"
  assert shot["height"] > 1500  # the whole page, not a blank or truncated render


def test_stderr_holds_only_privjax_info_lines_from_a_checkout_named_privjax(tmp_path):
  # The default name of a clone is privjax, and `make` puts .venv inside it: third-party
  # files then live under .../privjax/.venv/... (here: the installed packages reached
  # through a link inside the copy, so their paths hold "/privjax/" too).
  import sysconfig

  clone = tmp_path / "privjax"
  files = subprocess.run(
    ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
  ).stdout.split()
  for name in files:
    if name.startswith(("privjax/", "configs/")) or name == "launch.py":
      (clone / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy(os.path.join(REPO_ROOT, name), clone / name)
  (clone / ".venv").mkdir()
  (clone / ".venv" / "site-packages").symlink_to(sysconfig.get_paths()["purelib"])
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=2",
    PYTHONPATH=os.pathsep.join([str(clone), str(clone / ".venv" / "site-packages")]),
  )
  result = subprocess.run(
    [sys.executable, "launch.py", "--config=configs/smoke.py", f"--workdir={tmp_path / 'w'}"],
    cwd=clone,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  # `HH:MM:SS source: message`; a warning or error says so after the source, and a line
  # another library logged names that library instead of privjax.
  lines = [
    re.match(r"\d\d:\d\d:\d\d (\S+): (warning: |error: )?", x) for x in result.stderr.splitlines()
  ]
  info = [m.group(1) for m in lines if m and not m.group(2)]
  assert len(info) > 20 and set(info) == {"privjax"}, sorted(set(info))
  assert "orbax" not in result.stderr and "Unable to initialize backend" not in result.stderr
  assert "Traceback" not in result.stderr


def test_the_release_gate_exits_3_after_writing_the_report_when_the_level_is_reached(
  smoke_run, tmp_path, launch_here, digits8
):
  workdir = tmp_path / "done"
  shutil.copytree(smoke_run[0], workdir)  # a finished high audit: re-served from its caches
  (workdir / "report.json").unlink()
  result = launch_here("configs/smoke.py", workdir, "--fail_on=medium")
  assert result.returncode == cli.GATE_TRIPPED == 3, result.stderr[-2000:]
  assert "release gate TRIPPED: high risk reaches --fail_on=medium" in result.stdout
  assert (workdir / "report.json").is_file()  # written before the gate exits
  assert "Traceback" not in result.stderr
  # Features that carry nothing of the images: low, and the gate passes.
  x, y = digits8
  noise = np.random.default_rng(0).normal(size=(len(x), 16)).astype(np.float32)
  np.savez(
    tmp_path / "noise.npz",
    aux_images=x[:300],
    aux_features=noise[:300],
    target_images=x[300:400],
    target_features=noise[300:400],
  )
  result = launch_here(
    "configs/npz.py",
    tmp_path / "noise",
    f"--config.data.path={tmp_path / 'noise.npz'}",
    "--config.model.kind=precomputed",
    "--config.attacks.decoder.type=off",
    "--fail_on=medium",
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert "release gate passed: low risk is below --fail_on=medium" in result.stdout
  bad = launch_here("configs/smoke.py", tmp_path / "x", "--fail_on=severe")
  assert bad.returncode == 2 and "--fail_on must be 'medium' or 'high'" in bad.stderr
  assert not (tmp_path / "x").exists()


def test_fail_on_is_read_in_any_case_and_print_config_checks_it(smoke_run, tmp_path, launch_here):
  workdir = tmp_path / "done"
  shutil.copytree(smoke_run[0], workdir)
  result = launch_here("configs/smoke.py", workdir, "--fail_on=HIGH")
  assert result.returncode == cli.GATE_TRIPPED, result.stderr[-2000:]
  assert "release gate TRIPPED: high risk reaches --fail_on=high" in result.stdout
  bad = launch_here("configs/smoke.py", tmp_path / "x", "--print_config", "--fail_on=severe")
  assert bad.returncode == 2 and bad.stdout == "", bad.stderr[-2000:]
  assert bad.stderr.strip().splitlines()[-1] == (
    "privjax: error: --fail_on must be 'medium' or 'high' (or '' for no gate), got 'severe'"
  )
  good = launch_here("configs/smoke.py", tmp_path / "x", "--print_config", "--fail_on=Medium")
  assert good.returncode == 0 and "seed" in good.stdout, good.stderr[-2000:]
  assert not (tmp_path / "x").exists()


# --- Signals: the exit status names the signal; a finished report keeps its own -----------


class _SignalAt(logging.Handler):
  """Sends `sig` to this process when a log line containing `marker` is emitted: the
  signal then raises right after that line, in the stage that logged it."""

  def __init__(self, marker: str, sig: int):
    super().__init__()
    self.marker, self.sig, self.sent = marker, sig, False

  def emit(self, record):
    if not self.sent and self.marker in record.getMessage():
      self.sent = True
      os.kill(os.getpid(), self.sig)


@contextlib.contextmanager
def _signal_at(marker: str, sig: int = signal.SIGTERM):
  handler = _SignalAt(marker, sig)
  logging.getLogger().addHandler(handler)
  try:
    yield handler
  finally:
    logging.getLogger().removeHandler(handler)


def _unfinished(smoke_run, workdir):
  """A copy of the finished smoke audit without its report and the whitebox attacker's
  reconstructions: a re-run re-serves every stage but whitebox, which fits again."""
  shutil.copytree(smoke_run[0], workdir)
  (workdir / "report.json").unlink()
  for path in (workdir / "cache").glob("attack-whitebox-*.npz"):
    path.unlink()
  return workdir


def _stopped_by(result, name: str, code: int) -> str:
  lines = result.stderr.strip().splitlines()
  assert result.returncode == code, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert lines[-1].startswith(f"privjax: {name}"), lines[-1]
  assert sum(line.startswith("privjax: ") for line in lines) == 1, result.stderr[-3000:]
  assert "re-run the same command" in lines[-1]
  return lines[-1]


# (the log line the signal follows, whether the report is written by then)
STAGES = [
  ("stage extraction ...", False),
  ("stage identity ...", False),
  ("attack nearest: reconstructions restored", False),
  ("attack whitebox (whitebox): fitting", False),  # issue 36: swallowed, then "SIGINT", 130
  ("whitebox: from ", False),  # inside its fit, between two of its optimisations
  ("stage scoring ...", False),
  ("report written to", True),  # published, the workdir not yet released: still a stop
]


@pytest.mark.parametrize(
  "marker,written",
  STAGES,
  ids=["extraction", "identity", "nearest", "whitebox", "whitebox-fit", "scoring", "published"],
)
def test_sigterm_in_any_stage_exits_143_with_one_line_whatever_the_gate(
  smoke_run, tmp_path, launch_here, marker, written
):
  workdir = _unfinished(smoke_run, tmp_path / "w")
  with _signal_at(marker) as sent:
    result = launch_here("configs/smoke.py", workdir, "--fail_on=medium")
  assert sent.sent, f"never logged {marker!r}"
  _stopped_by(result, "stopped by SIGTERM;", 143)
  assert "release gate" not in result.stdout
  assert (workdir / "report.json").exists() == written
  if written:  # published whole before the stop
    assert json.loads((workdir / "report.json").read_text())["risk_level"] == "high"


def test_ctrl_c_during_whitebox_exits_130_and_the_rerun_trips_the_gate(
  smoke_run, tmp_path, launch_here
):
  workdir = _unfinished(smoke_run, tmp_path / "w")
  with _signal_at("whitebox: from ", signal.SIGINT):
    result = launch_here("configs/smoke.py", workdir, "--fail_on=medium")
  _stopped_by(result, "interrupted by Ctrl-C (SIGINT);", 130)
  assert not (workdir / "report.json").exists()
  again = launch_here("configs/smoke.py", workdir, "--fail_on=medium")
  assert again.returncode == cli.GATE_TRIPPED, again.stderr[-3000:]
  assert (
    json.loads((workdir / "report.json").read_text())["ssim_per_image"]
    == json.loads((smoke_run[0] / "report.json").read_text())["ssim_per_image"]
  )


def test_a_sigterm_that_code_swallowed_still_exits_143_not_as_ctrl_c(
  smoke_run, tmp_path, launch_here, monkeypatch
):
  from privjax.scoring import scores as scoring

  workdir = _unfinished(smoke_run, tmp_path / "w")
  real = scoring.mean_image_ssim

  def swallowing(*args, **kwargs):  # a library that catches what interrupted it
    try:
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(5)  # (the handler raises here)
    except BaseException:  # noqa: B036, S110
      pass
    return real(*args, **kwargs)

  monkeypatch.setattr(scoring, "mean_image_ssim", swallowing)
  result = launch_here("configs/smoke.py", workdir, "--fail_on=medium")
  _stopped_by(result, "stopped by SIGTERM;", 143)  # (was: "interrupted by Ctrl-C", 130)
  assert "release gate" not in result.stdout  # what the swallowing run returned is not served


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_once_the_report_is_returned_keeps_the_gates_status(
  smoke_run, tmp_path, launch_here, monkeypatch, sig
):
  from privjax.report import files as report_lib

  workdir = tmp_path / "w"
  shutil.copytree(smoke_run[0], workdir)
  real = report_lib.summary_line

  def signalled(*args, **kwargs):  # the signal lands while the verdict is being printed
    os.kill(os.getpid(), sig)
    time.sleep(0.2)
    return real(*args, **kwargs)

  monkeypatch.setattr(report_lib, "summary_line", signalled)
  result = launch_here("configs/smoke.py", workdir, "--fail_on=medium")
  assert result.returncode == cli.GATE_TRIPPED, result.stderr[-3000:]
  assert "release gate TRIPPED: high risk reaches --fail_on=medium" in result.stdout
  last = result.stderr.strip().splitlines()[-1]
  assert last == (
    f"privjax: {sig.name} arrived after the report was written; it stops nothing: exit "
    "status 3, the run's own"
  )
  assert "Traceback" not in result.stderr
  passed = launch_here("configs/smoke.py", workdir)  # no gate: 0, the same way
  assert passed.returncode == 0, passed.stderr[-3000:]


def test_a_real_sigterm_during_whitebox_exits_143_before_any_report(smoke_run, tmp_path):
  # A fresh process and a real signal: it lands wherever whitebox is (tracing, compiling,
  # reading JAX's compilation cache, a gc callback), which issue 36's run swallowed.
  workdir = _unfinished(smoke_run, tmp_path / "w")
  code, stderr = launch_until(
    "configs/smoke.py",
    workdir,
    "attack whitebox (whitebox): fitting",
    "--fail_on=medium",
    sig=signal.SIGTERM,
    delay=0.5,
  )
  assert code == 143, stderr[-3000:]
  assert stderr.strip().splitlines()[-1].startswith("privjax: stopped by SIGTERM;")
  assert "Traceback" not in stderr and "Interrupted" not in stderr, stderr[-3000:]
  assert not (workdir / "report.json").exists()
