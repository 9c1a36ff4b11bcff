"""privjax command line: audit how much a recognition model's features leak its images.

  python launch.py --config=configs/default.py --workdir=runs/default
  python launch.py --config=configs/default.py --workdir=runs/x --config.train.num_steps=200

This is the only file that defines flags; the work is in privjax.audit.run.
Errors caused by the input (config, data, model, workdir) print one line and exit 2.
"""

import logging as py_logging
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from privjax import audit
from privjax.errors import PrivjaxError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Audit config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints and the report.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietDependencies(py_logging.Filter):
  """Drops orbax's per-save INFO chatter so privjax's progress lines stay readable."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.get_absl_handler().addFilter(_QuietDependencies())
  logging.info(
    "process %d of %d; local devices: %s",
    jax.process_index(),
    jax.process_count(),
    jax.local_devices(),
  )
  try:
    report = audit.run(FLAGS.config, FLAGS.workdir)
  except PrivjaxError as e:
    print(f"privjax: error: {e}", file=sys.stderr)
    sys.exit(2)
  s = report.to_dict()
  print(
    f"privjax: {s['risk_level']} risk | SSIM {s['ssim']:.3f} vs baseline {s['baseline_ssim']:.3f} "
    f"(gain {s['ssim_gain']:.3f}, 95% CI [{s['ssim_gain_ci'][0]:.3f}, {s['ssim_gain_ci'][1]:.3f}])"
    f" | image re-id {s['image_reid_rate']:.3f}, model re-id "
    f"{'n/a' if s['reid_rate'] is None else format(s['reid_rate'], '.3f')}, chance "
    f"{s['reid_chance']:.4f} | report: {FLAGS.workdir}/report.json"
  )


if __name__ == "__main__":
  app.run(main)
