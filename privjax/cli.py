"""privjax command line: audit how much a recognition model's features leak its images.

  privjax --config=configs/default.py --workdir=runs/default
  privjax --config=configs/default.py --workdir=runs/x --config.train.num_steps=200
  privjax --config=configs/default.py --print_config   # every field, its value and meaning

The same command is `python -m privjax ...` and `python launch.py ...` (the repository's
entry point).

Multi-process (multi-host) runs start the same command in every process, with
`--distributed` (JAX detects the cluster: Cloud TPU, SLURM, ...) or the explicit
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`; see the README's
"Running on many devices".

This is the only module that defines flags; the work is in privjax.audit.run.
Errors caused by the input (config, data, model, workdir, a full disk) print one line
and exit 2. SIGTERM stops training with a checkpoint and exits 143; Ctrl-C (SIGINT)
exits 130 with one line (see privjax.errors.Interrupted).
"""

import errno
import os
import signal
import socket
import sys
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from privjax import audit, logs, parallel
from privjax import config as config_lib
from privjax import report as report_lib
from privjax import workdir as workdir_lib
from privjax.errors import Interrupted, PrivjaxError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "The audit's config file (configs/default.py, or your own).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints and the report.")
flags.DEFINE_bool(
  "print_config",
  False,
  "Print the resolved config (every field, its value and what it means) and exit without "
  "running; --workdir is not needed.",
)
flags.DEFINE_string(
  "compilation_cache",
  os.path.join(os.path.expanduser("~"), ".cache", "privjax", "jax"),
  "JAX persistent compilation cache directory ('' disables it): re-runs skip compiling.",
)
flags.DEFINE_integer(
  "cpu_devices",
  0,
  "On a CPU, run as this many JAX devices (0: one per core, up to 8, a power of two). "
  "XLA_FLAGS=--xla_force_host_platform_device_count=N takes precedence.",
)
flags.DEFINE_bool(
  "distributed",
  False,
  "Join a multi-process run with jax.distributed.initialize(), letting JAX detect the "
  "cluster (Cloud TPU, SLURM, ...). Implied by any of the three flags below.",
)
flags.DEFINE_string(
  "coordinator_address", None, "HOST:PORT of process 0's coordinator (jax.distributed)."
)
flags.DEFINE_integer("num_processes", None, "Number of processes in the run (jax.distributed).")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes-1.")
flags.DEFINE_integer(
  "coordinator_timeout",
  300,
  "Seconds a process waits for the coordinator (and the other processes) to come up.",
)
flags.mark_flags_as_required(["config"])
# The flags `privjax --help` lists (absl's --helpfull lists every library's too).
OWN_FLAGS = (
  "config",
  "workdir",
  "print_config",
  "compilation_cache",
  "cpu_devices",
  "distributed",
  "coordinator_address",
  "num_processes",
  "process_id",
  "coordinator_timeout",
)


def main(argv):
  try:
    _main(argv)
  except BaseException as e:  # noqa: B036 (a stop signal may surface as any exception)
    if isinstance(e, SystemExit):
      raise
    stop = _stop_reason(e)
    if stop is None:
      raise
    message, signum = stop
    print(f"privjax: {message}", file=sys.stderr)
    sys.exit(128 + signum)


_RESUME = "finished stages are kept in the workdir: re-run the same command to resume"
_STOPS_SEEN = []  # signals _on_stop_signal saw; the code they interrupted may swallow them


def _stop_reason(e: BaseException):
  """(message, signal number) when the run was stopped by SIGTERM or Ctrl-C, else None.

  Training stops itself with a checkpoint and raises Interrupted. Outside training the
  signal raises wherever Python happens to be, possibly inside a library that turns
  it into another exception while handling it (JAX's traceback filter once raised a
  TypeError there), so the whole exception chain is searched, and a SIGTERM or Ctrl-C
  the handler saw counts even if the code it interrupted swallowed its exception.
  """
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, Interrupted):
      return str(e), getattr(e, "signum", signal.SIGTERM)
    if isinstance(e, KeyboardInterrupt):
      return f"interrupted by Ctrl-C (SIGINT); {_RESUME}", signal.SIGINT
    e = e.__cause__ or e.__context__
  if _STOPS_SEEN and _STOPS_SEEN[-1] == signal.SIGINT:
    return f"interrupted by Ctrl-C (SIGINT); {_RESUME}", signal.SIGINT
  if _STOPS_SEEN:
    return f"stopped by SIGTERM; {_RESUME}", signal.SIGTERM
  return None


def _main(argv):
  if len(argv) > 1:
    _usage_error(f"unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.print_config:
    _print(config_lib.describe(_loaded_config(), sources=_config_sources()))
    return
  if FLAGS.workdir is None:  # (an empty --workdir= is refused by workdir.resolve)
    _usage_error("--workdir is required: the directory for checkpoints and the report")
  # SIGTERM and Ctrl-C outside decoder training (which saves a checkpoint first) stop the
  # run with one line; every finished stage is already in the workdir.
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, _on_stop_signal)
  logs.quiet_cli()
  parallel.use_cpu_cores(FLAGS.cpu_devices)  # before JAX starts its backends
  _start_distributed()  # before any JAX computation
  if FLAGS.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", FLAGS.compilation_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
  logging.info(
    "process %d of %d; local devices: %s",
    jax.process_index(),
    jax.process_count(),
    jax.local_devices(),
  )
  config = _loaded_config()
  workdir = FLAGS.workdir
  try:
    workdir = workdir_lib.resolve(workdir)  # a wrong workdir is refused before any work
    report = audit.run(config, workdir)
  except PrivjaxError as e:
    if _stop_reason(e) is not None:  # a stop signal that a guard wrapped: not the input's fault
      raise
    _usage_error(str(e))
  except Exception as e:
    full = _disk_full(e)
    if full is None:
      raise
    _usage_error(f"no space left on device writing {full or workdir}")
  if _STOPS_SEEN:  # a library swallowed the stop's exception: the run still stops here
    raise KeyboardInterrupt
  print(report_lib.summary_line(report, os.path.join(workdir, "report.json")))


def _loaded_config():
  try:
    config = FLAGS.config
    config.to_dict()  # a config file that failed to load raises on first use
  except (OSError, SyntaxError, AttributeError, ImportError) as e:
    _usage_error(f"cannot load the config file: {e}")
  return config


def _config_sources() -> list:
  """The config file and the config modules beside it that it imported, most specific first."""
  path = os.path.abspath(config_flags.get_config_filename(FLAGS["config"]))
  here = os.path.dirname(path)
  loaded = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
  return [path] + [
    f for f in loaded if f and os.path.dirname(os.path.abspath(f)) == here and f != path
  ]


def _on_stop_signal(signum, frame):
  _STOPS_SEEN.append(signum)
  if frame is not None and frame.f_code.co_name == "_xla_gc_callback":
    return  # Python ignores (and prints) what a gc callback raises: the record stops the run
  if signum == signal.SIGINT:
    raise KeyboardInterrupt
  raise Interrupted(f"stopped by SIGTERM; {_RESUME}")


def _disk_full(e: BaseException):
  """The file a full disk (or quota) stopped a write of ('' if unnamed), else None.

  privjax's own writes already raise a WorkdirError; this catches the rest (orbax
  checkpoints, written by orbax and TensorStore), which may wrap the OSError or only
  say it in the message.
  """
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
      return e.filename or ""
    if "No space left on device" in str(e):
      return ""
    e = e.__cause__ or e.__context__
  return None


def _start_distributed():
  explicit = {
    "coordinator_address": FLAGS.coordinator_address,
    "num_processes": FLAGS.num_processes,
    "process_id": FLAGS.process_id,
  }
  given = {k: v for k, v in explicit.items() if v is not None}
  if not (FLAGS.distributed or given):
    return
  n, i = given.get("num_processes"), given.get("process_id")
  if n is not None and n < 1:
    _usage_error(f"--num_processes must be >= 1, got {n}")
  if i is not None and (i < 0 or (n is not None and i >= n)):
    _usage_error(f"--process_id must be in [0, num_processes), got {i} with num_processes={n}")
  address = given.get("coordinator_address")
  if address and i:
    _wait_for_coordinator(address, FLAGS.coordinator_timeout)
  logging.info("joining a multi-process run: jax.distributed.initialize(%s)", given or "auto")
  try:
    jax.distributed.initialize(**given, initialization_timeout=FLAGS.coordinator_timeout)
  except (RuntimeError, ValueError, TypeError) as e:
    how = ", ".join(f"{k}={v}" for k, v in given.items()) or "auto-detected"
    _usage_error(f"could not start the multi-process run ({how}): {e}")


def _wait_for_coordinator(address: str, timeout: float):
  """Waits until process 0's coordinator accepts connections. JAX itself aborts the
  process with a stack trace when the coordinator never comes up; this says why."""
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    _usage_error(f"--coordinator_address must be HOST:PORT, got {address!r}")
  deadline = time.monotonic() + timeout
  while True:
    try:
      socket.create_connection((host, int(port)), timeout=5).close()
      return
    except OSError as e:
      if time.monotonic() > deadline:
        _usage_error(
          f"cannot reach the coordinator (process 0) at {address} after {timeout} s: "
          f"{e.strerror or e}; start process 0 with the same --coordinator_address"
        )
      time.sleep(0.5)


def _print(text: str) -> None:
  """Prints to stdout; a reader that stops early (`privjax --help | head`) is not an error."""
  try:
    print(text, flush=True)
  except BrokenPipeError:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _help() -> str:
  lines = [
    "privjax: audit how much a recognition model's feature vectors leak its images.",
    "",
    "usage: privjax --config=CONFIG.py --workdir=DIR [--config.FIELD=VALUE ...]",
    "       privjax --config=CONFIG.py --print_config   (every field, its value and meaning)",
    "",
    "  --config.FIELD=VALUE overrides one field of the config file (see --print_config).",
    "",
    "flags:",
  ]
  for name in OWN_FLAGS:
    flag = FLAGS[name]
    default = "" if flag.default is None else f" (default: {flag.default!r})"
    lines.append(f"  --{name}: {flag.help}{default}")
  lines += ["", "The README explains the verdict and every output; --helpfull lists library flags."]
  return "\n".join(lines)


def _parse_flags(argv):
  """absl's parser, with bad flags (unknown config keys, wrong types, a missing config
  file) as a one-line error and exit code 2 instead of a usage dump; --help lists
  privjax's own flags."""
  if any(a in ("--help", "-h", "-?", "--helpshort") for a in argv[1:]):
    _print(_help())
    sys.exit(0)
  try:
    return FLAGS(argv)
  except (KeyError, AttributeError) as e:  # ml_collections: an override of a missing key
    # A key inside a group raises an AttributeError wrapping the KeyError whose text
    # ("'name'\nDid you mean ...?") a top-level key raises directly.
    if isinstance(e, AttributeError) and isinstance(e.__context__, KeyError):
      e = e.__context__
    _usage_error(f"unknown config key {e.args[0] if e.args else e}")
  except flags.Error as e:
    _usage_error(_last_line(str(e)) if "Traceback (most recent call last)" in str(e) else str(e))
  except Exception as e:  # noqa: BLE001 (the config file runs while flags are parsed)
    _usage_error(f"cannot load the config file: {type(e).__name__}: {_last_line(str(e))}")


def _last_line(message: str) -> str:
  """The last non-empty line of a message (a wrapped traceback's own error line)."""
  lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
  return lines[-1] if lines else message


def _usage_error(message: str):
  one_line = "; ".join(line.strip() for line in message.strip().splitlines() if line.strip())
  print(f"privjax: error: {one_line}", file=sys.stderr)
  sys.exit(2)


def _config_imports(argv) -> None:
  """Lets a config file import its siblings (`from configs import default`) from any
  command: the working directory, and the directory above a config package, go first on
  the import path, as they do for `python launch.py` run from the repository."""
  paths = [os.getcwd()]
  for arg in argv[1:]:
    if arg.startswith("--config="):
      folder = os.path.dirname(os.path.abspath(arg.split("=", 1)[1].split(":", 1)[0]))
      if os.path.isfile(os.path.join(folder, "__init__.py")):
        paths.insert(0, os.path.dirname(folder))
  for path in reversed(paths):
    if path not in sys.path:
      sys.path.insert(0, path)


def console():
  """The `privjax` command (and `python -m privjax`, `python launch.py`)."""
  _config_imports(sys.argv)
  app.run(main, flags_parser=_parse_flags)
