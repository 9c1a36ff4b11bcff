"""Feature-level defenses: the transforms and their registry, utility, the defense sweep.

Rule: a defense module imports only `privjax.runtime`, `privjax.scoring`, the spine leaves
and other defense modules: the sweep is handed its attack round as a function.
"""

from privjax.defenses import learned, transforms  # noqa: F401 (learned registers itself)
from privjax.defenses.transforms import Defense, register

__all__ = ["DEFENSES", "Defense", "register"]

# The defenses by name: the built-ins (none, gaussian_noise, quantize, pca_truncate,
# normalize_noise; learned, which trains per strength on the defender's split), each
# `register`ed with its strength keyword; a user's defense is named by import path in
# config.defense.sweep.<name>.type.
DEFENSES = transforms.DEFENSES
