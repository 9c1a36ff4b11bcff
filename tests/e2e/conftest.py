"""The end-to-end tier's command-line harness: `launch` (launch.py in a fresh process),
`launch_until` (one stopped by a signal), and `run_here` / the `launch_here` fixture (the
same command line in this process, through privjax.cli.run), plus the shared finished
smoke audit."""

import contextlib
import importlib
import locale
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
import warnings

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest
from absl import logging as absl_logging

from privjax import cli
from tests.conftest import REPO_ROOT

# Overrides that cut any config down to seconds (tiny models, a few steps, 8x8 images).
SMOKE_OVERRIDES = [
  "--config.model.train_steps=30",
  "--config.model.batch_size=16",
  "--config.evaluator.train_steps=30",
  "--config.evaluator.batch_size=16",
  "--config.attacks.decoder.num_steps=20",
  "--config.attacks.decoder.warmup_steps=2",
  "--config.attacks.decoder.eval_every=10",
  "--config.attacks.decoder.checkpoint_every=20",
  "--config.attacks.decoder.batch_size=16",
  "--config.attacks.decoder.width=16",
  "--config.attacks.decoder.hidden=32",
  "--config.bootstrap_samples=100",
  "--config.data.image_size=8",
  "--config.ssim.filter_size=5",
  "--config.ssim.filter_sigma=0.68",
]

_UNDER_MOCK = """
import runpy, sys
import tensorflow_datasets as tfds
sys.argv = ["launch.py"] + sys.argv[1:]
with tfds.testing.mock_data(num_examples={n}):
  runpy.run_path("launch.py", run_name="__main__")
"""


def launch(
  config, workdir, *overrides, mock_tfds_examples=None, pythonpath=None, timeout=600, devices=4
):
  """Runs launch.py in a subprocess with `devices` CPU devices; optionally under tfds mock data."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  if pythonpath:
    env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
  args = [f"--config={config}", f"--workdir={workdir}", *overrides]
  if mock_tfds_examples:
    cmd = [sys.executable, "-c", _UNDER_MOCK.format(n=mock_tfds_examples), *args]
  else:
    cmd = [sys.executable, "launch.py", *args]
  return subprocess.run(
    cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
  )


# Python's warning filters in a fresh `python launch.py` (no -W, no PYTHONWARNINGS).
_FRESH_WARNING_FILTERS = [
  ("default", DeprecationWarning, "__main__"),
  ("ignore", DeprecationWarning, ""),
  ("ignore", PendingDeprecationWarning, ""),
  ("ignore", ImportWarning, ""),
  ("ignore", ResourceWarning, ""),
]


@pytest.fixture(scope="session")
def launch_here():
  """`run_here`: `launch`, in this process (usable from fixtures of any scope)."""
  return run_here


@pytest.fixture(scope="session")
def smoke_audit(tmp_path_factory, launch_here):
  """One finished `configs/smoke.py` audit (no overrides), run in this process, shared by
  the tests that only read a finished workdir: (workdir, CompletedProcess). Copy the
  workdir before changing anything in it."""
  workdir = tmp_path_factory.mktemp("smoke_audit")
  result = launch_here("configs/smoke.py", workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result


@contextlib.contextmanager
def captured_output():
  """Captures file descriptors 1 and 2 for the block, as a fresh process's pipes would
  (C++ output counts), with sys.stdout and sys.stderr writing to them; yields a namespace
  whose `stdout` and `stderr` hold the text when the block ends."""
  encoding = locale.getpreferredencoding(False)  # what subprocess.run(text=True) decodes
  out = types.SimpleNamespace(stdout="", stderr="")
  streams = sys.stdout, sys.stderr
  for stream in streams:
    stream.flush()
  files = [tempfile.TemporaryFile() for _ in range(2)]
  saved = [os.dup(1), os.dup(2)]
  try:
    os.dup2(files[0].fileno(), 1)
    os.dup2(files[1].fileno(), 2)
    sys.stdout = open(1, "w", encoding=encoding, closefd=False)
    # Line-buffered, with the error handler of Python's own stderr.
    sys.stderr = open(2, "w", 1, encoding, "backslashreplace", closefd=False)
    yield out
  finally:
    for stream in (sys.stdout, sys.stderr):
      stream.flush()
      stream.close()  # (not the descriptor)
    sys.stdout, sys.stderr = streams
    for fd, copy in zip((1, 2), saved, strict=True):
      os.dup2(copy, fd)
      os.close(copy)
    for name, f in zip(("stdout", "stderr"), files, strict=True):
      f.seek(0)
      setattr(out, name, f.read().decode(encoding, errors="replace"))
      f.close()


def run_here(config, workdir, *overrides, pythonpath=None):
  """`launch`, in this process: runs privjax.cli.run (what launch.py runs) with the same
  argv and returns a CompletedProcess of what the fresh process would give: its exit
  status, stdout and stderr (file descriptors 1 and 2, so C++ output counts).

  A fresh process pays JAX's import and start-up (seconds); this does not. cli.run starts
  from the flags' defaults and puts back what the command changes in the process (flags,
  logging, signal handlers, JAX's compilation cache, sys.path). Around it, this gives the
  run what a fresh process has: launch.py's sys.argv, the repository as the working
  directory and first on the import path (then `pythonpath`, as PYTHONPATH), no stderr
  handler on the root logger other than absl's, Python's default warning filters with
  warnings printed to stderr, and the user's modules and config files imported anew. An
  uncaught exception prints its traceback to stderr and gives status 1, as Python would.
  Not for what is fixed when JAX starts (device count, XLA_FLAGS: this process has 4 CPU
  devices), environment variables read at import, or signals: those need `launch`.
  """

  def show_warning(message, category, filename, lineno, file=None, line=None):
    del file  # Python's own showwarning, which pytest replaces while a test runs
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

  argv = ["launch.py", f"--config={config}", f"--workdir={workdir}", *overrides]
  pythonpath = [str(pythonpath)] if pythonpath else []
  config_dir = os.path.dirname(os.path.join(REPO_ROOT, config))
  user_dirs = [os.path.join(REPO_ROOT, "configs"), config_dir, *pythonpath]
  modules = set(sys.modules)
  root = logging.getLogger()
  with (
    captured_output() as output,
    pytest.MonkeyPatch.context() as mp,
    warnings.catch_warnings(),
  ):
    mp.chdir(REPO_ROOT)
    mp.setattr(sys, "argv", argv)
    mp.setattr(sys, "path", [REPO_ROOT, *pythonpath, *sys.path])  # launch.py's dir, PYTHONPATH
    # A fresh process's absl handler drops the stderr handler that logging.basicConfig
    # added on absl's first log call (orbax logs on import); here that handler writes to
    # pytest's capture, which absl does not see as stderr, so it is dropped here.
    handlers = [h for h in root.handlers if type(h) is not logging.StreamHandler]
    mp.setattr(root, "handlers", handlers)
    mp.setattr(absl_logging.get_absl_handler().python_handler, "stream", sys.stderr)
    warnings.resetwarnings()
    for action, category, module in reversed(_FRESH_WARNING_FILTERS):
      warnings.filterwarnings(action, category=category, module=module)
    warnings.showwarning = show_warning
    try:
      code = cli.run(argv)
    except Exception:  # noqa: BLE001 (uncaught: what Python prints, and status 1)
      traceback.print_exc()
      code = 1
    finally:
      for name in set(sys.modules) - modules:
        path = getattr(sys.modules[name], "__file__", None) or ""
        if any(path.startswith(d + os.sep) for d in user_dirs):
          del sys.modules[name]
  return subprocess.CompletedProcess(argv, code, output.stdout, output.stderr)


def last_line(result) -> str:
  lines = result.stderr.strip().splitlines()
  return lines[-1] if lines else ""


def launch_until(config, workdir, marker, *overrides, sig, delay=0.0, timeout=600):
  """Starts launch.py, sends `sig` `delay` s after a stderr line contains `marker`.

  Returns (returncode, stderr text). Fails the test if the marker never appears.
  """
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  cmd = [sys.executable, "launch.py", f"--config={config}", f"--workdir={workdir}", *overrides]
  proc = subprocess.Popen(
    cmd, cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
  )
  killer = threading.Timer(timeout, proc.kill)
  killer.start()
  lines, seen = [], False
  try:
    for line in proc.stderr:
      lines.append(line)
      if not seen and marker in line:
        seen = True
        time.sleep(delay)
        proc.send_signal(sig)
    proc.wait()
  finally:
    killer.cancel()
  assert seen, f"never saw {marker!r}:\n{''.join(lines)[-3000:]}"
  return proc.returncode, "".join(lines)


def save_module_params(pkg_dir, module_name, cls_name, kwargs, image_shape, path):
  """Initialises `module_name.cls_name(**kwargs)` from `pkg_dir` and saves its params with
  orbax's StandardCheckpointer at `path` (what a user's training script would do)."""
  sys.path.insert(0, str(pkg_dir))
  try:
    cls = getattr(importlib.import_module(module_name), cls_name)
  finally:
    sys.path.pop(0)
    sys.modules.pop(module_name, None)  # so a run in this process imports its own copy
  params = cls(**kwargs).init(jax.random.key(0), jnp.zeros((1, *image_shape)))
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(path, params)
  ckpt.wait_until_finished()
