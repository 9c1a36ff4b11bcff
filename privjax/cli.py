"""privjax command line: audit how much a recognition model's features leak its images.

  privjax --config=configs/default.py --workdir=runs/default
  privjax --config=configs/default.py --workdir=runs/x --config.attacks.decoder.num_steps=200
  privjax --config=configs/default.py --print_config   # every field, its value and meaning
  privjax --config=configs/default.py --workdir=runs/y \
    --config.attacks.mlp.type=mymod:mlp --config.attacks.mlp.hidden=256  # one more attacker

An entry given a type by flag (`--config.attacks.NAME.type=...`, a metric's
`--config.metrics.NAME.type=...`, a defense's `--config.defense.sweep.NAME.type=...`) is
added, or retyped, with the rest of its `--config.GROUP.NAME.FIELD=VALUE` flags as its
settings, by its family's rules: a type a user's module declares with
`privjax.attacks.register` gets its defaults and checks, as a built-in does.

The same command is `python -m privjax ...` and `python launch.py ...` (the repository's
entry point).

Multi-process (multi-host) runs start the same command in every process, with
`--distributed` (JAX detects the cluster: Cloud TPU, SLURM, ...) or the explicit
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`; see docs/scale.md,
"Running on many devices".

This is the only module that defines flags; the work is in privjax.audit.run. `run(argv)`
runs the command line in the calling process and returns its exit status (the tests use it).
Exit status: 0 done; 3 the release gate tripped (`--fail_on`: the verdict reached that
level; the report is written); 2 an error caused by the input (config, data, model,
workdir, a write the OS refused: a full disk, a file-size limit, a read-only file system,
...), in one line; 1 a bug (with its traceback); 143 SIGTERM (training stops with a
checkpoint first) and 130 Ctrl-C (SIGINT), with one line (see privjax.errors.Interrupted):
the signal received, whatever the code it interrupted turned it into. A signal that
arrives once the run has returned its report (while the summary is printed) stops
nothing: the run exits with its own status, 0 or 3, and one line says so.
"""

import _thread
import ast
import contextlib
import difflib
import faulthandler
import logging as python_logging
import os
import re
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence

import jax
import ml_collections
from absl import app, command_name, flags, logging
from jax.experimental.compilation_cache import compilation_cache
from ml_collections import config_flags

from privjax import audit, describe, levels
from privjax import config as config_lib
from privjax import settings as settings_lib
from privjax.data import splits as data_lib
from privjax.errors import Interrupted, PrivjaxError
from privjax.report import files as report_lib
from privjax.runtime import logs, parallel
from privjax.runtime import workdir as workdir_lib

__all__ = ["GATE_TRIPPED", "OWN_FLAGS", "console", "main", "run"]

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
flags.DEFINE_string(
  "fail_on",
  "",
  "Release gate: exit with status 3 (after writing the report) when the verdict reaches this "
  "level, 'medium' or 'high' (any case); '' never fails on the verdict.",
)
flags.mark_flags_as_required(["config"])
# The flags `privjax --help` lists (absl's --helpfull lists every library's too).
OWN_FLAGS = (
  "config",
  "workdir",
  "fail_on",
  "print_config",
  "compilation_cache",
  "cpu_devices",
  "distributed",
  "coordinator_address",
  "num_processes",
  "process_id",
  "coordinator_timeout",
)


def main(argv: list[str]) -> None:
  """The command line after its flags are parsed (absl's `main`): runs it and exits with its
  status; a stop signal exits 128 + its number with one line."""
  try:
    with logs.library_tracebacks_hidden():
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


GATE_TRIPPED = 3  # the exit status when --fail_on's level is reached (errors are 2)
_RESUME = "finished stages are kept in the workdir: re-run the same command to resume"
_STOPS_SEEN = []  # signals _on_stop_signal saw; the code they interrupted may swallow them
_LATE_STOPS = []  # signals that arrived after the run returned its report: they stop nothing
_COMMAND = []  # the running command, as a shell line (the report's "what to try next")
# {(group, name): {field: VALUE}}: the flags of the plug-in entries the command line types
# (`--config.attacks.mlp.type=...`), applied to the loaded config (`_entry_flags`).
_ENTRY_FLAGS = {}


def _stop_reason(e: BaseException):
  """(message, signal number) when the run was stopped by SIGTERM or Ctrl-C, else None.

  The signal the handler recorded decides first: a signal raises wherever Python happens
  to be, possibly inside code that swallows its exception or turns it into another
  (JAX's traceback filter once raised a TypeError there; JAX's compilation cache once
  turned it into a warning), so what reaches `main` may be anything. Without a record
  (training installs its own handler, and stops itself with a checkpoint), the exception
  chain is searched for the Interrupted or KeyboardInterrupt the signal raised. An
  Interrupted for the recorded signal keeps its own message (training names its
  checkpoint).
  """
  chain, seen = [], set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    chain.append(e)
    e = e.__cause__ or e.__context__
  if _STOPS_SEEN:
    signum = _STOPS_SEEN[-1]
    own = [x for x in chain if isinstance(x, Interrupted) and x.signum == signum]
    return (str(own[0]) if own else _stop_message(signum)), signum
  for x in chain:
    if isinstance(x, Interrupted):
      return str(x), x.signum
    if isinstance(x, KeyboardInterrupt):
      return _stop_message(signal.SIGINT), signal.SIGINT
  return None


def _stop_message(signum: int) -> str:
  if signum == signal.SIGINT:
    return f"interrupted by Ctrl-C (SIGINT); {_RESUME}"
  return f"stopped by {signal.Signals(signum).name}; {_RESUME}"


def _main(argv):
  if len(argv) > 1:
    _usage_error(f"unexpected arguments: {' '.join(argv[1:])}")
  gate = _gate(FLAGS.fail_on)  # (--print_config too: a flag it would refuse is refused now)
  if FLAGS.print_config:
    _print(describe.describe(_loaded_config(), sources=_config_sources()))
    return
  if FLAGS.workdir is None:  # (an empty --workdir= is refused by workdir.resolve)
    _usage_error("--workdir is required: the directory for checkpoints and the report")
  # SIGTERM and Ctrl-C outside decoder training (which saves a checkpoint first) stop the
  # run with one line; every finished stage is already in the workdir.
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, _on_stop_signal)
  logs.quiet_cli()
  logs.short_lines()  # `HH:MM:SS privjax: message`, as the Python API's lines
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
    data_lib.check_save_chips(config.data.get("save_chips", ""), workdir=workdir)
    report = audit.run(config, workdir, command=_COMMAND[0] if _COMMAND else None)
  except PrivjaxError as e:
    if _stop_reason(e) is not None:  # a stop signal that a guard wrapped: not the input's fault
      raise
    _usage_error(str(e))
  except Exception as e:
    refused = _write_failure(e, workdir)
    if refused is None:
      raise
    _usage_error(str(refused))
  if _STOPS_SEEN:  # code the signal interrupted swallowed it: what it returned is not trusted
    raise Interrupted(_stop_message(_STOPS_SEEN[-1]), signum=_STOPS_SEEN[-1])
  # The report is complete and published: a signal from now on stops nothing.
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, _on_late_signal)
  tripped = gate is not None and levels.reaches(report.risk_level, gate)
  print(report_lib.summary_line(report, os.path.join(workdir, "report.json"), gate=gate))
  for line in report_lib.warning_lines(report):
    print(line)
  status = GATE_TRIPPED if tripped else 0
  if _LATE_STOPS:
    name = signal.Signals(_LATE_STOPS[0]).name
    print(
      f"privjax: {name} arrived after the report was written; it stops nothing: exit status "
      f"{status}, the run's own",
      file=sys.stderr,
    )
  sys.exit(status)


def _gate(fail_on: str) -> str | None:
  """--fail_on's level ('medium' or 'high', any case), or None for no gate."""
  level = fail_on.strip().lower()
  if level not in ("", "medium", "high"):
    _usage_error(f"--fail_on must be 'medium' or 'high' (or '' for no gate), got {fail_on!r}")
  return level or None


def _loaded_config():
  path = config_flags.get_config_filename(FLAGS["config"])
  if path and not os.path.isfile(path.split(":", 1)[0]):
    shipped = [name for name, _ in _shipped_configs()]
    close = difflib.get_close_matches(os.path.normpath(path), shipped, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    listed = ", ".join(shipped) or "none found beside this privjax"
    _usage_error(
      f"config file {path!r} not found (from {os.getcwd()}); {hint}the shipped configs: {listed}"
    )
  try:
    config = FLAGS.config
    config.to_dict()  # a config file that failed to load raises on first use
  except (OSError, SyntaxError, AttributeError, ImportError) as e:
    _usage_error(f"cannot load the config file: {e}")
  try:
    config = config_lib.named(config)  # a plug-in the file gives as a function: its path
    for (group, name), given in _ENTRY_FLAGS.items():
      current = _entry(config, group, name)  # its fields' types read the flags, if it stays
      # a new type replaces the entry's settings; "off" (or the same type) keeps them, as
      # setting the field from Python does
      if current is None or given["type"] not in (current.get("type", name), "off"):
        current = {}
      fields = {field: _flag_value(text, current.get(field)) for field, text in given.items()}
      settings_lib.set_entry(config, group, name, _nested(fields))
  except PrivjaxError as e:
    _usage_error(str(e))
  return config


def _entry(config, group: str, name: str):
  """config.<group>.<name> (None when the config has no such entry or group)."""
  node = config
  for part in (*group.split("."), name):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return None
    node = node[part]
  return node


def _nested(fields: dict) -> dict:
  """{"a.b": 1, "c": 2} as {"a": {"b": 1}, "c": 2}: an entry's nested settings."""
  out = {}
  for dotted, value in fields.items():
    *parents, leaf = dotted.split(".")
    node = out
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return out


def _flag_value(text: str, like=None):
  """An entry flag's VALUE as ml_collections reads a field's: by the type of the value the
  field holds (`like`), or, for a field the entry does not have yet (None), as a Python
  literal ("256", "0.5", "(1, 2)", "true") and else as the string itself ("mymod:mlp")."""
  if isinstance(like, str):
    return text
  if text.lower() in ("true", "false") and (like is None or isinstance(like, bool)):
    return text.lower() == "true"
  try:
    value = ast.literal_eval(text)
  except (SyntaxError, ValueError):
    return text
  if isinstance(like, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if isinstance(like, tuple) and isinstance(value, list):
    return tuple(value)
  return value


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
  if _in_gc_callback(frame):
    # Python ignores (and prints) what a gc callback raises: the signal is delivered again
    # a moment later, outside the callback (the record stops the run in any case).
    timer = threading.Timer(_REDELIVER_S, _redeliver, (signum,))
    timer.daemon = True
    timer.start()
    return
  if signum == signal.SIGINT:
    raise KeyboardInterrupt
  raise Interrupted(_stop_message(signum), signum=signum)


_REDELIVER_S = 0.05  # a gc callback ends within microseconds


def _redeliver(signum: int) -> None:
  """Delivers `signum` to the main thread again, while the run still handles it."""
  if signal.getsignal(signum) is _on_stop_signal:
    _thread.interrupt_main(signum)


def _in_gc_callback(frame) -> bool:
  """Whether `frame` runs inside JAX's gc callback (also this handler, called again there)."""
  while frame is not None:
    if frame.f_code.co_name == "_xla_gc_callback":
      return True
    frame = frame.f_back
  return False


def _on_late_signal(signum, frame):
  del frame
  _LATE_STOPS.append(signum)


def _write_failure(e: BaseException, workdir: str):
  """The one-line WorkdirError for a write the OS refused somewhere in `e`'s chain
  (workdir.WRITE_ERRNOS: a full disk or quota, a file-size limit, a read-only file system,
  permissions, an I/O error), else None.

  privjax's own writes already raise a WorkdirError; this catches the rest (orbax
  checkpoints, written by orbax and TensorStore), which may wrap the OSError or only
  say it in the message (TensorStore: 'Failed writing: "<path>": ... File too large
  [os_error_code='27']'). The file is the one named, else the workdir.
  """
  seen, found = set(), []
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    text = str(e)
    if isinstance(e, OSError) and e.errno in workdir_lib.WRITE_ERRNOS:
      found.append((e.errno, e.filename, e.strerror))
    elif re.search("writ", text, re.IGNORECASE) and (code := _errno_in(text)):
      named = re.search(r'Failed writing: "([^"]+)"', text) or re.search(
        r'local file "([^"]+)"', text
      )
      found.append((code, named and named.group(1), None))
    e = e.__cause__ or e.__context__
  if not found:
    return None
  code = found[0][0]
  path = next((str(name) for _, name, _ in found if name), "") or workdir
  return workdir_lib.write_error(code, path, found[0][2])


def _errno_in(text: str) -> int | None:
  """The errno of WRITE_ERRNOS a library's message reports, by its code or its words."""
  code = re.search(r"os_error_code='?(\d+)", text)
  if code and int(code.group(1)) in workdir_lib.WRITE_ERRNOS:
    return int(code.group(1))
  return next((c for c in workdir_lib.WRITE_ERRNOS if os.strerror(c) in text), None)


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
    "  --config.FIELD=VALUE overrides one field of the config file (see --print_config);",
    "  --config.attacks.NAME.type=package.module:function adds an attacker (its settings:",
    "  --config.attacks.NAME.FIELD=VALUE), as --config.metrics.NAME.type and",
    "  --config.defense.sweep.NAME.type add a metric and a defense.",
    "",
    "flags:",
  ]
  for name in OWN_FLAGS:
    flag = FLAGS[name]
    default = "" if flag.default is None else f" (default: {flag.default!r})"
    lines.append(f"  --{name}: {flag.help}{default}")
  shipped = _shipped_configs()
  if shipped:
    lines += ["", "configs shipped with privjax (give one as --config):"]
    width = max(len(name) for name, _ in shipped)
    lines += [f"  {name:<{width}}  {summary}" for name, summary in shipped]
  lines += [
    "",
    "README.md: what the verdict means and a five-minute tour; docs/: every field, output and",
    "method. --helpfull lists library flags.",
  ]
  return "\n".join(lines)


def _shipped_configs() -> list:
  """[(path, its docstring's first line)] of the configs beside this privjax (a checkout or
  an editable install: `configs/` next to the package), paths relative to the working
  directory when under it."""
  here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  if not os.path.isdir(here):
    return []
  found = []
  for name in sorted(os.listdir(here)):
    path = os.path.join(here, name)
    if not name.endswith(".py") or name.startswith("_"):
      continue
    try:
      with open(path, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    except (OSError, SyntaxError, ValueError):
      continue
    relative = os.path.relpath(path)
    found.append((path if relative.startswith("..") else relative, doc.split("\n")[0]))
  return found


def _parse_flags(argv):
  """absl's parser, with bad flags (unknown config keys, wrong types, a missing config
  file) as a one-line error and exit code 2 instead of a usage dump; --help lists
  privjax's own flags."""
  if any(a in ("--help", "-h", "-?", "--helpshort") for a in argv[1:]):
    _print(_help())
    sys.exit(0)
  argv, sys_argv = _entry_flags(_moved_flags(argv)), sys.argv
  sys.argv = argv  # ml_collections finds the --config.FIELD overrides in sys.argv
  try:
    return FLAGS(argv)
  except (KeyError, AttributeError) as e:  # ml_collections: an override of a missing key
    # A key inside a group raises an AttributeError wrapping the KeyError whose text
    # ("'name'\nDid you mean ...?") a top-level key raises directly.
    if isinstance(e, AttributeError) and isinstance(e.__context__, KeyError):
      e = e.__context__
    _usage_error(f"unknown config key {e.args[0] if e.args else e}")
  except flags.Error as e:
    if "--config must have a value other than None" in str(e):
      _usage_error(
        "the config file's get_config() returned None: expected an ml_collections.ConfigDict "
        "(start from configs/default.py's get_config())"
      )
    _usage_error(
      _numpy_scalar(str(e))
      or (_last_line(str(e)) if "Traceback (most recent call last)" in str(e) else str(e))
    )
  except Exception as e:  # noqa: BLE001 (the config file runs while flags are parsed)
    _usage_error(
      _numpy_scalar(str(e))
      or f"cannot load the config file: {type(e).__name__}: {_last_line(str(e))}"
    )
  finally:
    sys.argv = sys_argv


# ml_collections' refusal of a numpy scalar assigned to a typed field in a config file.
_NUMPY_IN_FIELD = re.compile(
  r"Could not override field '([^']+)'.*?\. (.*) is of original type <class '(numpy\.\w+)'> "
  r"and cannot be casted to type <class '(\w+)'>"
)


def _numpy_scalar(message: str) -> str | None:
  """One line for ml_collections' refusal of a numpy scalar (np.float32(0.1), np.int64(3))
  that a config file assigns to a field holding a Python number, else None. (A config
  file runs inside ml_collections' flag parser, so its own assignment raises.)"""
  found = _NUMPY_IN_FIELD.search(message)
  if found is None:
    return None
  field, value, got, expected = found.groups()
  return (
    f"the config file sets field {field!r} to {got} {value}: expected a Python {expected} "
    f"(a config field holds Python numbers, not numpy scalars); write {expected}(...) around "
    "the value"
  )


def _moved_flags(argv):
  """argv with the flags of config keys that moved (settings_lib.moved_key) renamed, and one
  warning line naming each new key."""
  out, moved = [], []
  for arg in argv:
    name, eq, value = arg.partition("=")
    new = settings_lib.moved_key(name[len("--config.") :]) if name.startswith("--config.") else None
    if new is None:
      out.append(arg)
      continue
    out.append(f"--config.{new}{eq}{value}")
    moved.append(f"{name} -> --config.{new}")
  if moved:
    logging.warning("deprecated config flags, read as their new keys: %s", ", ".join(moved))
  return out


def _entry_flags(argv):
  """argv without the flags of each plug-in entry the command line gives a type
  (`--config.attacks.mlp.type=mymod:mlp`, and then every `--config.attacks.mlp.FIELD=VALUE`),
  which go to _ENTRY_FLAGS: `_loaded_config` adds or changes each such entry by its
  family's rules (settings.set_entry), as a config file would. ml_collections alone changes
  only the fields a config file has: it refuses an attacker, metric or defense the file
  does not name."""
  groups = sorted(settings_lib.entry_groups(), key=len, reverse=True)
  found = []  # (index in argv, group, name, field, value)
  for i, arg in enumerate(argv[1:], 1):
    key, eq, value = arg.partition("=")
    for group in groups:
      prefix = f"--config.{group}."
      name, dot, field = key[len(prefix) :].partition(".")
      if key.startswith(prefix) and name and dot and field:
        found.append((i, group, name, field, value if eq else "true"))
        break
  typed = {(group, name) for _, group, name, field, _ in found if field == "type"}
  taken = set()
  _ENTRY_FLAGS.clear()
  for i, group, name, field, value in found:
    if (group, name) in typed:
      _ENTRY_FLAGS.setdefault((group, name), {})[field] = value
      taken.add(i)
  return [arg for i, arg in enumerate(argv) if i not in taken]


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


# The JAX settings --compilation_cache changes.
_CACHE_SETTINGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")


def run(argv: Sequence[str]) -> int:
  """Runs the command line `argv` (argv[0]: the program's name) in this process.

  What the `privjax` command does, without a new process: it prints what the command
  prints (to sys.stdout, sys.stderr and absl's log handler) and returns the status the
  command exits with: 0 done (or --help), 3 the release gate tripped, 2 bad input, 130 /
  143 stopped by Ctrl-C / SIGTERM. An error that is not the input's fault propagates (the
  command prints its traceback and exits 1).

  Each call starts from the flags' defaults. What the run changes in this process is put
  back before it returns: the flags (unparsed, and the --config.FIELD flags parsing defined
  removed), absl's handler on the root logger and its filters, the logging levels, the
  SIGTERM and SIGINT handlers, JAX's compilation-cache settings, and sys.path. Not put back:
  the modules the run imported (the config file's siblings, a user's model module), and
  what JAX fixes when it starts (the device count: whatever this process has).
  """
  argv = list(argv)
  app.define_help_flags()  # --helpfull and the like (once; they stay defined)
  root, absl_logger = python_logging.getLogger(), logging.get_absl_logger()
  handler = logging.get_absl_handler()
  flag_names, path = set(FLAGS), list(sys.path)
  handlers, filters = list(root.handlers), list(handler.filters)
  levels = root.level, absl_logger.level
  stop_handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  cache = {name: getattr(jax.config, name) for name in _CACHE_SETTINGS}
  FLAGS.unparse_flags()
  _STOPS_SEEN.clear()
  _LATE_STOPS.clear()
  _COMMAND[:] = ["privjax " + shlex.join(str(a) for a in argv[1:])]
  try:
    # What absl's app.run sets up, repeatably: its log handler on the root logger, the
    # flags parsed, --verbosity raised to INFO unless given.
    _config_imports(argv)
    logging.use_absl_handler()
    try:
      args = _parse_flags(argv)
      if FLAGS.only_check_args:
        return 0
      if FLAGS["verbosity"].using_default_value:
        FLAGS.verbosity = 0
      main(args)
    except SystemExit as e:  # sys.exit(status): None is 0, a message is printed and 1
      if e.code is None or isinstance(e.code, int):
        return e.code or 0
      print(e.code, file=sys.stderr)
      return 1
    return 0
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    _STOPS_SEEN.clear()
    _LATE_STOPS.clear()
    _COMMAND.clear()
    _ENTRY_FLAGS.clear()
    FLAGS.unparse_flags()  # (before the levels: it resets --verbosity)
    for name in set(FLAGS) - flag_names:
      delattr(FLAGS, name)
    for h in set(root.handlers) - set(handlers):
      root.removeHandler(h)
    for h in handlers:
      root.addHandler(h)  # (a no-op for those still there)
    for f in set(handler.filters) - set(filters):
      handler.removeFilter(f)
    root.setLevel(levels[0])
    absl_logger.setLevel(levels[1])
    for signum, previous in stop_handlers.items():
      signal.signal(signum, previous)
    sys.path[:] = path
    if any(getattr(jax.config, name) != value for name, value in cache.items()):
      for name, value in cache.items():
        jax.config.update(name, value)
      compilation_cache.reset_cache()  # the next compilation reads the settings again


def console() -> None:
  """The `privjax` command (and `python -m privjax`, `python launch.py`)."""
  # As absl's app.run: its log handler for the process's life (what logs at exit too),
  # and a crash in native code prints Python's stack.
  command_name.make_process_name_useful()
  logging.use_absl_handler()
  logs.quiet_process()  # library tracebacks hidden, also those printed at exit
  with contextlib.suppress(Exception):
    faulthandler.enable()
  sys.exit(run(sys.argv))
