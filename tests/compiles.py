"""Counting XLA compilations: `with counting() as c: ...; c.count, c.names, c.seconds`.

JAX records every backend compilation (a jitted program or an eager op it has not
compiled before; cache hits record nothing) as the duration event
`/jax/core/compile/backend_compile_duration`. One listener, registered once at import
(listeners cannot be unregistered on every JAX version), appends the compiled
function's name and compile time to whichever counters are open.
"""

from __future__ import annotations

import contextlib
import dataclasses

from jax import monitoring

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

_open: list[Compiles] = []


@dataclasses.dataclass
class Compiles:
  """The compilations seen inside one `counting()` block, by function name."""

  names: list[str] = dataclasses.field(default_factory=list)
  seconds: float = 0.0  # spent in the backend compiler

  @property
  def count(self) -> int:
    return len(self.names)


def _listener(event: str, duration: float, **kwargs) -> None:
  if event == BACKEND_COMPILE_EVENT:
    for c in _open:
      c.names.append(str(kwargs.get("fun_name", "?")))
      c.seconds += duration


monitoring.register_event_duration_secs_listener(_listener)


@contextlib.contextmanager
def counting():
  """Yields a `Compiles` that records every XLA compilation in the block (nestable)."""
  c = Compiles()
  _open.append(c)
  try:
    yield c
  finally:
    _open.remove(c)
