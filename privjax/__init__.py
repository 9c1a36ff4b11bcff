"""privjax: measure how much an image recognition model's feature vectors leak its images."""

from privjax.audit import assess, run
from privjax.config import audit_config
from privjax.errors import (
  ConfigError,
  DataError,
  ModelError,
  PrivjaxError,
  TrainingError,
  WorkdirError,
)
from privjax.report.files import Report
from privjax.runtime.parallel import use_cpu_cores
from privjax.scoring.identity import Evaluator

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
  "audit_config",
  "run",
  "use_cpu_cores",
]
