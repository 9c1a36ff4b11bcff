"""The audit, end to end: extract, train the inverse model, reconstruct, score, judge.

`assess` is the public entry point (the Python API); `run` is what launch.py calls:
it loads the configured data and model, then calls `assess`, so the CLI and the API
share one code path.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import platform
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from privjax import (
  attacks,
  embedding,
  identity,
  logs,
  metrics,
  parallel,
  recognition,
  risk,
  scoring,
  sources,
  sweep,
)
from privjax import cache as cache_lib
from privjax import config as config_lib
from privjax import data as data_lib
from privjax import report as report_lib
from privjax import workdir as workdir_lib
from privjax.attacks import runner
from privjax.errors import ConfigError, DataError, ModelError, PrivjaxError
from privjax.train import split_validation

_VERSIONED = (
  "privjax",
  "jax",
  "jaxlib",
  "flax",
  "optax",
  "orbax-checkpoint",
  "dm-pix",
  "ml-collections",
  "numpy",
)


class _Timer:
  def __init__(self, log: bool = True):
    self.seconds = {}
    self.log = log  # False: time silently (the defense sweep logs a line per point)

  @contextlib.contextmanager
  def stage(self, name):
    if self.log:
      logging.info("stage %s ...", name)
    t = time.perf_counter()
    yield
    self.seconds[name] = round(time.perf_counter() - t, 3)
    if self.log:
      logging.info("stage %s done in %.1fs", name, self.seconds[name])


def _versions():
  out = {"python": platform.python_version()}
  for name in _VERSIONED:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out


def extract_features(
  embed_jit, params, images, *, mesh, batch_size: int, name: str, who: str = "embed_fn"
):
  """Embeds [N, H, W, C] images with a jitted `embed_fn(params, images)`; returns [N, D].

  `who` names the function in errors ("embed_fn", "the evaluator's embed_fn").
  """
  out = parallel.batched_map(
    functools.partial(embed_jit, params), [images], batch_size=batch_size, mesh=mesh
  )
  if not isinstance(out, np.ndarray) or out.ndim != 2:
    shape = getattr(out, "shape", type(out).__name__)
    raise ModelError(f"{who} must return features of rank 2 [N, D], got {shape} for {name}")
  if not np.all(np.isfinite(out)):
    bad = int(np.sum(~np.all(np.isfinite(out), axis=1)))
    raise ModelError(f"{who} returned non-finite features for {bad} of {len(out)} {name}")
  return out.astype(np.float32)


def _check_features(features, n: int, *, name: str) -> np.ndarray:
  try:
    f = np.asarray(features, np.float32)
  except (TypeError, ValueError) as e:
    raise DataError(f"{name} must be a numeric array [N, D], got {type(features).__name__}") from e
  if f.ndim != 2 or f.shape[0] != n:
    raise DataError(f"{name} must have shape [{n}, D] (one row per image), got {f.shape}")
  if not np.all(np.isfinite(f)):
    raise DataError(f"{name} contains non-finite values (NaN or inf)")
  return f


def _guarded(fn, image_shape, who: str = "embed_fn"):
  """Turns the model's own rejection of the input shape into a one-line ModelError."""

  def call(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except PrivjaxError:
      raise  # already a one-line error of ours (rank, finiteness): keep its message
    except (TypeError, ValueError) as e:
      # The one-line error says what went wrong; the log at --verbosity=1 keeps where (a
      # bug inside embed_fn), without a traceback on every user's screen.
      logging.vlog(1, "%s raised:", who, exc_info=True)
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise ModelError(
        f"{who} rejected images of shape [N, {', '.join(map(str, image_shape))}]: {first} "
        "(--verbosity=1 logs its traceback)"
      ) from e

  return call


def _check_inputs(aux_images, target_images, target_labels, config):
  aux = data_lib.check_images(aux_images, name="aux_images")
  targets = data_lib.check_images(target_images, name="target_images")
  if aux.shape[1:] != targets.shape[1:]:
    raise DataError(
      f"aux_images and target_images must have the same image shape, got {aux.shape[1:]} and "
      f"{targets.shape[1:]}"
    )
  labels = data_lib.check_labels(target_labels, targets.shape[0], name="target_labels")
  names = None if labels is None else data_lib.encode_labels(target_labels, name="")[1]
  label_names = None if names is None else [names[i] for i in labels]  # per target
  cfg = config_lib.for_images(targets.shape[1:], config)
  config_lib.validate(cfg)
  if targets.shape[0] < cfg.min_targets:
    raise DataError(
      f"need at least config.min_targets={cfg.min_targets} target images for the rates and "
      f"confidence intervals, got {targets.shape[0]}"
    )
  n_val = max(1, int(round(cfg.train.val_fraction * aux.shape[0])))
  if aux.shape[0] - n_val < 2:
    raise DataError(
      f"need at least {n_val + 2} auxiliary images for the attackers to fit and validate "
      f"on, got {aux.shape[0]}"
    )
  for i, fraction in enumerate(cfg.attack_strength.aux_fractions):
    k = _part_size(fraction, aux.shape[0])
    if k - max(1, int(round(cfg.train.val_fraction * k))) < 2:
      raise ConfigError(
        f"config.attack_strength.aux_fractions[{i}]={fraction} leaves {k} of the "
        f"{aux.shape[0]} auxiliary images, too few for an attacker to fit and validate on"
      )
  return aux, targets, (labels, label_names), cfg


def _part_size(fraction: float, n: int) -> int:
  """How many of n auxiliary images an attack_strength fraction keeps."""
  return int(round(fraction * n))


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
  metadata: dict | None = None,
  progress: bool = True,
) -> report_lib.Report:
  """Audits how much `embed_fn`'s features leak the images they came from.

  Args:
    embed_fn: a pure, jittable `embed_fn(params, images) -> features`, images
      [N, H, W, C] float32 in [0, 1], features [N, D].
    params: any pytree of arrays (or None) passed to `embed_fn`.
    aux_images: [N_aux, H, W, C] the attacker's auxiliary images (disjoint from the
      targets): the decoder is trained on their features.
    target_images: [N, H, W, C] the images whose features are attacked.
    config: an audit config (see `privjax.config.audit_config`); None uses the
      defaults, with the SSIM window fitted to the image size.
    workdir: where checkpoints and report files go; None writes no files.
    target_labels: optional [N] labels of the targets (identities or classes).
    aux_features, target_features: stored features [N_aux, D] and [N, D] for a
      black-box audit (a leaked database): pass them with `embed_fn=None`; nothing
      is embedded, and type-I re-identification is not measured (no model to
      re-embed the reconstructions with), which the report says.
    evaluator: an independent recognition model (`privjax.Evaluator`) that judges
      identity leakage (type I / type II success at a false match rate, rank-1; see
      privjax.identity); needs `target_labels` (identities). None: not checked, which
      the report says.
    target_sources: optional [N] strings saying where each target came from (a file
      name, a record id), written beside each row of per_image.csv.
    aux_labels: optional [N_aux] labels of the auxiliary images, in the same terms as
      `target_labels`: the defense sweep (config.defense.sweep) measures utility with
      them (k-NN identification against the auxiliary gallery, a linear probe).
    metadata: optional JSON-ready dict stored under "metadata" in the report.
    progress: print progress to stderr (stages, training steps with images/s and ETA,
      the verdict); False prints warnings only. The command line always shows it.

  Returns:
    A `Report`; `report.to_dict()` has every metric and the verdict.
  """
  t_start = time.perf_counter()
  aux, targets, (labels, label_names), cfg = _check_inputs(
    aux_images, target_images, target_labels, config
  )
  if target_sources is not None and len(target_sources) != targets.shape[0]:
    raise DataError(
      f"target_sources must name each of the {targets.shape[0]} targets, got {len(target_sources)}"
    )
  per_target = {"label_name": label_names, "source": target_sources}
  sweep_labels = _sweep_labels(target_labels, aux_labels, aux.shape[0])
  precomputed = embed_fn is None
  if precomputed and (aux_features is None or target_features is None):
    raise ModelError("embed_fn is None: pass aux_features and target_features (stored features)")
  if not precomputed and (aux_features is not None or target_features is not None):
    raise ModelError("pass either embed_fn or stored aux_features/target_features, not both")
  if evaluator is not None:
    if not isinstance(evaluator, identity.Evaluator) or not callable(evaluator.embed_fn):
      raise ModelError(
        f"evaluator must be a privjax.Evaluator(embed_fn, params), got {type(evaluator).__name__}"
      )
    if labels is None:
      raise DataError(
        "an evaluator judges identities: pass target_labels (from the CLI: labels via "
        "config.data.label_key or identity subfolders)"
      )
  lock = workdir_lib.locked(workdir) if workdir is not None else contextlib.nullcontext()
  with logs.progress(progress), lock as wd:
    return _audit(
      embed_fn,
      params,
      aux,
      targets,
      labels,
      cfg,
      wd,
      aux_features,
      target_features,
      evaluator,
      per_target,
      sweep_labels,
      metadata,
      t_start,
    )


def _sweep_labels(target_labels, aux_labels, n_aux):
  """(aux ids, target ids) in one encoding for the sweep's utility, or (None, None)."""
  if aux_labels is None or target_labels is None:
    return None, None
  data_lib.check_labels(aux_labels, n_aux, name="aux_labels")
  t, a = np.asarray(target_labels), np.asarray(aux_labels)
  if (t.dtype.kind in "US") != (a.dtype.kind in "US"):
    raise DataError(
      f"aux_labels and target_labels must both be integers or both names, got {a.dtype} "
      f"and {t.dtype}"
    )
  ids = data_lib.encode_labels(np.concatenate([t, a]), name="labels")[0]
  return ids[len(t) :], ids[: len(t)]


def _as_arrays(params):
  """`params` with every leaf an array: NumPy-compatible leaves converted, others refused."""

  def leaf(path, x):
    if isinstance(x, jax.Array):
      return x
    try:
      a = np.asarray(x)
    except Exception as e:  # an object NumPy cannot convert
      raise ModelError(
        f"params{jax.tree_util.keystr(path)} is a {type(x).__name__}, not an array"
      ) from e
    if a.dtype.kind not in "biuf":
      raise ModelError(
        f"params{jax.tree_util.keystr(path)} must be a numeric array, got "
        f"{type(x).__name__} ({a.dtype})"
      )
    return a

  return jax.tree_util.tree_map_with_path(leaf, params)


def _model_key(embed_jit, params, image_shape, batch_size: int) -> str:
  """A hash of the model's lowered program and its params: any change to either changes it."""
  sample = jax.ShapeDtypeStruct((batch_size, *image_shape), jnp.float32)
  program = embed_jit.lower(params, sample).as_text()
  return workdir_lib.array_hash(np.frombuffer(program.encode(), np.uint8), params)


def check_deterministic(
  embed_jit, params, images, *, mesh, batch_size: int, who: str = "embed_fn"
) -> None:
  """Stops with one line if `embed_fn` is not a pure function of (params, images).

  Embeds the first images in a batch of the extraction's size twice, once reversed,
  and once in a small batch (another trace), and compares: an impure embed_fn (state,
  randomness, different features on each trace, batch-dependent outputs) would make
  every later number meaningless.
  """
  k, m = min(len(images), 2 * mesh.size), min(len(images), batch_size)

  def embed(x, b):
    return extract_features(
      embed_jit, params, x, mesh=mesh, batch_size=b, name="probe images", who=who
    )

  full = embed(images[:m], batch_size)
  checks = (
    (embed(images[:m], batch_size), full, "embedded twice"),
    (embed(images[:m][::-1], batch_size)[::-1], full, "embedded in reverse order"),
    (embed(images[:k], k), full[:k], "embedded in a batch of another size"),
  )
  scale = max(float(np.abs(full).max()), 1e-6)
  for got, want, how in checks:
    diff = float(np.abs(got - want).max())
    if diff > 1e-4 * scale:
      raise ModelError(
        f"{who} is not deterministic: the same images {how} gave features differing by "
        f"{diff:.3g} (max |feature| {scale:.3g}); it must be a pure function of (params, images)"
      )


def _cached_features(
  embed_jit, params, images, *, mesh, batch_size, name, cache_dir, model_key, who="embed_fn"
):
  """`extract_features`, cached (checksummed) in `cache_dir` under a key of model and images."""
  extract = functools.partial(
    extract_features,
    embed_jit,
    params,
    images,
    mesh=mesh,
    batch_size=batch_size,
    name=name,
    who=who,
  )
  if cache_dir is None:
    return extract()
  key = workdir_lib.array_hash(np.frombuffer(model_key.encode(), np.uint8), images)
  path = os.path.join(cache_dir, f"{name}-{key[:32]}.npz")
  stored = cache_lib.load(path)
  if stored is not None:
    logging.info("features of %s restored from %s", name, path)
    return stored[0]["features"]
  features = extract()
  cache_lib.save(path, {"features": features})
  return features


def _audit(
  embed_fn,
  params,
  aux,
  targets,
  labels,
  cfg,
  workdir,
  aux_features,
  target_features,
  evaluator,
  per_target,
  sweep_labels,
  metadata,
  t_start,
):
  """Extract, attack, score, judge, report: the stages, each a function below."""
  timer = _Timer()
  mesh = parallel.data_mesh()
  if embed_fn is not None and len(cfg.defense.sweep):  # before anything is written
    sample = jax.ShapeDtypeStruct((1, *targets.shape[1:]), jnp.float32)
    out = _guarded(jax.eval_shape, targets.shape[1:])(embed_fn, params, sample)
    config_lib.check_sweep(cfg, dim=int(out.shape[-1]) if getattr(out, "ndim", 0) == 2 else None)
  with timer.stage("extraction"):
    if embed_fn is None:
      f_aux = _check_features(aux_features, aux.shape[0], name="aux_features")
      f_tgt = _check_features(target_features, targets.shape[0], name="target_features")
      model = None
    else:
      f_aux, f_tgt, model = _extract(
        embed_fn, params, aux, targets, cfg=cfg, mesh=mesh, workdir=workdir
      )
    if f_aux.shape[1] != f_tgt.shape[1]:
      raise ModelError(
        f"embed_fn returned {f_aux.shape[1]}-d features for aux_images but "
        f"{f_tgt.shape[1]}-d for target_images"
      )
  config_lib.check_sweep(cfg, dim=f_aux.shape[1])  # the strengths bounded by the width
  calibration = judge = None
  if evaluator is not None:
    with timer.stage("identity"):
      calibration, judge = _evaluator(evaluator, aux, targets, labels, cfg, mesh, workdir)
  attack = functools.partial(
    _attack_and_score,
    targets=targets,
    f_tgt=f_tgt,
    model=model,
    cfg=cfg,
    mesh=mesh,
    workdir=workdir,
    timer=timer,
    judge=judge,
  )
  outcomes, scores, verdicts = attack(aux, f_aux)
  strength = _attack_strength(attack, aux, f_aux, scores, cfg)
  with timer.stage("scoring"):
    mean_image_ssim = _mean_image_ssim(aux, targets, cfg=cfg, mesh=mesh)
  deciding = risk.most_severe(
    {
      n: (v[0], scores[n].gain_ci[0], float(scores[n].per_image["image_reid_hit"].mean()))
      for n, v in verdicts.items()
    }
  )
  defense = None
  if len(cfg.defense.sweep):
    with timer.stage("defense_sweep"):
      defense = sweep.run(
        functools.partial(
          _attack_and_score,
          aux,
          targets=targets,
          model=None,
          cfg=_sweep_config(cfg),
          mesh=mesh,
          workdir=workdir,
          timer=_Timer(log=False),
          judge=judge,
        ),
        f_aux=f_aux,
        f_tgt=f_tgt,
        aux_labels=sweep_labels[0],
        target_labels=sweep_labels[1],
        split=split_validation(aux.shape[0], cfg.train.val_fraction, cfg.seed),
        cfg=cfg,
        mesh=mesh,
        workdir=workdir,
        data_key=workdir_lib.array_hash(
          f_aux,
          f_tgt,
          aux,
          targets,
          *(x for x in sweep_labels if x is not None),
          *(
            ()
            if calibration is None
            else (calibration.embeddings, np.array(calibration.thresholds))
          ),
        ),
        audit={"risk_level": verdicts[deciding][0], "deciding_attack": deciding},
      )
  report = report_lib.build(
    outcomes=outcomes,
    scores=scores,
    verdicts=verdicts,
    deciding=deciding,
    targets=targets,
    aux_count=aux.shape[0],
    labels=labels,
    per_target=per_target,
    feature_dim=int(f_tgt.shape[1]),
    mean_image_ssim=mean_image_ssim,
    model_reid=model is not None,
    strength=strength,
    calibration=calibration,
    evaluator_info=None if evaluator is None else evaluator.info,
    defense=defense,
    config=cfg,
    environment=_environment(metadata, dict(timer.seconds, total=_since(t_start))),
  )
  if workdir is not None:
    if parallel.is_writer():
      report_lib.write(report, workdir, per_row=cfg.grid_examples)
      logging.info("report written to %s", workdir)
    else:
      logging.info("process %d: report files are process 0's to write", jax.process_index())
  logging.info(
    "verdict: %s risk (decided by %s); %s",
    report.risk_level,
    deciding,
    "; ".join(verdicts[deciding][1]),
  )
  return report


def _extract(embed_fn, params, aux, targets, *, cfg, mesh, workdir):
  """Features of the auxiliary and target images through a JAX model, checked and cached.

  Returns (aux features, target features, model): model is (embed_fn, jitted embed_fn,
  replicated params, a key of the lowered program and params) for the attackers that
  use the model and for re-identification.
  """
  embed_jit, params, model_key, features = _prepared(
    embed_fn, params, aux, targets.shape[1:], cfg=cfg, mesh=mesh, workdir=workdir
  )
  f_aux, f_tgt = (
    features(images, name) for images, name in ((aux, "aux_images"), (targets, "target_images"))
  )
  return f_aux, f_tgt, (embed_fn, embed_jit, params, model_key)


def _prepared(embed_fn, params, probe, image_shape, *, cfg, mesh, workdir, who="embed_fn"):
  """A model ready to embed: jitted, params replicated, keyed, probed for determinism on
  `probe` images. Returns (jitted fn, params, key, `features(images, name)`: cached)."""
  eb = cfg.eval_batch_size
  embed_jit = jax.jit(embed_fn)
  params = parallel.replicate(_as_arrays(params), mesh)
  guarded = functools.partial(_guarded, image_shape=image_shape, who=who)
  model_key = guarded(_model_key)(embed_jit, params, image_shape, eb)
  guarded(check_deterministic)(embed_jit, params, probe, mesh=mesh, batch_size=eb, who=who)

  def features(images, name):
    return guarded(_cached_features)(
      embed_jit,
      params,
      images,
      mesh=mesh,
      batch_size=eb,
      name=name,
      cache_dir=os.path.join(workdir, "cache") if workdir else None,
      model_key=model_key,
      who=who,
    )

  return embed_jit, params, model_key, features


def _evaluator(evaluator, aux, targets, labels, cfg, mesh, workdir):
  """The independent evaluator's calibration on the original targets and its judge.

  Returns (calibration, judge): judge(reconstructions) -> identity.evaluate's output.
  """
  who = "the evaluator's embed_fn"
  embed_jit, params, _, features = _prepared(
    evaluator.embed_fn,
    evaluator.params,
    aux,
    targets.shape[1:],
    cfg=cfg,
    mesh=mesh,
    workdir=workdir,
    who=who,
  )
  common = {
    "mesh": mesh,
    "batch_size": cfg.eval_batch_size,
    "bootstrap_samples": cfg.bootstrap_samples,
    "seed": cfg.seed,
  }
  calibration = identity.calibrate(
    features(targets, "evaluator-target_images"), labels, fmrs=tuple(cfg.identity.fmrs), **common
  )
  logging.info(
    "evaluator: %d identities, %d targets with another image of their identity; thresholds %s",
    calibration.summary["num_identities"],
    calibration.summary["type2_targets"],
    ", ".join(
      f"{t:.3f} at FMR {f:g}" for f, t in zip(calibration.fmrs, calibration.thresholds, strict=True)
    ),
  )

  def judge(recon):
    e = _guarded(extract_features, targets.shape[1:], who)(
      embed_jit,
      params,
      recon,
      mesh=mesh,
      batch_size=cfg.eval_batch_size,
      name="reconstructions",
      who=who,
    )
    return identity.evaluate(calibration, e, **common)

  return calibration, judge


def _sweep_config(cfg):
  """The audit config with only the sweep's attackers (config.defense.attacks)."""
  out = ml_collections.ConfigDict(cfg.to_dict())
  out.attacks = ml_collections.ConfigDict(
    {n: cfg.attacks[n].to_dict() for n in config_lib.sweep_attackers(cfg)}
  )
  return out


def _attack_strength(attack, aux, f_aux, scores, cfg) -> list:
  """Every attacker re-run on nested random parts of the auxiliary set (the fractions in
  config.attack_strength.aux_fractions; a fraction's part includes every smaller one's)."""
  strength = []
  perm = np.random.default_rng((cfg.seed, 17)).permutation(aux.shape[0])
  for fraction in cfg.attack_strength.aux_fractions:
    part = np.sort(perm[: _part_size(fraction, aux.shape[0])])
    if fraction == 1.0:
      part_scores = scores
    else:
      _, part_scores, _ = attack(aux[part], f_aux[part], stage=f"aux{fraction:g}-")
    strength.append(
      {
        "aux_fraction": float(fraction),
        "num_aux": int(len(part)),
        "attacks": {n: sc.summary() for n, sc in part_scores.items()},
      }
    )
  return strength


def _mean_image_ssim(aux, targets, *, cfg, mesh) -> np.ndarray:
  """[N] SSIM of each target with the mean auxiliary image (a no-information reference)."""
  fs, sigma = cfg.ssim.filter_size, cfg.ssim.filter_sigma
  mean_aux = np.broadcast_to(aux.mean(axis=0, keepdims=True), targets.shape)
  return parallel.batched_map(
    jax.jit(functools.partial(metrics.ssim, filter_size=fs, filter_sigma=sigma)),
    [targets, mean_aux],
    batch_size=cfg.eval_batch_size,
    mesh=mesh,
  )


def _environment(metadata, seconds) -> dict:
  """What ran the audit: versions, devices, the caller's metadata and stage timings."""
  return {
    "versions": _versions(),
    "devices": {
      "count": jax.device_count(),
      "kind": jax.devices()[0].device_kind,
      "platform": jax.devices()[0].platform,
      "processes": jax.process_count(),
    },
    "metadata": metadata or {},
    "seconds": seconds,
  }


def _since(t_start: float) -> float:
  return round(time.perf_counter() - t_start, 3)


def _attack_and_score(
  aux,
  f_aux,
  f_tgt,
  *,
  targets,
  model,
  cfg,
  mesh,
  workdir,
  timer,
  judge=None,
  stage="",
  fitted=None,
):
  """Runs every configured attacker on (aux, f_aux) against the targets and scores each.

  `fitted`: fitted attackers kept across calls on the same auxiliary set (runner.run_all).
  Returns (outcomes, scores, verdicts): the runner's Outcomes, name -> Scores and name ->
  (level, reasons) of the attackers that ran.
  """
  eb = cfg.eval_batch_size
  standardize = attacks.Standardizer.fit(f_aux)
  attack_model = reembed = None
  if model is not None:
    embed_fn, embed_jit, params, model_key = model

    def embed_standardized(p, images):
      return standardize(embed_fn(p, images))

    attack_model = attacks.Model(embed_standardized, params, model_key)

    def reembed(images):
      f = _guarded(extract_features, targets.shape[1:])(
        embed_jit, params, images, mesh=mesh, batch_size=eb, name="reconstructions"
      )
      return standardize(f)

  # Stored features: the auxiliary features stand for the model (the runner keys each
  # attacker's reconstructions by the target features too).
  model_key = model[3] if model is not None else workdir_lib.array_hash(f_aux)
  train_idx, val_idx = split_validation(aux.shape[0], cfg.train.val_fraction, cfg.seed)
  # Everything an attacker's result depends on besides its own settings: the model (or
  # the stored features), the images and the held-out split (train.val_fraction).
  data_key = workdir_lib.array_hash(
    np.frombuffer(model_key.encode(), np.uint8), aux, targets, val_idx
  )
  with timer.stage(f"{stage}attacks"):
    outcomes = runner.run_all(
      cfg.attacks,
      attacks.AuxSet(standardize(f_aux), aux, train_idx, val_idx),
      standardize(f_tgt),
      context={
        "mesh": mesh,
        "seed": cfg.seed,
        "eval_batch_size": eb,
        "filter_size": cfg.ssim.filter_size,
        "filter_sigma": cfg.ssim.filter_sigma,
        "model": attack_model,
      },
      shared={"decoder": cfg.decoder.to_dict(), "train": cfg.train.to_dict()},
      data_key=data_key,
      workdir=workdir,
      overwrite=cfg.overwrite,
      stage=stage,
      fitted=fitted,
    )
  with timer.stage(f"{stage}attack_scoring"):
    scores = {
      o.name: scoring.score(
        o.reconstructions,
        targets,
        cfg=cfg,
        mesh=mesh,
        reembed=reembed,
        target_features=standardize(f_tgt),
        judge_identity=judge,
      )
      for o in outcomes
      if not o.skipped
    }
  verdicts = {
    name: risk.verdict(
      ssim_gain_ci_low=sc.gain_ci[0],
      image_reid_rate=float(sc.per_image["image_reid_hit"].mean()),
      reid_chance=1.0 / targets.shape[0],
      thresholds=cfg.risk,
      identity=_identity_input(sc.identity, cfg.risk.identity_fmr),
    )
    for name, sc in scores.items()
  }
  return outcomes, scores, verdicts


def _identity_input(judged, fmr):
  """(type-II SAR at `fmr`, its chance level) for the verdict; None when not measured."""
  row = None if judged is None else identity.at_fmr(judged, fmr)
  if row is None or "type2_sar" not in row:
    return None
  return row["type2_sar"]["rate"], max(fmr, row["impostor_accept"])


def run(config: ml_collections.ConfigDict, workdir: str) -> report_lib.Report:
  """The CLI's audit: load the configured data and model, then `assess` (same code path)."""
  t = time.perf_counter()
  embedding.validate(config.model)
  embedding.validate(config.evaluator, "evaluator")
  data = data_lib.load(config)
  precomputed = isinstance(data, sources.Precomputed)
  if precomputed != (config.model.kind == "precomputed"):
    raise ConfigError(
      "config.model.kind='precomputed' goes with an npz source holding aux/target features, "
      f"got model.kind={config.model.kind!r} and data.source={config.data.source!r}"
      + (" with features" if precomputed else "")
    )
  audit_cfg = ml_collections.ConfigDict(config.to_dict())
  for key in ("data", "model", "evaluator"):
    del audit_cfg[key]
  target_images = data.target_images if precomputed else data.targets.images
  evaluator_kind = _evaluator_kind(config, data, precomputed)
  # Check the whole config before any work, so a bad value costs nothing and writes nothing.
  checked = config_lib.for_images(target_images.shape[1:], audit_cfg)
  config_lib.validate(checked)
  if config.model.kind == "builtin":  # its feature width is known before it trains
    config_lib.check_sweep(checked, dim=config.model.embed_dim)
  elif precomputed:
    config_lib.check_sweep(checked, dim=data.aux_features.shape[1])
  with workdir_lib.locked(workdir) as workdir:
    mesh = parallel.data_mesh()
    model_info = {"kind": config.model.kind}
    if precomputed:
      embed_fn = params = aux_labels = None
      aux_images, target_labels = data.aux_images, data.target_labels
      features = {"aux_features": data.aux_features, "target_features": data.target_features}
    else:
      aux_images, features = data.aux.images, {}

      def named(labels):  # by name where the source names them (identity folders)
        if data.label_names is None or labels is None:
          return labels
        return np.asarray(data.label_names)[labels]

      target_labels, aux_labels = named(data.targets.labels), named(data.aux.labels)
      if config.model.kind == "builtin":
        if data.model_train is None or data.model_train.labels is None or data.aux.labels is None:
          raise ConfigError(
            "config.model.kind='builtin' trains a classifier: it needs config.data."
            "model_train_split and labels (config.data.label_key or identity subfolders)"
          )
        test = data_lib.Split(
          np.concatenate([data.aux.images, data.targets.images]),
          np.concatenate([data.aux.labels, data.targets.labels]),
        )
        embed_fn, params, info = _builtin(
          config, "model", data.model_train, test, workdir=workdir, mesh=mesh
        )
        model_info.update(info)
      else:
        embed_fn, params, info = _user_model(config, "model", target_images.shape[1:])
        model_info.update(info)
    evaluator = _load_evaluator(config, evaluator_kind, data, target_images, workdir, mesh)
    description = (
      f"npz {config.data.path}: stored features of {len(aux_images)} aux / "
      f"{len(target_images)} target images"
      if precomputed
      else data.description
    )
    return assess(
      embed_fn,
      params,
      aux_images,
      target_images,
      config=audit_cfg,
      workdir=workdir,
      target_labels=target_labels,
      **features,
      evaluator=evaluator,
      target_sources=None if precomputed else data.targets.sources,
      aux_labels=aux_labels,
      metadata={
        "data": description,
        "model": model_info,
        "data_config": config.data.to_dict(),
        "model_config": config.model.to_dict(),
        "evaluator_config": config.evaluator.to_dict(),
        "seconds_data_and_model": round(time.perf_counter() - t, 3),
      },
    )


def _builtin(config, field, train, test, *, workdir, mesh):
  """The builtin RecognitionCNN of config.`field`, trained (or restored) in the workdir."""
  mc = config[field]
  if mc.kind == "auto":  # the evaluator `_evaluator_kind` resolved to the builtin one
    mc = ml_collections.ConfigDict(dict(mc.to_dict(), kind="builtin"))
  ckpt_dir = os.path.join(workdir, "checkpoints", "recognition" if field == "model" else field)
  workdir_lib.claim_stage(
    ckpt_dir,
    {
      field: mc.to_dict(),
      "seed": config.seed,
      "train": workdir_lib.array_hash(train.images, train.labels),
      "test": workdir_lib.array_hash(test.images, test.labels),
    },
    overwrite=config.overwrite,
    what="recognition model" if field == "model" else field,
  )
  return recognition.train_or_restore(
    train,
    test,
    mc,
    seed=config.seed,
    eval_batch_size=config.eval_batch_size,
    mesh=mesh,
    checkpoint_dir=ckpt_dir,
    field=field,
  )


def _user_model(config, field, image_shape):
  """(embed_fn, params, info) of a "flax" or "function" config.`field`."""
  m = config[field]
  if m.kind == "flax":
    embed_fn, params = embedding.load_flax(m, image_shape, field)
    return (
      embed_fn,
      params,
      {"module": m.module, "checkpoint": m.checkpoint, "method": m.method or "__call__"},
    )
  embed_fn, params = embedding.load_function(m, config, field)
  return embed_fn, params, {"factory": m.factory}


def _evaluator_kind(config, data, precomputed) -> str:
  """The evaluator that will run ("off", "builtin", "flax", "function"), decided before any
  training: "auto" is "builtin" on labelled auxiliary and target images of two or more
  identities, else "off" (logged; the report says identity leakage was not checked); an
  explicit kind the data cannot serve is a one-line error now, not after training."""
  kind = config.evaluator.kind
  labels = data.target_labels if precomputed else data.targets.labels
  aux_labelled = not precomputed and data.aux.labels is not None
  identities = 0 if labels is None else len(np.unique(labels))
  if kind == "auto":
    if aux_labelled and identities >= 2:
      return "builtin"
    logging.warning(
      "config.evaluator.kind='auto': no labelled auxiliary and target images of two or more "
      "identities to train the builtin evaluator on, so identity leakage is not checked (the "
      "report says so)"
    )
    return "off"
  if kind == "off":
    return kind
  if labels is None:
    raise ConfigError(
      f"config.evaluator.kind={kind!r} judges identities: it needs labels on the targets "
      "(config.data.label_key or identity subfolders); set config.evaluator.kind='off' to "
      "audit without it (the report then says identity leakage was not checked)"
    )
  if identities < 2:
    raise DataError(
      f"config.evaluator.kind={kind!r} needs targets of at least 2 identities to fix its "
      f"thresholds from impostor pairs, got {len(labels)} targets of {identities} identity"
    )
  if kind == "builtin" and not aux_labelled:
    raise ConfigError(
      "config.evaluator.kind='builtin' is trained on the labelled auxiliary images, and "
      + ("this npz holds no auxiliary labels" if precomputed else "they have no labels")
      + "; use a 'flax' or 'function' evaluator, or config.evaluator.kind='off'"
    )
  return kind


def _load_evaluator(config, kind, data, target_images, workdir, mesh):
  """The independent evaluator (identity.Evaluator) of `_evaluator_kind`, or None."""
  if kind == "off":
    return None
  info = {"kind": kind}
  if kind == "builtin":
    embed_fn, params, trained = _builtin(
      config, "evaluator", data.aux, data.targets, workdir=workdir, mesh=mesh
    )
    info.update(trained, trained_on="the auxiliary set", tested_on="the targets")
  else:
    embed_fn, params, loaded = _user_model(config, "evaluator", target_images.shape[1:])
    info.update(loaded)
  return identity.Evaluator(embed_fn, params, info)
