"""How privjax runs: devices and sharding, the workdir, checkpoints, caches, stage keys, logs.

Rule: a runtime module imports only `privjax.errors` and other runtime modules; it knows no
stage, model, attacker or score.
"""

__all__: list[str] = []  # its modules' names are theirs: import the module
