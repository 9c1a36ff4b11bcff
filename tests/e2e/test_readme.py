"""The README's commands, as written, run (with configs/smoke.py's settings appended, so
each takes seconds): the front door never points at a command that fails.

benchmarks/first_hour.py reads the same commands from the README and times them at full
size into docs/measured.md.
"""

import os
import shlex

import pytest

from benchmarks import first_hour
from tests.conftest import REPO_ROOT


def _quick_assess(monkeypatch):
  import privjax

  assess = privjax.assess
  monkeypatch.setattr(
    privjax, "assess", lambda *a, **k: assess(*a, config=first_hour.quick_config(), **k)
  )


def test_every_command_in_the_readme_runs(tmp_path, launch_here, monkeypatch):
  with open(os.path.join(REPO_ROOT, "README.md")) as f:
    steps = first_hour.readme_steps(f.read())
  shell = [s["text"] for s in steps if s["kind"] == "shell"]
  assert len(shell) >= 4 and any("defense_sweep" in s for s in shell), shell
  assert sum(s["kind"] == "python" for s in steps) >= 2
  namespace = first_hour.make_inputs(str(tmp_path))
  _quick_assess(monkeypatch)
  paths = ("--workdir", "--config.data.path")  # relative to where the user stands: tmp_path
  for step in steps:
    if step["kind"] == "python":
      monkeypatch.chdir(tmp_path)
      exec(step["text"], dict(namespace))  # the npz example writes leak.npz; the API audits
      continue
    args = shlex.split(step["text"])[2:]  # after `.venv/bin/python launch.py`
    args = [
      f"{a.split('=', 1)[0]}={tmp_path / a.split('=', 1)[1]}" if a.startswith(paths) else a
      for a in args
    ]
    flags = dict(a.split("=", 1) for a in args)
    rest = [a for a in args if not a.startswith(("--config=", "--workdir="))]
    quick = first_hour.quick_flags(step["text"])
    result = launch_here(flags["--config"], flags["--workdir"], *rest, *quick)
    assert result.returncode == 0, (step["text"], result.stderr[-2000:])
    assert result.stdout.startswith("privjax: "), step["text"]
  assert (tmp_path / "runs" / "py" / "report.json").is_file()
  assert (tmp_path / "runs" / "default" / "sweep.json").is_file()  # the sweep, on the audit


@pytest.mark.parametrize("name", ["guide.md", "method.md", "scale.md", "layout.md"])
def test_the_readme_links_to_each_reference_page(name):
  with open(os.path.join(REPO_ROOT, "README.md")) as f:
    assert f"(docs/{name})" in f.read()
  assert os.path.isfile(os.path.join(REPO_ROOT, "docs", name))
