"""What privjax prints while it runs: its own progress, each message once, and warnings.

The command line and the Python API show the same lines: stage starts and ends, training
steps with images/s and ETA, the verdict, each as `HH:MM:SS privjax: message` (`Lines`;
`short_lines` puts it on absl's handler in place of absl's prefix). Third-party INFO
chatter a user cannot act on (orbax's per-save lines, JAX's backend probing) is dropped;
every WARNING is kept, under its library's name.

A library's tracebacks are not shown either (at --verbosity=1 they are): an error a
library logs with its traceback from a background thread (orbax's checkpoint threads on a
full disk), and the exceptions Python can only print and ignore (TensorStore's callbacks
into a closed asyncio loop, after a damaged checkpoint or a failed save). What went wrong
reaches privjax as an exception and is reported in one line; a successful run prints no
traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

from absl import logging as absl_logging

__all__ = [
  "Lines",
  "Quiet",
  "hide_library_tracebacks",
  "library_tracebacks_hidden",
  "progress",
  "quiet_cli",
  "quiet_process",
  "short_lines",
]

# privjax's own source files: the package's directory, not any path with a "privjax"
# folder in it (a clone named privjax holds .venv/.../orbax too, and orbax logs through
# absl's logger as privjax does, so the logger's name cannot tell them apart).
_OWN = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # privjax/


class Quiet(logging.Filter):
  """Keeps warnings from anyone and privjax's own INFO lines, each distinct message once."""

  def __init__(self):
    super().__init__()
    self._seen = set()

  def filter(self, record: logging.LogRecord) -> bool:
    if not _no_library_traceback(record):
      return False
    if record.levelno >= logging.WARNING:
      return True
    if not _own(record):
      return False
    message = record.getMessage()
    if message in self._seen:
      return False
    self._seen.add(message)
    return True


class Lines(logging.Formatter):
  """`HH:MM:SS privjax: message`, the command line's and the API's lines alike (in place of
  absl's `I1207 16:08:29.608764 140343825800064 audit.py:360]`): a warning or an error says
  so after the source (`privjax: warning: ...`), and a line another library logged names
  that library instead of privjax (`jax: warning: ...`)."""

  def __init__(self):
    super().__init__(datefmt="%H:%M:%S")

  def formatMessage(self, record: logging.LogRecord) -> str:
    level = record.levelname.lower() + ": " if record.levelno >= logging.WARNING else ""
    return f"{self.formatTime(record, self.datefmt)} {_source(record)}: {level}{record.message}"


def _source(record: logging.LogRecord) -> str:
  """Who logged `record`: privjax, the installed package its file belongs to, else its
  logger's name (or its file's module name for absl's and the root logger)."""
  if _own(record):
    return "privjax"
  parts = os.path.abspath(record.pathname).split(os.sep)
  for folder in ("site-packages", "dist-packages"):
    if folder in parts[:-1]:
      return os.path.splitext(parts[parts.index(folder) + 1])[0]
  if record.name in ("absl", "root"):
    return record.module
  return record.name.split(".")[0]


def short_lines() -> logging.Formatter | None:
  """The command line's lines as the API's (`Lines`) on absl's handler; returns the
  formatter replaced, for a caller that puts it back."""
  handler = absl_logging.get_absl_handler()
  previous = handler.python_handler.formatter
  handler.setFormatter(Lines())
  return previous


def _own(record: logging.LogRecord) -> bool:
  return os.path.abspath(record.pathname).startswith(_OWN)


def _no_library_traceback(record: logging.LogRecord) -> bool:
  """False for a library's record carrying a traceback (below --verbosity=1): its error
  reaches privjax as an exception, reported in one line."""
  return _own(record) or not record.exc_info or _debugging()


def _debugging() -> bool:
  return absl_logging.get_absl_logger().getEffectiveLevel() <= logging.DEBUG


def hide_library_tracebacks():
  """Python's hooks for exceptions it can only ignore, and for those that end a thread, print
  nothing below --verbosity=1 (where the previous hooks print their tracebacks). TensorStore
  calling into a closed asyncio loop prints one per pending write: hundreds after a damaged
  checkpoint; TensorBoard's writer thread dies on a full disk. privjax starts no threads of
  its own: these are libraries' background work, whose failure reaches privjax as an
  exception where it waits for it. Returns the hooks replaced."""
  previous = sys.unraisablehook, threading.excepthook

  def unraisable_hook(unraisable):
    if _debugging():
      previous[0](unraisable)

  def thread_hook(args):
    if _debugging() or args.exc_type is SystemExit:
      previous[1](args)

  sys.unraisablehook, threading.excepthook = unraisable_hook, thread_hook
  return previous


@contextlib.contextmanager
def library_tracebacks_hidden():
  """`hide_library_tracebacks` for the duration; the previous hooks restored on exit."""
  previous = hide_library_tracebacks()
  try:
    yield
  finally:
    sys.unraisablehook, threading.excepthook = previous


def quiet_process() -> None:
  """For the command's whole process: library tracebacks hidden, also after the audit has
  returned, while libraries' background threads (orbax's savers) may still report."""
  hide_library_tracebacks()
  absl_logging.get_absl_handler().addFilter(_no_library_traceback)


def quiet_cli() -> None:
  """The command line's filter on absl's handler (which privjax.cli.run installs)."""
  absl_logging.get_absl_handler().addFilter(Quiet())


@contextlib.contextmanager
def progress(show: bool = True):
  """Prints privjax's progress to stderr for the duration of an API call, each line once,
  without third-party chatter (those lines do not reach the caller's logging handlers
  meanwhile, so nothing prints twice); `show=False`: nothing but warnings, which go to the
  caller's logging as usual. Under an absl app (the command line) its handler shows it."""
  logger = absl_logging.get_absl_logger()
  if absl_logging.get_absl_handler() in logging.root.handlers:
    yield  # (the command line hides library tracebacks for the process's life)
    return
  level, propagate, handler = logger.level, logger.propagate, None
  if show:
    handler = logging.StreamHandler()
    handler.setFormatter(Lines())
    handler.addFilter(Quiet())
    logger.addHandler(handler)
    logger.propagate = False
  logger.setLevel(logging.INFO if show else logging.WARNING)
  try:
    with library_tracebacks_hidden():
      yield
  finally:
    if handler is not None:
      logger.removeHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate
