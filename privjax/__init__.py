"""privjax: measure how much an image recognition model's feature vectors leak its images.

The names below are the Python API. Importing the package is cheap: the errors load with
it, every other name when first used (`privjax.assess` loads the whole audit: JAX, Flax,
Optax, Orbax, matplotlib), so `import privjax.scoring.metrics` loads only what SSIM needs.

  import privjax
  report = privjax.assess(embed_fn, params, aux_images, target_images)
  print(report.risk_level)

and the building blocks (docs/research.md): `privjax.attack` fits one attacker on your own
features, `privjax.score` scores reconstructions against their originals.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from privjax.errors import (
  ConfigError,
  DataError,
  ModelError,
  PrivjaxError,
  TrainingError,
  WorkdirError,
)

if TYPE_CHECKING:  # the lazy names, for type checkers and readers
  from privjax.attacks.api import attack
  from privjax.audit import assess, run
  from privjax.config import audit_config
  from privjax.report.files import Report
  from privjax.runtime.parallel import use_cpu_cores
  from privjax.scoring.api import score
  from privjax.scoring.identity import Evaluator

# Each lazy name and the module it is loaded from on first use.
_LAZY = {
  "assess": "privjax.audit",
  "run": "privjax.audit",
  "audit_config": "privjax.config",
  "Report": "privjax.report.files",
  "use_cpu_cores": "privjax.runtime.parallel",
  "Evaluator": "privjax.scoring.identity",
  "attack": "privjax.attacks.api",
  "score": "privjax.scoring.api",
}

__all__ = [
  "ConfigError",
  "DataError",
  "Evaluator",
  "ModelError",
  "PrivjaxError",
  "Report",
  "TrainingError",
  "WorkdirError",
  "assess",
  "attack",
  "audit_config",
  "run",
  "score",
  "use_cpu_cores",
]


def __getattr__(name: str):
  """Loads a lazy name's module on first use (PEP 562); the name is then an attribute."""
  module = _LAZY.get(name)
  if module is None:
    raise AttributeError(f"module 'privjax' has no attribute {name!r}")
  value = getattr(importlib.import_module(module), name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_LAZY))
