"""Attackers: each fits on the auxiliary set and reconstructs targets from their features.

Built-in: `decoder` (the patent's learned inverse model), `ridge` (random-features
ridge regression), `nearest` (nearest auxiliary image by feature cosine) and
`whitebox` (optimisation through the audited model's gradients) and `blend` (the
least-squares combination of others' reconstructions). See `base` for the contract and
how to add one: each built-in module offers `fit(aux, *, key, settings, ...) -> params` and
a pure `reconstruct(params, features) -> images`, and registers `attack(aux, ctx, cfg)`.
"""

# Imported, so registered, in the order of the default config's attackers (`default_on`).
# isort: off
from privjax.attacks import decoder, ridge, nearest, whitebox, blend  # noqa: F401 (registration)

# isort: on
from privjax.attacks.base import (
  OFF,
  AuxSet,
  Capabilities,
  Context,
  Fitted,
  Model,
  Skipped,
  Standardizer,
  batched,
  builtin_names,
  capabilities,
  check,
  default_on,
  get,
  key_seed,
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
  "batched",
  "builtin_names",
  "default_on",
  "get",
  "key_seed",
  "own_config",
  "register",
  "with_defaults",
  "check",
  "OFF",
]
