"""Getting data in: the sources (digits, TFDS, folders, .npz), face alignment, role splits.

Rule: a data module imports only `privjax.runtime`, the spine leaves (errors, registry,
checks) and other data modules: it knows no model, attacker or score.
"""

from privjax.data.images import to_unit_float
from privjax.data.splits import load_digits

__all__ = ["load_digits", "to_unit_float"]
