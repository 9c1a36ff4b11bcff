"""Judging: image metrics, one attacker's scores, the evaluator's arithmetic, the verdict.

Rule: a scoring module imports only `privjax.runtime`, the spine leaves and other scoring
modules: it knows no model, attacker or stage.
"""

from privjax.scoring.scores import METRICS

__all__ = ["METRICS"]
