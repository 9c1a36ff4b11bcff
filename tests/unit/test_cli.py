"""The command line's stop handling as units: a stop signal is found whatever exception it
became. (Whole command-line runs are in tests/e2e.)"""

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
