"""End to end through launch.py on the smoke config: files, resume, exit codes."""

import base64
import html.parser
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from privjax import cli
from privjax import workdir as workdir_lib
from tests.conftest import REPO_ROOT


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
  own = {p.name for p in (clone / "privjax").rglob("*.py")}
  info = [line for line in result.stderr.splitlines() if re.match(r"I\d{4} ", line)]
  sources = {re.search(r" (\S+\.py):\d+\]", line).group(1) for line in info}
  assert len(info) > 20 and sources <= own, sorted(sources - own)
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
