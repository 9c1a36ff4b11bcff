"""The model: the audited model's kinds, the builtin recognition network and its training, dlib.

Rule: a model module imports only `privjax.runtime`, `privjax.data`, the spine leaves and
other model modules: it knows no attacker, score or stage.
"""

__all__: list[str] = []  # its modules' names are theirs: import the module
