"""Test setup: four CPU devices, so every test runs the sharded code paths."""

import functools
import os

# Must run before JAX initialises its backends.
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from privjax.data import load_digits  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
  del config
  assert jax.device_count() == 4, f"expected 4 forced CPU devices, got {jax.devices()}"


@pytest.fixture(scope="session")
def digits8():
  """sklearn digits at 8x8: images [1797, 8, 8, 1] in [0, 1], labels [1797]."""
  return load_digits(8)


def tiny_config(**train) -> ml_collections.ConfigDict:
  """An audit config that trains a small decoder in a few seconds."""
  t = {
    "num_steps": 600,
    "eval_every": 100,
    "batch_size": 128,
    "learning_rate": 3e-3,
  }
  t.update(train)
  t.setdefault("warmup_steps", min(20, t["num_steps"] // 2))
  return ml_collections.ConfigDict(
    {"train": t, "decoder": {"width": 32, "hidden": 256}, "bootstrap_samples": 300}
  )


@pytest.fixture
def rng():
  return np.random.default_rng(0)


# Overrides that cut any config down to seconds (tiny models, a few steps, 8x8 images).
SMOKE_OVERRIDES = [
  "--config.model.train_steps=30",
  "--config.model.batch_size=16",
  "--config.evaluator.train_steps=30",
  "--config.evaluator.batch_size=16",
  "--config.train.num_steps=20",
  "--config.train.warmup_steps=2",
  "--config.train.eval_every=10",
  "--config.train.checkpoint_every=20",
  "--config.train.batch_size=16",
  "--config.decoder.width=16",
  "--config.decoder.hidden=32",
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
  config, workdir, *overrides, mock_tfds_examples=None, pythonpath=None, timeout=300, devices=4
):
  """Runs launch.py in a subprocess with `devices` CPU devices; optionally under tfds mock data."""
  import subprocess
  import sys

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

# The JAX settings the command changes (its --compilation_cache).
_CACHE_SETTINGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")


@pytest.fixture
def launch_here(capfd):
  """`launch`, in this process: see `run_here` (the test's capfd captures the output)."""
  return functools.partial(run_here, capfd)


@pytest.fixture(scope="session")
def launch_here_shared():
  """`launch_here` for module- and session-scoped fixtures, which cannot use the
  per-test capfd: each call captures fds 1 and 2 itself, as capfd does."""
  from _pytest.capture import FDCapture, MultiCapture

  def run(*args, **kwargs):
    capture = MultiCapture(in_=None, out=FDCapture(1), err=FDCapture(2))
    capture.start_capturing()
    try:
      return run_here(capture, *args, **kwargs)
    finally:
      capture.stop_capturing()

  return run


@pytest.fixture(scope="session")
def smoke_audit(tmp_path_factory, launch_here_shared):
  """One finished `configs/smoke.py` audit (no overrides), run in this process, shared by
  the tests that only read a finished workdir: (workdir, CompletedProcess). Copy the
  workdir before changing anything in it."""
  workdir = tmp_path_factory.mktemp("smoke_audit")
  result = launch_here_shared("configs/smoke.py", workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result


def run_here(capture, config, workdir, *overrides, pythonpath=None):
  """`launch`, in this process: calls launch.py's entry point (privjax.cli.console) with the
  same sys.argv and returns a CompletedProcess of what the fresh process would give: its
  exit status, stdout and stderr (read from `capture`: capfd, or any capture of the file
  descriptors, so C++ output counts).

  A fresh process pays JAX's import and start-up (seconds); this does not. Each call
  starts from what a fresh process has: absl flags unparsed and none of the
  `--config.FIELD` flags the last call defined; absl's one-time app setup done again
  (its handler on the root logger, writing to this stderr; --verbosity raised to INFO);
  Python's default warning filters, warnings printed to stderr; the user's modules and
  config files imported anew; the working directory the repository. An uncaught
  exception prints its traceback to stderr and gives status 1, as Python would.
  Everything the run changes in this process (flags, logging handlers, filters and
  levels, the SIGTERM handler, JAX's compilation-cache settings, sys.path, sys.modules'
  user modules) is put back afterwards. Not for what is fixed when JAX starts (device
  count, XLA_FLAGS: this process has 4 CPU devices), environment variables read at
  import, or signals: those need `launch`.
  """
  import logging
  import signal
  import subprocess
  import sys
  import traceback
  import warnings

  from absl import app, command_name, flags
  from absl import logging as absl_logging
  from jax._src import compilation_cache

  from privjax import cli

  def show_warning(message, category, filename, lineno, file=None, line=None):
    del file  # Python's own showwarning, which pytest replaces while a test runs
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

  args = [f"--config={config}", f"--workdir={workdir}", *overrides]
  pythonpath = [str(pythonpath)] if pythonpath else []
  config_dir = os.path.dirname(os.path.join(REPO_ROOT, config))
  user_dirs = [os.path.join(REPO_ROOT, "configs"), config_dir, *pythonpath]
  flag_names, modules = set(flags.FLAGS), set(sys.modules)
  root, absl_logger = logging.getLogger(), absl_logging.get_absl_logger()
  levels = root.level, absl_logger.level
  handler = absl_logging.get_absl_handler()
  sigterm = signal.getsignal(signal.SIGTERM)
  sigint = signal.getsignal(signal.SIGINT)
  cache = {name: getattr(jax.config, name) for name in _CACHE_SETTINGS}
  capture.readouterr()
  with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
    mp.chdir(REPO_ROOT)
    mp.setattr(sys, "argv", ["launch.py", *args])
    mp.setattr(sys, "path", [REPO_ROOT, *pythonpath, *sys.path])  # launch.py's dir, PYTHONPATH
    # A fresh process's app.run drops the stderr handler that logging.basicConfig added
    # on absl's first log call (orbax logs on import); here that handler writes to
    # pytest's capture, which app.run does not see as stderr, so it is dropped here.
    handlers = [h for h in root.handlers if type(h) is not logging.StreamHandler]
    mp.setattr(root, "handlers", handlers)
    mp.setattr(handler, "filters", list(handler.filters))
    mp.setattr(handler.python_handler, "stream", sys.stderr)
    mp.setattr(app._run_init, "done", False)
    mp.setattr(app._register_and_parse_flags_with_usage, "done", False)
    mp.setattr(app, "faulthandler", None)  # pytest's own faulthandler stays
    mp.setattr(command_name, "make_process_name_useful", lambda: None)  # pytest's name too
    mp.setattr(cli, "_STOPS_SEEN", [])
    warnings.resetwarnings()
    for action, category, module in reversed(_FRESH_WARNING_FILTERS):
      warnings.filterwarnings(action, category=category, module=module)
    warnings.showwarning = show_warning
    flags.FLAGS.unparse_flags()
    try:
      cli.console()
      code = 0
    except SystemExit as e:  # sys.exit(status): None is 0, a message is printed and 1
      code = 0 if e.code is None else e.code
      if not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    except Exception:  # noqa: BLE001 (uncaught: what Python prints, and status 1)
      traceback.print_exc()
      code = 1
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      flags.FLAGS.unparse_flags()  # (before the levels: it resets --verbosity)
      for name in set(flags.FLAGS) - flag_names:
        if name.startswith("config."):
          delattr(flags.FLAGS, name)
      root.setLevel(levels[0])
      absl_logger.setLevel(levels[1])
      signal.signal(signal.SIGTERM, sigterm)
      signal.signal(signal.SIGINT, sigint)
      for name, value in cache.items():
        jax.config.update(name, value)
      compilation_cache.reset_cache()
      for name in set(sys.modules) - modules:
        path = getattr(sys.modules[name], "__file__", None) or ""
        if any(path.startswith(d + os.sep) for d in user_dirs):
          del sys.modules[name]
  out, err = capture.readouterr()
  return subprocess.CompletedProcess(["launch.py", *args], code, out, err)


def last_line(result) -> str:
  lines = result.stderr.strip().splitlines()
  return lines[-1] if lines else ""


def launch_until(config, workdir, marker, *overrides, sig, delay=0.0, timeout=300):
  """Starts launch.py, sends `sig` `delay` s after a stderr line contains `marker`.

  Returns (returncode, stderr text). Fails the test if the marker never appears.
  """
  import signal  # noqa: F401  (callers pass signal.SIGKILL / SIGTERM)
  import subprocess
  import sys
  import threading
  import time

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
  import importlib
  import sys

  import jax
  import jax.numpy as jnp
  import orbax.checkpoint as ocp

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


def png_header(path, width, height) -> str:
  """Writes a PNG whose header claims width x height pixels (its pixel data is 64 zero
  bytes: a decompression-bomb stand-in that costs nothing); returns its path."""
  import struct
  import zlib

  def chunk(kind, payload):
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

  ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
  idat = zlib.compress(b"\0" * 64)
  path.write_bytes(
    b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
  )
  return str(path)
