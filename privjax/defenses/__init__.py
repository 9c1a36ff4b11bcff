"""Feature-level defenses: the transforms and their registry, utility, the defense sweep.

Rule: a defense module imports only `privjax.runtime`, `privjax.scoring`, the spine leaves
and other defense modules: the sweep is handed its attack round as a function.
"""

from privjax.defenses.transforms import DEFENSES, Defense, register

__all__ = ["DEFENSES", "Defense", "register"]
