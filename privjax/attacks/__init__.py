"""Attackers: each fits on the auxiliary set and reconstructs targets from their features.

Built-in: `decoder` (the patent's learned inverse model), `ridge` (random-features
ridge regression), `nearest` (nearest auxiliary image by feature cosine) and
`whitebox` (optimisation through the audited model's gradients) and `blend` (the
least-squares combination of others' reconstructions). See `base` for the contract and
how to add one.
"""

from privjax.attacks import blend, decoder, nearest, ridge, whitebox  # noqa: F401 (registration)
from privjax.attacks.base import (
  OFF,
  AuxSet,
  Capabilities,
  Context,
  Fitted,
  Model,
  Skipped,
  Standardizer,
  builtin_names,
  capabilities,
  check,
  get,
  own_config,
  register,
  with_defaults,
)

__all__ = [
  "AuxSet",
  "Capabilities",
  "capabilities",
  "Context",
  "Fitted",
  "Model",
  "Skipped",
  "Standardizer",
  "builtin_names",
  "get",
  "own_config",
  "register",
  "with_defaults",
  "check",
  "OFF",
]
