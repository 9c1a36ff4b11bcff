"""What privjax prints while it runs: its own progress, each message once, and warnings.

The command line and the Python API show the same lines: stage starts and ends, training
steps with images/s and ETA, the verdict. Third-party INFO chatter a user cannot act on
(orbax's per-save lines, JAX's backend probing) is dropped; every WARNING is kept.
"""

from __future__ import annotations

import contextlib
import logging
import os

from absl import logging as absl_logging

# privjax's own source files: the package's directory, not any path with a "privjax"
# folder in it (a clone named privjax holds .venv/.../orbax too, and orbax logs through
# absl's logger as privjax does, so the logger's name cannot tell them apart).
_OWN = os.path.dirname(os.path.abspath(__file__)) + os.sep


class Quiet(logging.Filter):
  """Keeps warnings from anyone and privjax's own INFO lines, each distinct message once."""

  def __init__(self):
    super().__init__()
    self._seen = set()

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.WARNING:
      return True
    if not os.path.abspath(record.pathname).startswith(_OWN):
      return False
    message = record.getMessage()
    if message in self._seen:
      return False
    self._seen.add(message)
    return True


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
    yield
    return
  level, propagate, handler = logger.level, logger.propagate, None
  if show:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s privjax: %(message)s", "%H:%M:%S"))
    handler.addFilter(Quiet())
    logger.addHandler(handler)
    logger.propagate = False
  logger.setLevel(logging.INFO if show else logging.WARNING)
  try:
    yield
  finally:
    if handler is not None:
      logger.removeHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate
