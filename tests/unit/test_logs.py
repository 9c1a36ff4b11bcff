"""What privjax prints: its own lines once, every warning."""

import pytest


def test_quiet_keeps_privjax_lines_once_and_every_warning():
  import logging

  from privjax.runtime import logs

  quiet = logs.Quiet()

  def record(path, level, message):
    return logging.LogRecord("absl", level, path, 1, message, None, None)

  import os

  package = os.path.dirname(os.path.abspath(logs.__file__))
  own = os.path.join(package, "audit.py")
  assert quiet.filter(record(own, logging.INFO, "stage attacks ..."))
  assert not quiet.filter(record(own, logging.INFO, "stage attacks ..."))  # once
  assert not quiet.filter(record("/x/orbax/checkpoint/x.py", logging.INFO, "saved step 40"))
  assert quiet.filter(record("/x/jax/_src/xla_bridge.py", logging.WARNING, "no GPU"))
  assert quiet.filter(record(own, logging.WARNING, "a warning"))
  assert quiet.filter(record(own, logging.WARNING, "a warning"))  # warnings every time


def test_quiet_drops_third_party_lines_from_a_venv_inside_a_clone_named_privjax():
  import logging
  import os

  from privjax.runtime import logs

  quiet = logs.Quiet()
  package = os.path.dirname(os.path.dirname(os.path.abspath(logs.__file__)))  # privjax/
  clone = os.path.dirname(package)
  for path in (
    os.path.join(clone, ".venv/lib/python3.11/site-packages/orbax/checkpoint/manager.py"),
    "/home/u/privjax/.venv/lib/python3.11/site-packages/jax/_src/xla_bridge.py",
    "/home/u/privjax/privjax_extra/x.py",
  ):
    rec = logging.LogRecord("absl", logging.INFO, path, 1, "CheckpointManager created", None, None)
    assert not quiet.filter(rec), path


def test_a_library_traceback_is_hidden_below_verbosity_1_and_privjax_own_kept():
  import logging
  import sys

  from absl import logging as absl_logging

  from privjax.runtime import logs

  quiet = logs.Quiet()
  try:
    raise ValueError("RESOURCE_EXHAUSTED: Failed writing")
  except ValueError:
    exc_info = sys.exc_info()

  def record(path):
    return logging.LogRecord("absl", logging.ERROR, path, 1, "thread raised", None, exc_info)

  orbax = "/x/site-packages/orbax/checkpoint/_src/futures/future.py"
  own = logs._OWN + "audit.py"
  level = absl_logging.get_absl_logger().level
  try:
    absl_logging.get_absl_logger().setLevel(logging.INFO)
    assert not quiet.filter(record(orbax))  # its error reaches privjax as an exception
    assert quiet.filter(record(own))
    assert quiet.filter(logging.LogRecord("absl", logging.ERROR, orbax, 1, "no trace", None, None))
    absl_logging.get_absl_logger().setLevel(logging.DEBUG)  # --verbosity=1
    assert quiet.filter(record(orbax))
  finally:
    absl_logging.get_absl_logger().setLevel(level)


@pytest.mark.slow
def test_ignored_exceptions_and_dying_library_threads_print_only_at_verbosity_1():
  import gc
  import logging
  import sys
  import threading

  from absl import logging as absl_logging

  from privjax.runtime import logs

  class Closed:
    def __del__(self):
      raise RuntimeError("Event loop is closed")  # what TensorStore's callbacks hit

  def dies():
    raise OSError(28, "No space left on device")  # TensorBoard's writer thread on a full disk

  def library_failures():
    Closed()
    gc.collect()
    thread = threading.Thread(target=dies)
    thread.start()
    thread.join()

  printed = []  # what Python's hooks (here: recorders in their place) would print
  hooks = sys.unraisablehook, threading.excepthook
  logger, level = absl_logging.get_absl_logger(), absl_logging.get_absl_logger().level
  sys.unraisablehook = lambda u: printed.append(str(u.exc_value))
  threading.excepthook = lambda a: printed.append(str(a.exc_value))
  try:
    logger.setLevel(logging.INFO)
    with logs.library_tracebacks_hidden():
      library_failures()
    assert printed == []
    logger.setLevel(logging.DEBUG)  # --verbosity=1
    with logs.library_tracebacks_hidden():
      library_failures()
    assert sorted(printed) == ["Event loop is closed", "[Errno 28] No space left on device"]
    library_failures()  # outside: the previous hooks again
    assert len(printed) == 4
  finally:
    sys.unraisablehook, threading.excepthook = hooks
    logger.setLevel(level)


def _record(path, level, message, name="absl"):
  import logging

  return logging.LogRecord(name, level, path, 1, message, None, None)


def test_lines_read_time_source_and_message_and_name_a_library_not_privjax():
  import logging
  import re

  from privjax.runtime import logs

  own = logs._OWN + "audit.py"
  site = "/home/u/privjax/.venv/lib/python3.11/site-packages"
  lines = logs.Lines()
  shown = [
    lines.format(_record(own, logging.INFO, "stage attacks ...")),
    lines.format(_record(own, logging.WARNING, "too few images")),
    lines.format(_record(f"{site}/orbax/checkpoint/manager.py", logging.WARNING, "slow", "absl")),
    lines.format(_record(f"{site}/jax/_src/xla_bridge.py", logging.WARNING, "no GPU", "jax._src")),
    lines.format(_record("/elsewhere/mine.py", logging.ERROR, "bad", "absl")),
  ]
  clock = r"\d\d:\d\d:\d\d"
  assert re.fullmatch(rf"{clock} privjax: stage attacks \.\.\.", shown[0]), shown[0]
  assert re.fullmatch(rf"{clock} privjax: warning: too few images", shown[1]), shown[1]
  assert re.fullmatch(rf"{clock} orbax: warning: slow", shown[2]), shown[2]
  assert re.fullmatch(rf"{clock} jax: warning: no GPU", shown[3]), shown[3]
  assert re.fullmatch(rf"{clock} mine: error: bad", shown[4]), shown[4]


def test_the_command_lines_short_lines_replace_absls_prefix_on_its_handler(capsys):
  import logging
  import re

  from absl import logging as absl_logging

  from privjax.runtime import logs

  handler = absl_logging.get_absl_handler()
  before = handler.python_handler.formatter
  handler.setFormatter(absl_logging.PythonFormatter())  # absl's own (a CLI test may have run)
  previous = logs.short_lines()
  try:
    capsys.readouterr()
    handler.emit(_record(logs._OWN + "audit.py", logging.INFO, "stage scoring done in 0.6s"))
    shown = capsys.readouterr().err.splitlines()[-1]  # (after absl's note before flag parsing)
  finally:
    handler.setFormatter(before)
  assert re.fullmatch(r"\d\d:\d\d:\d\d privjax: stage scoring done in 0\.6s", shown), shown
  assert isinstance(previous, absl_logging.PythonFormatter)  # (what short_lines returned)
  assert "audit.py:1]" in previous.format(_record(logs._OWN + "audit.py", logging.INFO, "x"))
