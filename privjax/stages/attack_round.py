"""One attack-and-score round: every configured attacker fitted on an auxiliary set,
reconstructing the targets from their features, each scored and given a verdict.

The audit runs one round on the whole auxiliary set, the attacker-strength stage one per
part of it (stages/strength.py), and the defense sweep two per point (defenses/sweep.py):
each gets the same `Round` and calls `run`.
"""

from __future__ import annotations

import dataclasses
import time

import ml_collections
import numpy as np
from absl import logging

from privjax import attacks, levels
from privjax.attacks import runner
from privjax.errors import DataError
from privjax.report import readings
from privjax.runtime import keys, memory, provenance
from privjax.runtime import workdir as workdir_lib
from privjax.runtime.loop import split_validation
from privjax.scoring import risk
from privjax.scoring import scores as scoring
from privjax.scoring.standardizer import Standardizer
from privjax.stages import extraction, judge

__all__ = ["Result", "Round", "deciding", "identity_input"]


@dataclasses.dataclass(frozen=True)
class Result:
  """What one round produced."""

  outcomes: list  # runner.Outcome per configured attacker, in config order
  scores: dict  # name -> scoring.Scores of the attackers that ran
  verdicts: dict  # name -> (level, reasons) of the attackers that ran

  def deciding(self) -> str:
    """The most severe attacker's name (risk.most_severe)."""
    return deciding(self.verdicts, self.scores)


def deciding(verdicts: dict, scores: dict) -> str:
  """The most severe of the attackers judged so far (risk.most_severe)."""
  return risk.most_severe(
    {
      n: (v[0], scores[n].gain_ci[0], float(scores[n].per_image["image_reid_hit"].mean()))
      for n, v in verdicts.items()
    }
  )


@dataclasses.dataclass(frozen=True)
class Round:
  """Everything a round needs besides the auxiliary set and the features it attacks."""

  attacks: ml_collections.ConfigDict  # config.attacks (entries completed with defaults)
  targets: np.ndarray  # [N, H, W, C] the original targets
  scoring: scoring.Settings
  thresholds: ml_collections.ConfigDict  # config.risk
  metric_thresholds: tuple  # (name, high, medium) of config.metrics (0: that level off)
  val_fraction: float  # the held-out part of the auxiliary set (config.val_fraction)
  seed: int
  overwrite: bool  # discard workdir stages made with other inputs (else an error)
  mesh: object
  workdir: str | None
  model: extraction.Embedder | None  # the audited model; None on stored features
  judge: judge.Judge | None = None  # the independent evaluator, or None
  fast_verdict: bool = False  # skip the attackers left once the verdict is high
  timer: provenance.Timer = dataclasses.field(default_factory=provenance.Timer)

  # The fields that change no number: every other field (and any added later) is in the
  # key of what a stage stores from this round's results (privjax/runtime/keys.py).
  NOT_NUMBERS = frozenset({"mesh", "workdir", "timer", "overwrite", "fast_verdict"})

  def fingerprint(self) -> dict:
    """What this round's numbers depend on: every field but NOT_NUMBERS, and the code of
    each user plug-in it names by import path (an attacker, a metric)."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    out = {k: v for k, v in out.items() if k not in self.NOT_NUMBERS}
    kinds = [self.attacks[n].type for n in self.attacks if self.attacks[n].type != attacks.OFF]
    out["user_code"] = {
      **{k: keys.code(attacks.get(k)) for k in kinds if k not in attacks.builtin_names()},
      **{
        k: keys.code(scoring.METRICS.get(k, field="metrics").fn)
        for _, k in self.scoring.metrics
        if k not in scoring.METRICS.names()
      },
    }
    return out

  def with_attackers(self, names) -> Round:
    """This round with only the named attackers, run blind to the model (the defense
    sweep's: a defended feature has no model to differentiate through), timed silently."""
    only = ml_collections.ConfigDict({n: self.attacks[n].to_dict() for n in names})
    return dataclasses.replace(self, attacks=only, model=None, timer=provenance.Timer(log=False))

  def run(self, aux, f_aux, f_tgt, *, stage: str = "", fitted: dict | None = None) -> Result:
    """Every attacker fitted on (aux images, f_aux), attacking `f_tgt`; each scored as it
    comes, and the verdict so far logged (with `fast_verdict`, the rest are skipped once it
    is high: a level only rises).

    `stage` keeps this round's checkpoints and caches apart in the workdir; `fitted`
    keeps fitted attackers across calls on the same auxiliary set (runner.run_all).
    """
    self._check_memory(aux.shape[0])
    standardize = Standardizer.fit(f_aux)
    reembed = None
    if self.model is not None:

      def reembed(images):
        return standardize(self.model.embed(images, "reconstructions"))

    scores, verdicts, by_content = {}, {}, {}
    scoring_seconds = 0.0

    def judge_one(outcome) -> str:
      nonlocal scoring_seconds
      if outcome.skipped:
        return ""
      t = time.perf_counter()
      key = workdir_lib.array_hash(outcome.reconstructions)
      if key not in by_content:  # an attacker returning another's images (whitebox at 0 steps)
        by_content[key] = scoring.score(
          outcome.reconstructions,
          self.targets,
          settings=self.scoring,
          mesh=self.mesh,
          reembed=reembed,
          target_features=standardize(f_tgt),
          judge_identity=self.judge,
        )
      scores[outcome.name] = by_content[key]
      verdicts[outcome.name] = self._verdict(by_content[key])
      scoring_seconds += time.perf_counter() - t
      leader = deciding(verdicts, scores)
      level = verdicts[leader][0]
      if self.timer.log and not stage:  # the audit's own round
        logging.info(
          "verdict so far: %s, by %s (scored: %s; %s in %.1fs)",
          level,
          leader,
          ", ".join(verdicts),
          outcome.name,
          time.perf_counter() - t,
        )
      if self.fast_verdict and not stage and levels.reaches(level, "high"):
        return f"not run: the verdict was already {level} (config.fast_verdict)"
      return ""

    outcomes = self._attack(aux, f_aux, f_tgt, standardize, stage, fitted, judge_one)
    self.timer.carve(f"{stage}attacks", f"{stage}attack_scoring", scoring_seconds)
    return Result(outcomes, scores, verdicts)

  def _check_memory(self, n_aux: int) -> None:
    """Refuses in one line a round that would hold more than the host has: the targets,
    every attacker's reconstructions of them and the auxiliary images (float32), and the
    all-pairs SSIM of the exact image re-id."""
    running = sum(1 for n in self.attacks if self.attacks[n].type != attacks.OFF)
    n, pixels = self.targets.shape[0], int(np.prod(self.targets.shape[1:]))
    pairs = n * n if n <= self.scoring.exact_max_targets else 0
    memory.check(
      4 * ((running + 1) * n * pixels + n_aux * pixels + pairs),
      f"attacking {n} targets of {pixels} pixels with {running} attackers",
      "attack fewer targets (config.data.target_split) or switch attackers off",
      DataError,
    )

  def _attack(self, aux, f_aux, f_tgt, standardize, stage, fitted, after) -> list:
    attack_model = None
    if self.model is not None:
      embed_fn = self.model.embed_fn

      def embed_standardized(p, images):
        return standardize(embed_fn(p, images))

      attack_model = attacks.Model(embed_standardized, self.model.params, self.model.key)
    # Stored features: the auxiliary features stand for the model (the runner keys each
    # attacker's reconstructions by the target features too).
    model_key = self.model.key if self.model is not None else workdir_lib.array_hash(f_aux)
    train_idx, val_idx = split_validation(aux.shape[0], self.val_fraction, self.seed)
    # Everything an attacker's result depends on besides its own settings: the model (or
    # the stored features), the images and the held-out split (config.val_fraction).
    data_key = workdir_lib.array_hash(
      np.frombuffer(model_key.encode(), np.uint8), aux, self.targets, val_idx
    )
    s = self.scoring
    with self.timer.stage(f"{stage}attacks"):
      return runner.run_all(
        self.attacks,
        attacks.AuxSet(standardize(f_aux), aux, train_idx, val_idx),
        standardize(f_tgt),
        context={
          "mesh": self.mesh,
          "seed": self.seed,
          "eval_batch_size": s.batch_size,
          "filter_size": s.filter_size,
          "filter_sigma": s.filter_sigma,
          "model": attack_model,
        },
        data_key=data_key,
        workdir=self.workdir,
        overwrite=self.overwrite,
        stage=stage,
        fitted=fitted,
        after=after,
      )

  def _verdict(self, sc: scoring.Scores):
    # A metric votes by the lower end of its gain's CI over its no-information baseline
    # (what the metric gives on mismatched pairs), as SSIM does: never by its raw mean.
    return risk.verdict(
      ssim_gain_ci_low=sc.gain_ci[0],
      image_reid_rate=float(sc.per_image["image_reid_hit"].mean()),
      reid_chance=1.0 / self.targets.shape[0],
      thresholds=self.thresholds,
      identity=identity_input(sc.identity, self.thresholds.identity_fmr),
      metrics=[
        (name, sc.metric_gain_ci[name][0], high, medium)
        for name, high, medium in self.metric_thresholds
      ],
    )


def identity_input(judged, fmr):
  """(type-II SAR at `fmr`, its chance level) for the verdict; None when not measured."""
  row = None if judged is None else readings.at_fmr(judged, fmr)
  if row is None or "type2_sar" not in row:
    return None
  return row["type2_sar"]["rate"], max(fmr, row["impostor_accept"])
