"""The one plug-in pattern: a registry per kind of plug-in (attackers, defenses, data
sources, model kinds, utility measures, per-target metrics).

A built-in registers by decorator, declaring at registration what it needs and can do
(`ATTACKS.register("whitebox", needs_model=True, ...)`); the code that runs plug-ins
asks those declarations, never a plug-in's name. A user's plug-in is named in the config
by import path, "package.module:function", or given as the function object itself (which
the config holds as its import path, `path_of`), and is found the same way. A user's
module declares what its plug-in needs and can do as a built-in does, with the same
decorator (`privjax.attacks.register("mlp", defaults=..., check=..., checkpoints=True)`):
named by import path, the function then comes with those declarations; an undeclared one
gets each kind's defaults. Either way its errors stay the user's (one line naming it, see
`call_user`). A leaf module: it imports no plug-in.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable
from typing import Any

from absl import logging

from privjax.errors import ConfigError, PrivjaxError

__all__ = [
  "Plugin",
  "Registry",
  "call_fn",
  "call_user",
  "import_object",
  "one_line",
  "path_of",
]


@dataclasses.dataclass(frozen=True)
class Plugin:
  """A plug-in found by name: the function and what it declared when it registered."""

  name: str  # the registered name, or the import path
  fn: Callable
  declared: dict  # the keywords given to `register` ({} for an undeclared import path)
  builtin: bool  # privjax's own (its errors are privjax's); False for a user's plug-in


# Objects given to the config that no import path reaches (a lambda, a function defined
# inside another, one of a config file's own), by the path `path_of` named each with.
_GIVEN: dict[str, object] = {}


def import_object(path: str, *, field: str) -> Any:
  """The object at import path "package.module:name" ("module:Class.attr" too).

  Args:
    path: the import path; or one `path_of` gave an object that no import path reaches.
    field: the config field that named it (its dotted name below `config.`), for errors.

  Returns:
    The object.

  Raises:
    ConfigError: one line naming config.`field`, when `path` is not "module:name", its
      module does not import or has no such name.
  """
  if isinstance(path, str) and path in _GIVEN:
    return _GIVEN[path]
  if not isinstance(path, str) or path.count(":") != 1:
    raise ConfigError(f"config.{field} must be 'package.module:name', got {path!r}")
  module_name, attr = path.split(":")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ConfigError(f"config.{field}={path!r}: cannot import module {module_name!r}: {e}") from e
  obj = module
  for part in attr.split("."):
    if not hasattr(obj, part):
      raise ConfigError(f"config.{field}={path!r}: module {module_name!r} has no {attr!r}")
    obj = getattr(obj, part)
  return obj


def path_of(obj, *, field: str = "") -> str:
  """The import path "module:qualname" that names `obj`, a plug-in given to the config as
  the function (or class) itself; `import_object` finds `obj` by it.

  An object no import path reaches (a lambda, a function defined inside another, a config
  file's own function) is remembered under its path for this process's life; a second
  such object of the same path gets "#2", "#3", ... after it.

  Raises:
    ConfigError: naming config.`field` when `obj` has no module and qualified name.
  """
  module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
  if not isinstance(module, str) or not isinstance(qualname, str):
    where = f"config.{field}" if field else "a plug-in"
    raise ConfigError(
      f"{where} must be a function, a class or a 'package.module:name' import path, "
      f"got {type(obj).__name__}"
    )
  path = f"{module}:{qualname}"
  if "<" not in qualname and module in sys.modules:
    try:
      if import_object(path, field=field) is obj:
        return path  # importable as is: nothing to remember
    except ConfigError:
      pass
  named, i = path, 1
  while _GIVEN.setdefault(named, obj) is not obj:  # the path is another object's
    i += 1
    named = f"{path}#{i}"
  return named


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
  """Plug-ins of one kind by name: the built-ins, registered by decorator, and a user's,
  named by import path (registered or not) or given as the function."""

  def __init__(self, kind: str):
    self.kind = kind  # "attack", "defense", ...: names the kind in errors
    self._plugins: dict[str, Plugin] = {}

  def register(self, name: str, **declared) -> Callable[[Callable], Callable]:
    """Decorator: registers a function under `name` with its declarations.

    privjax's modules register the built-ins; a user's module registers its own plug-in
    the same way (it then runs with its declarations when the config names it by import
    path, or by `name` once its module is imported), but may not take a built-in's name.
    """

    def wrap(fn):
      builtin = _is_privjax(fn)
      taken = self._plugins.get(name)
      if not builtin and taken is not None and taken.builtin:
        raise ConfigError(
          f"{self.kind} {name!r} is privjax's own: register "
          f"{getattr(fn, '__qualname__', fn)!r} under another name"
        )
      self._plugins[name] = Plugin(name, fn, dict(declared), builtin)
      return fn

    return wrap

  def names(self) -> list[str]:
    """The built-ins' names, sorted."""
    return sorted(n for n, p in self._plugins.items() if p.builtin)

  def __contains__(self, name) -> bool:
    """Whether `name` comes with declarations: a registered name, or the import path of
    (or the very) function registered here. An import path that does not import is not."""
    if isinstance(name, str) and name in self._plugins:
      return True
    try:
      return self._registered(name) is not None
    except ConfigError:
      return False

  def get(self, name, *, field: str) -> Plugin:
    """The plug-in registered as `name`, or the callable at import path `name` (or `name`
    itself, a function given to the config), with its declarations if registered here.

    Raises ConfigError (naming config.`field`) for an unknown name, an import path that
    does not import, or an object that is not callable.
    """
    if isinstance(name, str) and name in self._plugins:
      return self._plugins[name]
    path_given = isinstance(name, str) and ":" in name
    if not path_given and (isinstance(name, str) or not callable(name)):
      raise ConfigError(
        f"unknown {self.kind} type {name!r}: expected one of {self.names()} or a "
        "'package.module:function' import path"
      )
    path = name if isinstance(name, str) else path_of(name, field=field)
    fn = import_object(path, field=field)
    if not callable(fn):
      raise ConfigError(f"config.{field}={path!r} is not callable, got {type(fn).__name__}")
    found = self._registered(fn)
    if found is None:
      return Plugin(path, fn, {}, False)
    return Plugin(path, fn, found.declared, found.builtin)

  def _registered(self, name) -> Plugin | None:
    """The registration of the function at import path `name` (or of `name` itself)."""
    if isinstance(name, str):
      if ":" not in name:
        return None
      name = import_object(name, field="")
    return next((p for p in self._plugins.values() if p.fn is name), None)


def _is_privjax(fn) -> bool:
  """Whether `fn` is privjax's own (a built-in), by the module that defines it."""
  module = getattr(fn, "__module__", "") or ""
  return module == "privjax" or module.startswith("privjax.")
