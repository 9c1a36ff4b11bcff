"""The README's tour, run as written: every command it shows, timed, into docs/measured.md.

  python benchmarks/first_hour.py --make          # full size, with the install and the
                                                  # make targets; writes docs/measured.md
  python benchmarks/first_hour.py --quick --out /tmp/measured.md   # seconds each (CI)

The commands are read from README.md itself (its bash blocks' `launch.py` lines and its
Python blocks), so the README and what is measured never drift apart. They run in a
fresh folder holding what the README assumes the user has: `faces/` (a folder of
identity subfolders: sklearn's digits as PNG files, 75 per digit), `photos/` (the 100 LFW
faces that ship with scikit-image, upscaled: benchmarks/faces_folder.py) and the arrays of
its npz example (a tanh random projection of the digits, with labels). JAX's persistent
compilation cache starts empty, as on a new machine, and then serves the later
commands as it would a user. --quick appends the test suite's smoke settings to every
command (the numbers are then meaningless; it checks that each command runs).
--make first times the README's set-up as a new user meets it, in a fresh clone of this
repository's last commit (with ../shared beside it, as CI has): the install that
`make audit` does, the test tools `make test` adds, `make test-fast` and `make test`
(pip's own download cache is not cleared: a machine that never fetched these wheels
waits longer for the network). Prints a table; writes it with the date, the machine and
its load (the 1-minute load average before and after) to --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# configs/smoke.py's settings, for --quick.
QUICK = [
  "--config.data.image_size=8",
  "--config.ssim.filter_size=5",
  "--config.ssim.filter_sigma=0.68",
  "--config.model.train_steps=60",
  "--config.evaluator.train_steps=60",
  "--config.attacks.decoder.num_steps=20",
  "--config.attacks.decoder.warmup_steps=2",
  "--config.attacks.decoder.eval_every=10",
  "--config.attacks.decoder.checkpoint_every=20",
  "--config.attacks.decoder.width=16",
  "--config.attacks.decoder.hidden=64",
  "--config.attacks.ridge.num_features=128",
  "--config.attacks.whitebox.steps=16",
  "--config.attacks.whitebox.tv_weights=(0.0,)",
  "--config.bootstrap_samples=100",
]


def quick_flags(command: str) -> list[str]:
  """QUICK for `command`: a check that it runs, in seconds. The whitebox attacker is off
  (its compilation per image shape is most of a quick run; tests/unit/test_whitebox.py and
  the smoke audits cover it), a defense sweep tries one point. dlib's encoder keeps its
  150x150 chips and their SSIM window; its decoder is off too (at 150x150 on CPU it costs
  minutes even at smoke settings), and so is its dlib_accepts metric (another compilation
  of the ResNet; tests/unit/test_faces.py checks it)."""
  flags = QUICK + ["--config.attacks.whitebox.type=off"]
  if "defense_sweep" in command:
    flags = flags + ['--config.defense.sweep={"gaussian_noise": {"strengths": (8.0,)}}']
  if "dlib_faces" not in command:
    return flags
  kept = [f for f in flags if not f.startswith(("--config.data.", "--config.ssim."))]
  return kept + ["--config.attacks.decoder.type=off", "--config.metrics={}"]


def quick_config():
  """The audit config `privjax.assess` gets in --quick (QUICK's settings, whitebox off)."""
  import privjax

  c = privjax.audit_config()
  c.attacks.decoder.update(num_steps=20, warmup_steps=2, eval_every=10, checkpoint_every=20)
  c.attacks.decoder.update(width=16, hidden=64)
  c.attacks.ridge.num_features = 128
  c.attacks.whitebox.type = "off"
  c.bootstrap_samples = 100
  return c


QUICK_API = """
import privjax as _p
from benchmarks.first_hour import quick_config as _config
_assess = _p.assess
_p.assess = lambda *a, **k: _assess(*a, config=_config(), **k)
"""


def readme_steps(readme: str) -> list[dict]:
  """The README's commands in order: {kind: shell|python, text}; `make audit` as what it runs."""
  steps = []
  for lang, body in re.findall(r"```(bash|python)\n(.*?)```", readme, re.S):
    if lang == "python":
      steps.append({"kind": "python", "text": body})
      continue
    joined = body.replace("\\\n", " ")
    for line in joined.splitlines():
      line = line.split("#", 1)[0].strip()
      if line.startswith("make audit"):
        line = ".venv/bin/python launch.py --config=configs/default.py --workdir=runs/default"
      if "launch.py" in line:
        steps.append({"kind": "shell", "text": " ".join(line.split())})
  return steps


def make_inputs(folder: str) -> dict:
  """faces/ and the npz example's arrays (as the namespace its Python block runs in)."""
  import numpy as np
  from PIL import Image
  from sklearn.datasets import load_digits

  d = load_digits()
  images = (d.images / 16.0 * 255).astype(np.uint8)
  for digit in range(10):
    person = os.path.join(folder, "faces", f"person{digit}")
    os.makedirs(person, exist_ok=True)
    for k, i in enumerate(np.flatnonzero(d.target == digit)[:75]):
      Image.fromarray(images[i]).save(os.path.join(person, f"{k:03d}.png"))
  photos = os.path.join(folder, "photos")
  subprocess.run(
    [sys.executable, os.path.join(HERE, "benchmarks", "faces_folder.py"), photos],
    check=True,
    capture_output=True,
  )
  proj = np.random.default_rng(0).normal(size=(64, 32)) / 8
  features = np.tanh((d.images.reshape(len(images), -1) / 16.0) @ proj).astype(np.float32)
  aux, tgt = slice(0, 1400), slice(1400, None)
  return {
    "np": np,
    "aux_images": images[aux],
    "aux_features": features[aux],
    "aux_labels": d.target[aux],
    "target_images": images[tgt],
    "target_features": features[tgt],
    "target_labels": d.target[tgt],
  }


def run_shell(text: str, cwd: str, env: dict, quick: bool) -> tuple[float, str]:
  args = shlex.split(text)
  assert args[0].endswith("python") and args[1] == "launch.py", text
  args = [sys.executable, os.path.join(HERE, "launch.py")] + [
    f"--config={os.path.join(HERE, a.split('=', 1)[1])}" if a.startswith("--config=") else a
    for a in args[2:]
  ]
  if quick:
    args += quick_flags(text)
  t = time.perf_counter()
  done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - t
  if done.returncode != 0:
    raise SystemExit(f"{text}: exit {done.returncode}: {done.stderr.strip().splitlines()[-1]}")
  lines = done.stdout.strip().splitlines()
  warnings = sum(line.startswith("privjax: warning:") for line in lines)
  summary = next(line for line in lines if not line.startswith("privjax: warning:"))
  return wall, summary + (f" (and {warnings} warning lines)" if warnings else "")


def run_python(text: str, cwd: str, env: dict, quick: bool, namespace: dict) -> tuple[float, str]:
  if "np.savez" in text and "privjax" not in text:  # the npz example: makes leak.npz here
    t = time.perf_counter()
    cwd_before, there = os.getcwd(), set(os.listdir(cwd))
    os.chdir(cwd)
    try:
      exec(text, dict(namespace))
    finally:
      os.chdir(cwd_before)
    return time.perf_counter() - t, "wrote " + ", ".join(sorted(set(os.listdir(cwd)) - there))
  code = (QUICK_API if quick else "") + text
  t = time.perf_counter()
  done = subprocess.run(
    [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True
  )
  wall = time.perf_counter() - t
  if done.returncode != 0:
    raise SystemExit(f"README Python block: exit {done.returncode}: {done.stderr[-500:]}")
  return wall, done.stdout.strip().splitlines()[-1]


MAKE_STEPS = (
  ("install (what `make audit` does before the audit)", ".venv/.installed"),
  ("install the test tools (what `make test` adds)", ".venv/.installed-test"),
  ("`make test-fast` (the unit tier)", "test-fast"),
  ("`make test` (lint and the whole suite)", "test"),
)


def run_make(tmp: str) -> list[dict]:
  """The set-up in a fresh clone: each make target timed; its last line kept."""
  clone = os.path.join(tmp, "setup", "main")
  subprocess.run(["git", "clone", "--quiet", HERE, clone], check=True)
  shared = os.path.join(os.path.dirname(HERE), "shared")
  if os.path.isdir(shared):
    os.symlink(shared, os.path.join(tmp, "setup", "shared"))
  env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
  rows = []
  for what, target in MAKE_STEPS:
    t = time.perf_counter()
    done = subprocess.run(["make", target], cwd=clone, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    lines = (done.stdout + done.stderr).strip().splitlines() or [""]
    if done.returncode != 0:
      raise SystemExit(f"make {target}: exit {done.returncode}: {lines[-1]}")
    out = next((ln for ln in reversed(lines) if " passed" in ln), lines[-1])
    rows.append({"command": what, "seconds": round(wall, 1), "output": out.strip("= ")})
    print(f"{wall:7.1f} s  {what}\n          {rows[-1]['output'][:160]}", flush=True)
  return rows


def machine() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"{cpu}, {os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="smoke settings: checks, not times")
  parser.add_argument("--out", default=os.path.join(HERE, "docs", "measured.md"))
  parser.add_argument(
    "--skip", default="", help="skip the commands containing this text (listed as skipped)"
  )
  parser.add_argument(
    "--make", action="store_true", help="first time the install and the make targets"
  )
  args = parser.parse_args()
  load_before = os.getloadavg()[0]
  with open(os.path.join(HERE, "README.md")) as f:
    steps = readme_steps(f.read())
  with tempfile.TemporaryDirectory() as tmp:
    namespace = make_inputs(tmp)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
    env["HOME"] = tmp  # the CLI's compilation cache, ~/.cache/privjax/jax, starts empty
    rows = run_make(tmp) if args.make else []
    for step in steps:
      if args.skip and args.skip in step["text"]:
        rows.append({"command": step["text"], "seconds": "skipped", "output": "(--skip)"})
        continue
      if step["kind"] == "shell":
        wall, out = run_shell(step["text"], tmp, env, args.quick)
        what = step["text"]
      else:
        wall, out = run_python(step["text"], tmp, env, args.quick, namespace)
        what = "Python: " + next(
          (ln.strip() for ln in step["text"].splitlines() if "assess(" in ln or "savez" in ln),
          step["text"].splitlines()[0],
        )
      rows.append({"command": what, "seconds": round(wall, 1), "output": out})
      print(f"{wall:7.1f} s  {what}\n          {out[:160]}", flush=True)
  import jax

  flags = (" --quick" if args.quick else "") + (" --make" if args.make else "")
  load = f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
  setup = (
    "The set-up rows ran first, in a fresh clone of the last commit. "
    if args.make
    else "The set-up (install, make targets) was not timed (no --make). "
  )
  header = textwrap.dedent(f"""\
    # Measured: the README's commands

    Generated by `.venv/bin/python benchmarks/first_hour.py{flags}`
    on {datetime.date.today().isoformat()}; {machine()}; {load}; jax {jax.__version__}, no
    accelerator unless the devices below say so. {setup}Each command is run as the README
    writes it, in order, from an empty JAX compilation cache (the first command compiles;
    later ones reuse what it cached, as on a user's machine). Wall seconds, process start
    to exit.

    | seconds | command | last line printed |
    |---|---|---|
    """)
  table = "".join(
    f"| {r['seconds']} | `{r['command']}` | {r['output'].replace('|', '/')[:200]} |\n" for r in rows
  )
  with open(args.out, "w") as f:
    f.write(header + table)
  print(json.dumps({"out": args.out, "steps": len(rows)}))


if __name__ == "__main__":
  main()
