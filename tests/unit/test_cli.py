"""The command line's stop handling as units: a stop signal is found whatever exception it
became. (Whole command-line runs are in tests/e2e.)"""

import pathlib

import pytest

from privjax import cli


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

  from privjax.errors import Interrupted, ModelError

  # What CI saw: SIGTERM raised inside jax.jit's signature inspection, and JAX's
  # traceback filter raising a TypeError while handling it.
  e = _raised_while_handling(Interrupted("stopped by SIGTERM; resume"), TypeError("lineno None"))
  assert cli._stop_reason(e) == ("stopped by SIGTERM; resume", signal.SIGTERM)
  e = _raised_while_handling(KeyboardInterrupt(), ModelError("embed_fn failed"))
  message, signum = cli._stop_reason(e)
  assert signum == signal.SIGINT and message.startswith("interrupted by Ctrl-C")
  assert cli._stop_reason(_raised_while_handling(ValueError(), TypeError())) is None


def test_a_stop_the_interrupted_code_swallowed_still_stops_the_run(monkeypatch):
  import signal

  # A Ctrl-C whose KeyboardInterrupt a library caught (CI once saw a run finish, exit 0,
  # after SIGINT): the handler's record still decides, and a finished run exits 130.
  for signum, start in ((signal.SIGINT, "interrupted by Ctrl-C"), (signal.SIGTERM, "stopped by")):
    monkeypatch.setattr(cli, "_STOPS_SEEN", [])
    with pytest.raises((KeyboardInterrupt, cli.Interrupted)):
      cli._on_stop_signal(signum, None)
    message, got = cli._stop_reason(ValueError("unrelated"))
    assert got == signum and message.startswith(start)


def test_help_lists_the_shipped_configs_with_their_first_lines():
  text = cli._help()
  assert "configs shipped with privjax" in text
  for name in ("default", "folder", "npz", "defense_sweep"):
    assert f"configs/{name}.py" in text
  assert "Your own images: a folder of PNG/JPEG files" in text
  assert "configs/__init__.py" not in text


# --- Signals: the exit status names the signal received ---------------------------------


def test_the_recorded_signal_decides_over_the_exception_that_reached_main(monkeypatch):
  import signal

  from privjax.errors import Interrupted

  # What issue 36 saw: a SIGTERM swallowed during the whitebox stage, then a KeyboardInterrupt
  # (the old fallback) reaching main: SIGTERM, not "Ctrl-C (SIGINT)".
  monkeypatch.setattr(cli, "_STOPS_SEEN", [signal.SIGTERM])
  message, signum = cli._stop_reason(KeyboardInterrupt())
  assert signum == signal.SIGTERM and message.startswith("stopped by SIGTERM;"), message
  # An Interrupted for the recorded signal keeps its own words (training names its checkpoint).
  e = _raised_while_handling(
    Interrupted("stopped by SIGTERM at decoder step 40; checkpoint saved"), TypeError()
  )
  assert cli._stop_reason(e) == ("stopped by SIGTERM at decoder step 40; checkpoint saved", 15)
  monkeypatch.setattr(cli, "_STOPS_SEEN", [signal.SIGINT])
  assert cli._stop_reason(Interrupted("stopped by SIGTERM"))[1] == signal.SIGINT
  # Without a record (training's own handler), the signal the exception carries.
  monkeypatch.setattr(cli, "_STOPS_SEEN", [])
  e = Interrupted("stopped by SIGINT at decoder step 3", signum=signal.SIGINT)
  assert cli._stop_reason(e) == ("stopped by SIGINT at decoder step 3", signal.SIGINT)


def test_a_stop_passes_every_except_exception_on_its_way():
  import types

  import jax.numpy as jnp

  from privjax.attacks import base, whitebox
  from privjax.errors import Interrupted

  assert not issubclass(Interrupted, Exception)

  def embed(params, images):  # the signal lands while whitebox probes for a gradient
    raise Interrupted("stopped by SIGTERM; resume")

  model = types.SimpleNamespace(embed=embed, params=None)
  with pytest.raises(Interrupted):  # not base.Skipped("... not differentiable JAX ...")
    whitebox._check_differentiable(model, (8, 8, 1))
  # (while the model that is differentiable is not skipped)
  whitebox._check_differentiable(
    types.SimpleNamespace(embed=lambda p, x: jnp.sum(x, axis=(1, 2)), params=None), (8, 8, 1)
  )
  assert issubclass(base.Skipped, Exception)


def test_a_stop_inside_jaxs_compilation_cache_read_is_not_turned_into_a_warning(monkeypatch):
  from jax._src import compilation_cache, compiler

  from privjax.errors import Interrupted

  def interrupted(*args, **kwargs):  # what issue 36's swallowed SIGTERM went through
    raise Interrupted("stopped by SIGTERM; resume")

  monkeypatch.setattr(compilation_cache, "get_executable_and_time", interrupted)
  with pytest.raises(Interrupted):
    compiler._cache_read("jit_init", "key", None, None, None)


def test_a_stop_landing_in_jaxs_gc_callback_is_raised_just_after_it(monkeypatch):
  import signal
  import sys
  import time

  monkeypatch.setattr(cli, "_STOPS_SEEN", [])
  previous = signal.signal(signal.SIGTERM, cli._on_stop_signal)
  try:

    def _xla_gc_callback():  # Python ignores what a gc callback raises: it must not raise
      cli._on_stop_signal(signal.SIGTERM, sys._getframe())
      return "returned"

    assert _xla_gc_callback() == "returned"
    assert cli._STOPS_SEEN == [signal.SIGTERM]
    with pytest.raises(cli.Interrupted, match="stopped by SIGTERM"):
      deadline = time.monotonic() + 10
      while time.monotonic() < deadline:  # the run going on: the signal comes again
        time.sleep(0.01)
  finally:
    signal.signal(signal.SIGTERM, previous)


# --- --fail_on --------------------------------------------------------------------------


@pytest.mark.parametrize("given,level", [("HIGH", "high"), ("Medium", "medium"), ("", None)])
def test_fail_on_is_read_in_any_case(given, level):
  assert cli._gate(given) == level


def test_a_bad_fail_on_is_one_line_and_exit_2(capsys):
  with pytest.raises(SystemExit) as e:
    cli._gate("severe")
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err == (
    "privjax: error: --fail_on must be 'medium' or 'high' (or '' for no gate), got 'severe'\n"
  )


# --- Writes the OS refuses: one line naming the file ----------------------------------

WRITE_FAULTS = [
  ("ENOSPC", "no space left on device writing {path}"),
  ("EDQUOT", "disk quota exceeded writing {path}"),
  ("EFBIG", "file too large writing {path}: a file-size limit (see `ulimit -f`)"),
  ("EROFS", "cannot write {path}: Read-only file system"),
  ("EACCES", "cannot write {path}: Permission denied"),
  ("EIO", "cannot write {path}: Input/output error"),
]


@pytest.mark.parametrize("name,expected", WRITE_FAULTS, ids=[f[0] for f in WRITE_FAULTS])
def test_a_write_the_os_refused_in_a_library_is_one_line_naming_the_file(name, expected):
  import errno
  import os

  code = getattr(errno, name)
  path = "/runs/a/checkpoints/decoder/20.orbax-checkpoint-tmp/ocdbt.process_0/d/2e01"
  # orbax: the OSError wrapped by the library's own exception
  wrapped = _raised_while_handling(OSError(code, os.strerror(code), path), RuntimeError("save"))
  # TensorStore: only the message says it
  said = ValueError(
    f'OUT_OF_RANGE: Error writing "x" in OCDBT database: Failed writing: "{path}": Failed '
    f"to write 212283 bytes to file 5: {os.strerror(code)} [os_error_code='{code}']"
  )
  for e in (wrapped, said):
    error = cli._write_failure(e, "/runs/a")
    assert error is not None and str(error).startswith(expected.format(path=path)), error
    assert "\n" not in str(error)
  unnamed = cli._write_failure(RuntimeError(f"error writing: {os.strerror(code)}"), "/runs/a")
  assert str(unnamed).startswith(expected.format(path="/runs/a"))


def test_other_failures_are_not_taken_for_a_refused_write():
  import errno

  assert cli._write_failure(ValueError("shapes (3,) and (4,) differ"), "/w") is None
  assert cli._write_failure(OSError(errno.ECONNREFUSED, "Connection refused"), "/w") is None
  # The words of a refused write in a message that is not about writing (a read).
  assert cli._write_failure(RuntimeError("reading /x: Permission denied"), "/w") is None


# --- Config files -------------------------------------------------------------------------


def test_a_numpy_scalar_in_a_config_file_is_one_line_saying_what_to_write():
  import ml_collections
  import numpy as np

  c = ml_collections.ConfigDict({"seed": 0, "attacks": {"decoder": {"learning_rate": 1e-3}}})
  for assign in (
    lambda: setattr(c, "seed", np.int64(3)),
    lambda: setattr(c.attacks.decoder, "learning_rate", np.float32(0.5)),
  ):
    with pytest.raises(TypeError) as e:
      assign()  # what ml_collections raises inside the user's get_config()
    assert cli._numpy_scalar("Traceback (most recent call last):\n ...\nTypeError: " + str(e.value))
  assert cli._numpy_scalar(
    "TypeError: Could not override field 'seed' (reference). 3 is of original type "
    "<class 'numpy.int64'> and cannot be casted to type <class 'int'>"
  ) == (
    "the config file sets field 'seed' to numpy.int64 3: expected a Python int (a config field "
    "holds Python numbers, not numpy scalars); write int(...) around the value"
  )
  assert cli._numpy_scalar("TypeError: 'x' is of original type <class 'str'> and ...") is None


# --- Plug-in entries by import path, from the command line ------------------------------

SMOKE = str(pathlib.Path(__file__).resolve().parents[2] / "configs" / "smoke.py")
DECLARED = "tests.unit.test_plugins:declared"  # registered with defaults, a check, checkpoints


def _run(capsys, *flags):
  code = cli.run(["privjax", f"--config={SMOKE}", *flags])
  out = capsys.readouterr()
  return code, out.out.splitlines(), out.err.strip().splitlines()


def test_the_command_line_adds_plugins_by_import_path_with_their_settings(capsys):
  code, lines, err = _run(
    capsys,
    "--print_config",
    f"--config.attacks.mine.type={DECLARED}",
    "--config.attacks.mine.hidden=8",
    "--config.attacks.ridge.type=off",
    "--config.attacks.decoder.num_steps=7",  # an entry the file has: as before
    "--config.metrics.close.type=tests.unit.toy_plugins:mean_abs_error",
    "--config.metrics.close.high=0.1",
    "--config.defense.sweep.scaled.type=tests.unit.toy_plugins:scale",
    "--config.defense.sweep.scaled.strengths=(0.5, 1.0)",
  )
  assert code == 0, err
  shown = {line.split(" = ")[0]: line.split(" = ", 1)[1].split("  # ")[0] for line in lines}
  assert shown["attacks.mine.type"] == repr(DECLARED)
  assert shown["attacks.mine.hidden"] == "8" and shown["attacks.mine.gain"] == "1.0"  # declared
  # "off" keeps the entry's settings, as setting the field from Python does
  assert (
    shown["attacks.ridge.type"] == "'off'" and shown["attacks.ridge.num_features"] == "128"
  )  # smoke's
  assert shown["attacks.decoder.num_steps"] == "7"
  assert shown["metrics.close.high"] == "0.1" and shown["metrics.close.medium"] == "0.0"
  assert shown["defense.sweep.scaled.strengths"] == "(0.5, 1.0)"
  assert shown["defense.sweep.scaled.param"] == "'strength'"


def test_a_plugin_entrys_bad_flag_is_one_line_and_exit_2(capsys, tmp_path):
  code, _, err = _run(
    capsys, "--print_config", f"--config.attacks.mine.type={DECLARED}", "--config.attacks.mine.x=1"
  )
  assert code == 2
  assert (
    err[-1] == "privjax: error: unknown config key 'attacks.mine.x'; known keys: ['gain', 'hidden']"
  )
  # Without its type, a new entry is an unknown key, as before.
  code, _, err = _run(capsys, "--print_config", "--config.attacks.mine.hidden=8")
  assert code == 2 and err[-1] == "privjax: error: unknown config key 'mine'"
  # A type that does not import is refused before any work.
  code, _, err = _run(
    capsys, f"--workdir={tmp_path / 'wd'}", "--config.attacks.mine.type=no_such_module:mlp"
  )
  assert code == 2
  assert err[-1].startswith(
    "privjax: error: config.attacks.mine.type='no_such_module:mlp': cannot import module "
    "'no_such_module'"
  )


@pytest.mark.parametrize(
  "text,like,value",
  [
    ("256", None, 256),
    ("0.5", None, 0.5),
    ("(1, 2)", None, (1, 2)),
    ("true", None, True),
    ("mymod:mlp", None, "mymod:mlp"),
    ("3", 1.0, 3.0),
    ("3", "", "3"),
    ("[1, 2]", (), (1, 2)),
    ("False", True, False),
  ],
)
def test_a_plugin_entrys_flag_values_are_read_as_ml_collections_reads_a_field(text, like, value):
  got = cli._flag_value(text, like)
  assert got == value and type(got) is type(value)
