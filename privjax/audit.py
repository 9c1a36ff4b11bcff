"""The audit, end to end: extract, attack, score, judge, report: the stages composed.

`assess` is the public entry point (the Python API); `run` is what launch.py calls: it
loads the configured data, model and evaluator (privjax/stages/loading.py), then runs the same
stages, so the command line and the API share one code path. Each stage lives in its
own module and gets arrays and its own settings; none calls back into this one. Neither
changes JAX's device configuration: the command line sets its layout before it calls `run`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from privjax import attacks
from privjax import config as config_lib
from privjax import settings as settings_lib
from privjax.data import sources
from privjax.defenses import sweep
from privjax.errors import ModelError
from privjax.report import files as report_lib
from privjax.runtime import logs, parallel, provenance
from privjax.runtime import workdir as workdir_lib
from privjax.scoring import identity
from privjax.scoring import scores as scoring
from privjax.stages import extraction, judge, loading, screening, strength, summary
from privjax.stages import inputs as inputs_lib
from privjax.stages.attack_round import Round

__all__ = ["assess", "run"]


def assess(
  embed_fn,
  params,
  aux_images,
  target_images,
  *,
  config: ml_collections.ConfigDict | None = None,
  workdir: str | None = None,
  target_labels=None,
  aux_features=None,
  target_features=None,
  evaluator: identity.Evaluator | None = None,
  target_sources=None,
  aux_labels=None,
  defender_images=None,
  defender_labels=None,
  metadata: dict | None = None,
  progress: bool = True,
) -> report_lib.Report:
  """Audits how much `embed_fn`'s features leak the images they came from.

  It runs on the devices JAX has and changes no process-wide JAX setting. On a CPU, JAX has
  one device unless told otherwise; the command line's layout, one device per core
  (data-parallel, faster on several cores), is `privjax.use_cpu_cores()`, called before
  the first JAX operation.

  Args:
    embed_fn: a pure, jittable `embed_fn(params, images) -> features`, images
      [N, H, W, C] float32 in [0, 1], features [N, D].
    params: any pytree of arrays (or None) passed to `embed_fn`.
    aux_images: [N_aux, H, W, C] the attacker's auxiliary images (disjoint from the
      targets): the decoder is trained on their features.
    target_images: [N, H, W, C] the images whose features are attacked.
    config: an audit config (see `privjax.config.audit_config`); None uses the
      defaults, with the SSIM window fitted to the image size. A plug-in's `type` may be
      the function itself (`config.attacks.mlp.type = mlp`), or its import path.
    workdir: where checkpoints and report files go; None writes no files.
    target_labels: optional [N] labels of the targets (identities or classes).
    aux_features, target_features: stored features [N_aux, D] and [N, D] for a
      black-box audit (a leaked database): pass them with `embed_fn=None`; nothing
      is embedded, and model re-id is not measured (no model to
      re-embed the reconstructions with), which the report says.
    evaluator: an independent recognition model (`privjax.Evaluator`) that judges
      identity leakage (type I / type II success at a false match rate, rank-1; see
      privjax.scoring.identity); needs `target_labels` (identities). None: not checked, which
      the report says.
    target_sources: optional [N] strings saying where each target came from (a file
      name, a record id), written beside each row of per_image.csv.
    aux_labels: optional [N_aux] labels of the auxiliary images, in the same terms as
      `target_labels`: the defense sweep (config.defense.sweep) measures utility with
      them (k-NN identification against the auxiliary gallery, a linear probe).
    defender_images, defender_labels: optional [M, H, W, C] images and [M] labels the
      defender owns, disjoint from the targets and the auxiliary set: a learning defense
      in config.defense.sweep (`learned`) trains on their features; needed only then.
    metadata: optional JSON-ready dict stored under "metadata" in the report.
    progress: print progress to stderr (stages, training steps with images/s and ETA,
      the verdict); False prints warnings only. The command line always shows it.

  Returns:
    A `Report`; `report.to_dict()` has every metric and the verdict.
  """
  t_start = time.perf_counter()
  aux, targets = inputs_lib.check_images(aux_images, target_images)
  stored_dim = None  # the stored features' width bounds the sweep's strengths now
  if embed_fn is None and aux_features is not None and np.ndim(aux_features) == 2:
    stored_dim = int(np.shape(aux_features)[1])
  cfg = config_lib.resolve(targets.shape[1:], config, feature_dim=stored_dim)
  inputs_lib.check_sizes(cfg, aux, targets)
  inputs = inputs_lib.check(
    embed_fn,
    params,
    aux,
    targets,
    target_labels=target_labels,
    aux_labels=aux_labels,
    aux_features=aux_features,
    target_features=target_features,
    evaluator=evaluator,
    target_sources=target_sources,
    metadata=metadata,
    feature_dim=stored_dim,
  )
  defender = inputs_lib.check_defender(
    cfg,
    defender_images,
    defender_labels,
    image_shape=targets.shape[1:],
    stored=embed_fn is None,
    name="defender_images",
    aux=aux,
    targets=targets,
  )
  inputs = dataclasses.replace(inputs, defender=defender)
  if aux_labels is not None and not len(cfg.defense.sweep):
    unused = (
      "aux_labels were given but nothing read them: in the Python API only the defense "
      "sweep's utility does (config.defense.sweep is empty)"
    )
    inputs = dataclasses.replace(inputs, warnings=(*inputs.warnings, unused))
  lock = workdir_lib.locked(workdir) if workdir is not None else contextlib.nullcontext()
  with logs.progress(progress), lock as wd:
    return _audit(inputs, cfg, wd, t_start)


def run(
  config: ml_collections.ConfigDict, workdir: str, *, command: str | None = None
) -> report_lib.Report:
  """The CLI's audit: the configured data, model and evaluator loaded, then the same stages
  as `assess`. The config is checked once, before any work; the workdir locked once.
  `command`: the shell line that ran it, which the page's next steps extend.

  Args:
    config: a whole config (configs/default.py's `get_config()`: the audit's groups and
      `data`, `model`, `evaluator`); a plug-in in it may be the function itself.
    workdir: where checkpoints and report files go.
    command: the shell line that ran it, or None.

  Returns:
    A `Report`, also written to `workdir`.
  """
  t = time.perf_counter()
  config = config_lib.named(config)  # a plug-in given as a function: by its import path
  loaded = loading.data(config)
  precomputed = isinstance(loaded.data, sources.Precomputed)
  audit_cfg = ml_collections.ConfigDict(config.to_dict())
  for key in ("data", "model", "evaluator"):
    del audit_cfg[key]
  aux, targets = inputs_lib.check_images(loaded.aux_images, loaded.target_images)
  # The whole config checked before any work, so a bad value costs nothing and writes nothing.
  cfg = config_lib.resolve(targets.shape[1:], audit_cfg, feature_dim=loaded.feature_dim, whole=True)
  inputs_lib.check_sizes(cfg, aux, targets)
  with workdir_lib.locked(workdir) as wd:
    model = loading.model(config, loaded, workdir=wd, mesh=parallel.data_mesh())
    evaluator = loading.evaluator(config, loaded, workdir=wd, mesh=parallel.data_mesh())
    stored = loaded.data if precomputed else None
    inputs = inputs_lib.check(
      model.embed_fn,
      model.params,
      aux,
      targets,
      target_labels=loaded.target_labels,
      aux_labels=loaded.aux_labels,
      aux_features=None if stored is None else stored.aux_features,
      target_features=None if stored is None else stored.target_features,
      evaluator=evaluator,
      target_sources=loaded.target_sources,
      metadata={
        "data": loaded.description,
        "model": model.info,
        "data_config": config.data.to_dict(),
        "model_config": config.model.to_dict(),
        "evaluator_config": config.evaluator.to_dict(),
        "evaluator_off": loaded.evaluator_off,
        "command": command,
        "seconds_data_and_model": provenance.since(t),
      },
      feature_dim=loaded.feature_dim,
    )
    inputs = dataclasses.replace(inputs, defender=_defender(config, loaded, cfg, precomputed))
    with logs.progress(True):
      return _audit(inputs, cfg, wd, time.perf_counter())


def _defender(config, loaded: loading.Loaded, cfg, precomputed: bool):
  """The command line's defender split: config.data.model_train_split's images (the split
  the builtin model trains on, never the targets or the auxiliary set), for a learning
  defense; None when no sweep entry learns."""
  own = None if precomputed else loaded.data.model_train
  return inputs_lib.check_defender(
    cfg,
    None if own is None else own.images,
    None if own is None else own.labels,
    image_shape=loaded.target_images.shape[1:],
    stored=precomputed,
    name=f"config.data.model_train_split {config.data.model_train_split!r}",
  )


def _audit(inputs: inputs_lib.Inputs, cfg, workdir, t_start):
  """The stages: extraction, feature screening, the evaluator, the attack round, attacker
  strength, the no-information reference, the defense sweep, the report."""
  timer = provenance.Timer()
  mesh = parallel.data_mesh()
  targets = inputs.targets
  if inputs.feature_dim is None and inputs.embed_fn is not None and len(cfg.defense.sweep):
    # The sweep's strengths bounded by the width, before anything is written.
    dim = extraction.feature_width(inputs.embed_fn, inputs.params, targets.shape[1:])
    settings_lib.check_sweep(cfg, dim=dim)
  with timer.stage("extraction"):
    f_aux, f_tgt, model = _extract(inputs, cfg, mesh, workdir)
  for w in inputs.warnings:
    logging.warning("inputs: %s", w)
  screened = screening.screen(f_aux, f_tgt)
  inputs, f_aux = _screened(inputs, f_aux, screened)
  aux = inputs.aux
  the_judge = None
  if inputs.evaluator is not None:
    with timer.stage("identity"):
      the_judge = _judge(inputs, cfg, mesh, workdir)
  round_ = _round(cfg, targets, model, the_judge, mesh, workdir, timer)
  _log_attackers(cfg.attacks)
  result = round_.run(aux, f_aux, f_tgt)
  aux_strength = strength.run(
    round_, aux, f_aux, f_tgt, result, fractions=cfg.attack_strength.aux_fractions, seed=cfg.seed
  )
  with timer.stage("scoring"):
    mean_image_ssim = scoring.mean_image_ssim(aux, targets, settings=round_.scoring, mesh=mesh)
  deciding = result.deciding()
  defense = None
  if len(cfg.defense.sweep):
    with timer.stage("defense_sweep"):
      defense = _sweep(inputs, cfg, round_, result, deciding, f_aux, f_tgt, the_judge, model)
  report = summary.build(
    outcomes=result.outcomes,
    scores=result.scores,
    verdicts=result.verdicts,
    deciding=deciding,
    targets=targets,
    aux_count=aux.shape[0],
    labels=inputs.labels,
    per_target=inputs.per_target,
    feature_dim=int(f_tgt.shape[1]),
    mean_image_ssim=mean_image_ssim,
    model_reid=model is not None,
    strength=aux_strength,
    calibration=None if the_judge is None else the_judge.calibration,
    evaluator_info=None if inputs.evaluator is None else inputs.evaluator.info,
    defense=defense,
    data_warnings=(*inputs.warnings, *screened.warnings()),
    config=cfg,
    environment=provenance.environment(
      inputs.metadata, dict(timer.seconds, total=provenance.since(t_start))
    ),
  )
  _write(report, workdir, cfg.grid_examples)
  logging.info(
    "verdict: %s risk (decided by %s); %s",
    report.risk_level,
    deciding,
    "; ".join(result.verdicts[deciding][1]),
  )
  return report


def _log_attackers(attacks_cfg) -> None:
  running = [n for n in attacks_cfg if attacks_cfg[n].type != attacks.OFF]
  off = [n for n in attacks_cfg if attacks_cfg[n].type == attacks.OFF]
  logging.info(
    "attackers: %s%s",
    ", ".join(f"{n} ({attacks_cfg[n].type})" for n in running),
    "".join(f"; {n} off" for n in off),
  )


def _extract(inputs: inputs_lib.Inputs, cfg, mesh, workdir):
  """(aux features, target features, the model's Embedder or None on stored features)."""
  aux, targets = inputs.aux, inputs.targets
  if inputs.embed_fn is None:
    f_aux = extraction.check_features(inputs.aux_features, aux.shape[0], name="aux_features")
    f_tgt = extraction.check_features(
      inputs.target_features, targets.shape[0], name="target_features"
    )
    model = None
  else:
    model = extraction.prepare(
      inputs.embed_fn,
      inputs.params,
      aux,
      targets.shape[1:],
      batch_size=cfg.eval_batch_size,
      mesh=mesh,
      workdir=workdir,
      purity_tolerance=cfg.purity_tolerance,
    )
    f_aux, f_tgt = model.features(aux, "aux_images"), model.features(targets, "target_images")
  if f_aux.shape[1] != f_tgt.shape[1]:
    raise ModelError(
      f"embed_fn returned {f_aux.shape[1]}-d features for aux_images but "
      f"{f_tgt.shape[1]}-d for target_images"
    )
  return f_aux, f_tgt, model


def _screened(inputs: inputs_lib.Inputs, f_aux, screened: screening.Screened):
  """(inputs, f_aux) without the auxiliary rows screening left out (logged), and each
  target's `feature_row` for per_image.csv."""
  for w in screened.warnings():
    logging.warning("features: %s", w)
  keep = screened.keep
  aux_ids, target_ids = inputs.sweep_labels
  inputs = dataclasses.replace(
    inputs,
    aux=inputs.aux[keep],
    sweep_labels=(None if aux_ids is None else aux_ids[keep], target_ids),
    per_target={**inputs.per_target, "feature_row": screened.target_flags()},
  )
  return inputs, f_aux[keep]


def _judge(inputs: inputs_lib.Inputs, cfg, mesh, workdir) -> judge.Judge:
  """The independent evaluator, calibrated on the original targets."""
  return judge.prepare(
    inputs.evaluator,
    inputs.aux,
    inputs.targets,
    inputs.labels,
    settings_lib.judge(cfg),
    mesh=mesh,
    workdir=workdir,
  )


def _round(cfg, targets, model, the_judge, mesh, workdir, timer) -> Round:
  """The attack-and-score round of this audit's settings."""
  return Round(
    attacks=cfg.attacks,
    targets=targets,
    scoring=settings_lib.scoring(cfg),
    thresholds=cfg.risk,
    metric_thresholds=settings_lib.metric_thresholds(cfg),
    val_fraction=cfg.val_fraction,
    seed=cfg.seed,
    overwrite=cfg.overwrite,
    mesh=mesh,
    workdir=workdir,
    model=model,
    judge=the_judge,
    timer=timer,
    fast_verdict=cfg.fast_verdict,
  )


def _sweep(
  inputs: inputs_lib.Inputs, cfg, round_, result, deciding, f_aux, f_tgt, the_judge, model
) -> dict:
  """The defense sweep (defenses/sweep.py) with the sweep's attackers, blind to the model;
  a learning defense trains on the model's features of the defender's split."""
  settings = settings_lib.sweep(cfg)
  defender = None
  if inputs.defender is not None:
    own_images, own_labels, name = inputs.defender
    defender = sweep.Defender(
      model.features(own_images, "defender_images"), own_images, own_labels, name
    )
  calibration = None if the_judge is None else the_judge.calibration
  sweep_labels = inputs.sweep_labels
  return sweep.run(
    round_.with_attackers(settings.attackers),
    inputs.aux,
    f_aux=f_aux,
    f_tgt=f_tgt,
    aux_labels=sweep_labels[0],
    target_labels=sweep_labels[1],
    settings=settings,
    data_key=workdir_lib.array_hash(
      f_aux,
      f_tgt,
      inputs.aux,
      inputs.targets,
      *(x for x in sweep_labels if x is not None),
      *(() if calibration is None else (calibration.embeddings, np.array(calibration.thresholds))),
    ),
    audit={"risk_level": result.verdicts[deciding][0], "deciding_attack": deciding},
    deciding_models_defense=attacks.capabilities(cfg.attacks[deciding].type).models_defense,
    defender=defender,
  )


def _write(report, workdir, per_row):
  if workdir is None:
    return
  if parallel.is_writer():
    report_lib.write(report, workdir, per_row=per_row)
    logging.info("report written to %s", workdir)
  else:
    logging.info("process %d: report files are process 0's to write", jax.process_index())
