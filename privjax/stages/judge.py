"""The independent evaluator's stage: calibrated on the original targets, then it judges
each attacker's reconstructions (type I / type II at fixed false match rates, rank-1).

The arithmetic is privjax/scoring/identity.py's; this module runs it on a user's or the builtin
evaluator model, with the audit's mesh, batch size and workdir cache.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from absl import logging

from privjax.scoring import identity
from privjax.stages import extraction

__all__ = ["Judge", "Settings", "prepare"]


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the evaluator stage reads from the config."""

  fmrs: tuple  # config.identity.fmrs
  batch_size: int  # config.eval_batch_size
  bootstrap_samples: int  # config.bootstrap_samples
  seed: int  # config.seed: the bootstrap CIs' key is jax.random.key(seed)
  purity_tolerance: float = 0.0  # config.purity_tolerance


@dataclasses.dataclass(frozen=True)
class Judge:
  """The evaluator, calibrated: `judge(reconstructions)` -> identity.evaluate's output."""

  calibration: identity.Calibration
  embedder: extraction.Embedder
  settings: Settings

  def _common(self) -> dict:
    s = self.settings
    return {
      "mesh": self.embedder.mesh,
      "batch_size": s.batch_size,
      "bootstrap_samples": s.bootstrap_samples,
      "key": jax.random.key(s.seed),
    }

  def __call__(self, reconstructions: np.ndarray):
    embeddings = self.embedder.embed(reconstructions, "reconstructions")
    return identity.evaluate(self.calibration, embeddings, **self._common())


def prepare(
  evaluator: identity.Evaluator, aux, targets, labels, settings: Settings, *, mesh, workdir
) -> Judge:
  """The evaluator made ready (probed, keyed) and calibrated on the original targets."""
  embedder = extraction.prepare(
    evaluator.embed_fn,
    evaluator.params,
    aux,
    targets.shape[1:],
    batch_size=settings.batch_size,
    purity_tolerance=settings.purity_tolerance,
    mesh=mesh,
    workdir=workdir,
    who="the evaluator's embed_fn",
  )
  calibration = identity.calibrate(
    embedder.features(targets, "evaluator-target_images"),
    labels,
    fmrs=tuple(settings.fmrs),
    mesh=mesh,
    batch_size=settings.batch_size,
    bootstrap_samples=settings.bootstrap_samples,
    key=jax.random.key(settings.seed),
  )
  logging.info(
    "evaluator: %d identities, %d targets with another image of their identity; thresholds %s",
    calibration.summary["num_identities"],
    calibration.summary["type2_targets"],
    ", ".join(
      f"{t:.3f} at FMR {f:g}" for f, t in zip(calibration.fmrs, calibration.thresholds, strict=True)
    ),
  )
  return Judge(calibration, embedder, settings)
