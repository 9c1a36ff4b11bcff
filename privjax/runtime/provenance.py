"""What ran an audit and how long each stage took: versions, devices, stage timings."""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import time

import jax
from absl import logging

__all__ = ["Timer", "environment", "since", "versions"]

VERSIONED = (
  "privjax",
  "jax",
  "jaxlib",
  "flax",
  "optax",
  "orbax-checkpoint",
  "dm-pix",
  "ml-collections",
  "numpy",
)


class Timer:
  """Seconds per named stage (`with timer.stage("extraction"): ...`), logged or silent."""

  def __init__(self, log: bool = True):
    self.seconds = {}
    self.log = log  # False: time silently (the defense sweep logs a line per point)

  @contextlib.contextmanager
  def stage(self, name):
    if self.log:
      logging.info("stage %s ...", name)
    t = time.perf_counter()
    yield
    self.seconds[name] = round(time.perf_counter() - t, 3)
    if self.log:
      logging.info("stage %s done in %.1fs", name, self.seconds[name])

  def carve(self, stage, part, seconds) -> None:
    """Moves `seconds` of `stage`'s time, spent on work done inside it, to stage `part`."""
    self.seconds[stage] = round(self.seconds[stage] - seconds, 3)
    self.seconds[part] = round(self.seconds.get(part, 0.0) + seconds, 3)


def since(t_start: float) -> float:
  """Seconds since `t_start` (a time.perf_counter() reading), rounded to ms."""
  return round(time.perf_counter() - t_start, 3)


def versions() -> dict:
  """Python's and each audited-path package's installed version."""
  out = {"python": platform.python_version()}
  for name in VERSIONED:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out


def environment(metadata, seconds) -> dict:
  """What ran the audit: versions, devices, the caller's metadata and stage timings."""
  return {
    "versions": versions(),
    "devices": {
      "count": jax.device_count(),
      "kind": jax.devices()[0].device_kind,
      "platform": jax.devices()[0].platform,
      "processes": jax.process_count(),
    },
    "metadata": metadata or {},
    "seconds": seconds,
  }
