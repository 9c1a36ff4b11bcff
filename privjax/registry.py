"""The one plug-in pattern: a registry per kind of plug-in (attackers, defenses, data
sources, model kinds, utility measures, per-target metrics).

A built-in registers by decorator, declaring at registration what it needs and can do
(`ATTACKS.register("whitebox", needs_model=True, ...)`); the code that runs plug-ins
asks those declarations, never a plug-in's name. A user's plug-in is named in the config
by import path, "package.module:function", and is found the same way, with no
declarations (each kind's defaults apply). A leaf module: it imports no plug-in.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

from absl import logging

from privjax.errors import ConfigError, PrivjaxError


@dataclasses.dataclass(frozen=True)
class Plugin:
  """A plug-in found by name: the function and what it declared when it registered."""

  name: str  # the registered name, or the import path
  fn: Callable
  declared: dict  # the keywords given to `register` ({} for an import path)
  builtin: bool


def import_object(path: str, *, field: str):
  """Imports "package.module:name"; raises ConfigError naming the config field on failure."""
  if not isinstance(path, str) or path.count(":") != 1:
    raise ConfigError(f"config.{field} must be 'package.module:name', got {path!r}")
  module_name, attr = path.split(":")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ConfigError(f"config.{field}={path!r}: cannot import module {module_name!r}: {e}") from e
  if not hasattr(module, attr):
    raise ConfigError(f"config.{field}={path!r}: module {module_name!r} has no {attr!r}")
  return getattr(module, attr)


def call_user(plugin: Plugin, what: str, error, *args, passthrough=(), **kwargs):
  """`plugin.fn(*args, **kwargs)`; what a user's plug-in raises becomes one line, `error`
  naming `what` (its own traceback stays in the log at --verbosity=1). A built-in's errors
  are privjax's own and pass through, as do `passthrough` exception types."""
  return call_fn(
    plugin.fn,
    plugin.name,
    what,
    error,
    *args,
    user=not plugin.builtin,
    passthrough=passthrough,
    **kwargs,
  )


def call_fn(fn, name, what, error, *args, user=True, passthrough=(), **kwargs):
  """`call_user` for any callable `fn` of a plug-in named `name`."""
  if not user:
    return fn(*args, **kwargs)
  try:
    return fn(*args, **kwargs)
  except (PrivjaxError, *passthrough):
    raise
  except Exception as e:  # noqa: BLE001 (any failure of user code is the input's)
    logging.vlog(1, "%s raised:", what, exc_info=True)
    raise error(
      f"{what} ({name}) raised {type(e).__name__}: {one_line(e)} (--verbosity=1 logs its traceback)"
    ) from e


def one_line(e: BaseException) -> str:
  """The first line of `e`'s message; when the message carries a traceback (an error
  raised on the host inside a jitted computation, as JAX wraps it), with its last line,
  the error that started it."""
  lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
  if not lines:
    return ""
  marker = "Traceback (most recent call last):"
  if len(lines) > 1 and marker in lines[0]:
    return f"{lines[0].replace(marker, '').strip()} {lines[-1]}".strip()
  return lines[0]


class Registry:
  """Plug-ins of one kind by name."""

  def __init__(self, kind: str):
    self.kind = kind  # "attack", "defense", ...: names the kind in errors
    self._plugins: dict[str, Plugin] = {}

  def register(self, name: str, **declared):
    """Decorator: registers a function under `name` with its declarations."""

    def wrap(fn):
      self._plugins[name] = Plugin(name, fn, dict(declared), True)
      return fn

    return wrap

  def names(self) -> list[str]:
    """The built-ins' names, sorted."""
    return sorted(self._plugins)

  def __contains__(self, name) -> bool:
    return name in self._plugins

  def get(self, name, *, field: str) -> Plugin:
    """The plug-in registered as `name`, or the callable at import path `name`.

    Raises ConfigError (naming config.`field`) for an unknown name, an import path that
    does not import, or an object that is not callable.
    """
    if isinstance(name, str) and name in self._plugins:
      return self._plugins[name]
    if not isinstance(name, str) or ":" not in name:
      raise ConfigError(
        f"unknown {self.kind} type {name!r}: expected one of {self.names()} or a "
        "'package.module:function' import path"
      )
    fn = import_object(name, field=field)
    if not callable(fn):
      raise ConfigError(f"config.{field}={name!r} is not callable, got {type(fn).__name__}")
    return Plugin(name, fn, {}, False)
