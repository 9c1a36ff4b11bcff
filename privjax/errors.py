"""Errors privjax raises for bad input.

Every error a user can cause (a wrong config value, malformed data, a model that
returns the wrong thing) is a `PrivjaxError` whose message is one line saying what
was expected and what came. launch.py turns these into a one-line message and exit
code 2; anything else is a bug and keeps its traceback.
"""

import signal

__all__ = [
  "ConfigError",
  "DataError",
  "Interrupted",
  "ModelError",
  "PrivjaxError",
  "TrainingError",
  "WorkdirError",
]


class PrivjaxError(ValueError):
  """Base class of the errors a user's input can cause."""


class ConfigError(PrivjaxError):
  """A config value is missing, of the wrong type or out of range."""


class DataError(PrivjaxError):
  """Images, labels or features are malformed (shape, range, count, finiteness)."""


class ModelError(PrivjaxError):
  """The embedding function or its params misbehave (shape, finiteness)."""


class TrainingError(PrivjaxError):
  """Training diverged (non-finite loss); the last good checkpoint is kept."""


class WorkdirError(PrivjaxError):
  """The workdir cannot be used (not a directory, not writable)."""


class Interrupted(BaseException):
  """A run stopped by SIGTERM or Ctrl-C (SIGINT); re-running resumes it.

  Not a PrivjaxError: nothing was wrong with the input. launch.py exits 128 + `signum`:
  143 for SIGTERM, the code a preempted job is expected to end with, and 130 for Ctrl-C.
  A BaseException, as KeyboardInterrupt is: the signal raises it wherever Python happens
  to be, and no `except Exception` on the way (a library's fallback, a plug-in guard, a
  "this model is not differentiable" probe) may take it for that code's own failure and
  carry on.
  """

  def __init__(self, message: str, *, signum: int = signal.SIGTERM):
    super().__init__(message)
    self.signum = signum
