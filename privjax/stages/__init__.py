"""The stages `privjax.audit` composes, in order: inputs, loading, extraction, screening,
the evaluator, attack rounds, attack strength.

Rule: a stage may import any family (data, models, attacks, scoring, defenses, report) and
the runtime, never `privjax.audit` or `privjax.cli`.
"""

__all__: list[str] = []  # its modules' names are theirs: import the module
