"""The audit, end to end: extract, train the inverse model, reconstruct, score, judge.

`assess` is the public entry point (the Python API); `run` is what launch.py calls:
it loads the configured data and model, then calls `assess`, so the CLI and the API
share one code path.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import io
import math
import os
import platform
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from privjax import config as config_lib
from privjax import data as data_lib
from privjax import embedding, metrics, parallel, recognition, risk, sources
from privjax import report as report_lib
from privjax import workdir as workdir_lib
from privjax.errors import ConfigError, DataError, ModelError, PrivjaxError
from privjax.train import train_decoder

# Largest [queries, gallery, H, W, C] float32 block of the all-pairs SSIM (~128 MiB).
_PAIRWISE_BLOCK_ELEMENTS = 2**25
_PSNR_CAP_DB = 100.0  # PSNR of an exact reconstruction is infinite; we report this cap.
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


_TYPE_I_REID = (
  "type I: reconstructions re-embedded with the audited model and ranked against the targets' "
  "features by cosine; can overstate leakage (a decoder can reproduce a low-dimensional "
  "embedding without reproducing the image), so the verdict does not use it"
)
_NO_MODEL_REID = (
  "not measured: the audit ran on stored features with no model to re-embed the "
  "reconstructions with; image-space re-identification (image_reid_rate) still applies"
)


class _Timer:
  def __init__(self):
    self.seconds = {}

  @contextlib.contextmanager
  def stage(self, name):
    logging.info("stage %s ...", name)
    t = time.perf_counter()
    yield
    self.seconds[name] = round(time.perf_counter() - t, 3)
    logging.info("stage %s done in %.1fs", name, self.seconds[name])


def _versions():
  out = {"python": platform.python_version()}
  for name in _VERSIONED:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out


def extract_features(embed_jit, params, images, *, mesh, batch_size: int, name: str):
  """Embeds [N, H, W, C] images with a jitted `embed_fn(params, images)`; returns [N, D]."""
  out = parallel.batched_map(
    functools.partial(embed_jit, params), [images], batch_size=batch_size, mesh=mesh
  )
  if not isinstance(out, np.ndarray) or out.ndim != 2:
    shape = getattr(out, "shape", type(out).__name__)
    raise ModelError(f"embed_fn must return features of rank 2 [N, D], got {shape} for {name}")
  if not np.all(np.isfinite(out)):
    bad = int(np.sum(~np.all(np.isfinite(out), axis=1)))
    raise ModelError(f"embed_fn returned non-finite features for {bad} of {len(out)} {name}")
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


def _guarded(fn, image_shape):
  """Turns the model's own rejection of the input shape into a one-line ModelError."""

  def call(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except PrivjaxError:
      raise  # already a one-line error of ours (rank, finiteness): keep its message
    except (TypeError, ValueError) as e:
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise ModelError(
        f"embed_fn rejected images of shape [N, {', '.join(map(str, image_shape))}]: {first}"
      ) from e

  return call


def pairwise_ssim(queries, gallery, *, mesh, filter_size: int, filter_sigma: float):
  """[Q, G] SSIM of every (query, gallery) pair, in blocks of bounded memory.

  Queries are sharded over the devices; each gallery block is replicated. A block
  holds at most ~2^25 floats of pair products (128 MiB), whatever the dataset size.
  """
  h, w, c = gallery.shape[1:]
  side = max(mesh.size, int(math.sqrt(_PAIRWISE_BLOCK_ELEMENTS / (h * w * c))))
  g_block = min(side, gallery.shape[0])
  columns = []
  for start in range(0, gallery.shape[0], g_block):
    g = parallel.pad_rows(gallery[start : start + g_block], g_block)
    g_dev = parallel.replicate(jnp.asarray(g), mesh)
    fn = functools.partial(
      metrics.pairwise_ssim_block,
      gallery=g_dev,
      filter_size=filter_size,
      filter_sigma=filter_sigma,
    )
    block = parallel.batched_map(fn, [queries], batch_size=side, mesh=mesh)
    columns.append(block[:, : min(g_block, gallery.shape[0] - start)])
  return np.concatenate(columns, axis=1)


def identify(recon, targets, own_ssim, *, cfg, mesh) -> dict:
  """Image-space identification of each reconstruction among all original targets.

  Returns {"hits": [N] bool rank-1 (ties against the attacker), "best": [N] index of
  the best-matching original, "baseline": [N] mean SSIM of each original against the
  other targets' reconstructions, "exact": bool}. Exact all pairs up to
  `reid.exact_max_targets`; above, a pixel-distance shortlist re-ranked by SSIM.
  """
  fs, sigma = cfg.ssim.filter_size, cfg.ssim.filter_sigma
  n = targets.shape[0]
  if n <= cfg.reid.exact_max_targets:
    # s[j, i] = SSIM(original i, reconstruction j): rows are queries (reconstructions).
    s = pairwise_ssim(recon, targets, mesh=mesh, filter_size=fs, filter_sigma=sigma)
    return {
      "hits": metrics.rank1_hits(s),
      "best": np.argmax(s, axis=1),
      "baseline": (s.sum(axis=0) - np.diag(s)) / (n - 1),
      "exact": True,
    }
  k = min(cfg.reid.shortlist, n - 1)
  t_dev = parallel.replicate(jnp.asarray(targets), mesh)
  nearest = jax.jit(lambda t, q: jax.lax.top_k(-metrics.squared_distances(q, t), k + 1)[1])
  shortlist = parallel.batched_map(  # targets passed as an argument, never a constant
    functools.partial(nearest, t_dev), [recon], batch_size=cfg.eval_batch_size, mesh=mesh
  )
  rows = np.arange(n)
  ssim_pairs = jax.jit(functools.partial(metrics.ssim, filter_size=fs, filter_sigma=sigma))

  def pair_ssim(q_idx, g_idx):  # SSIM(original g, reconstruction q), gathered in chunks
    q_flat, g_flat = q_idx.ravel(), g_idx.ravel()
    chunk = 16 * cfg.eval_batch_size  # bounds host memory whatever N is
    out = [
      parallel.batched_map(
        ssim_pairs,
        [targets[g_flat[i : i + chunk]], recon[q_flat[i : i + chunk]]],
        batch_size=cfg.eval_batch_size,
        mesh=mesh,
      )
      for i in range(0, len(q_flat), chunk)
    ]
    return np.concatenate(out).reshape(g_idx.shape)

  others = np.where(shortlist == rows[:, None], -1, shortlist)  # the target itself: -1
  scores = np.where(
    others >= 0, pair_ssim(np.repeat(rows[:, None], k + 1, 1), np.maximum(others, 0)), -np.inf
  )
  best_other = scores.max(axis=1)
  best = np.where(own_ssim > best_other, rows, others[rows, np.argmax(scores, axis=1)])
  rng = np.random.default_rng((cfg.seed, 11))
  m = min(cfg.reid.baseline_samples, n - 1)
  sampled = (rows[:, None] + rng.integers(1, n, size=(n, m))) % n  # never the target itself
  baseline = pair_ssim(sampled, np.repeat(rows[:, None], m, 1)).mean(axis=1)
  return {"hits": own_ssim > best_other, "best": best, "baseline": baseline, "exact": False}


def _check_inputs(aux_images, target_images, target_labels, config):
  aux = data_lib.check_images(aux_images, name="aux_images")
  targets = data_lib.check_images(target_images, name="target_images")
  if aux.shape[1:] != targets.shape[1:]:
    raise DataError(
      f"aux_images and target_images must have the same image shape, got {aux.shape[1:]} and "
      f"{targets.shape[1:]}"
    )
  labels = data_lib.check_labels(target_labels, targets.shape[0], name="target_labels")
  cfg = config_lib.for_images(targets.shape[1:], config)
  config_lib.validate(cfg)
  if targets.shape[0] < cfg.min_targets:
    raise DataError(
      f"need at least config.min_targets={cfg.min_targets} target images for the rates and "
      f"confidence intervals, got {targets.shape[0]}"
    )
  n_val = max(1, int(round(cfg.train.val_fraction * aux.shape[0])))
  if cfg.train.batch_size > aux.shape[0] - n_val:
    raise DataError(
      f"config.train.batch_size={cfg.train.batch_size} is larger than the "
      f"{aux.shape[0] - n_val} auxiliary images the decoder trains on"
    )
  if aux.shape[0] - n_val < 2:
    raise DataError(
      f"need at least {n_val + 2} auxiliary images to train and validate the "
      f"decoder, got {aux.shape[0]}"
    )
  return aux, targets, labels, cfg


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
  metadata: dict | None = None,
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
    metadata: optional JSON-ready dict stored under "metadata" in the report.

  Returns:
    A `Report`; `report.to_dict()` has every metric and the verdict.
  """
  t_start = time.perf_counter()
  aux, targets, labels, cfg = _check_inputs(aux_images, target_images, target_labels, config)
  precomputed = embed_fn is None
  if precomputed and (aux_features is None or target_features is None):
    raise ModelError("embed_fn is None: pass aux_features and target_features (stored features)")
  if not precomputed and (aux_features is not None or target_features is not None):
    raise ModelError("pass either embed_fn or stored aux_features/target_features, not both")
  lock = workdir_lib.locked(workdir) if workdir is not None else contextlib.nullcontext()
  with lock as wd:
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
      metadata,
      t_start,
    )


def _cached_features(embed_jit, params, images, *, mesh, batch_size, name, cache_dir):
  """`extract_features`, cached in `cache_dir` under a key of the computation and inputs.

  The key hashes the lowered program of `embed_fn` (so any change to the model's
  code changes it), its params and the images: a stale cache is never reused.
  """
  if cache_dir is None:
    return extract_features(embed_jit, params, images, mesh=mesh, batch_size=batch_size, name=name)
  sample = jax.ShapeDtypeStruct((batch_size, *images.shape[1:]), jnp.float32)
  program = embed_jit.lower(params, sample).as_text()
  key = workdir_lib.array_hash(np.frombuffer(program.encode(), np.uint8), params, images)
  path = os.path.join(cache_dir, f"{name}-{key[:32]}.npy")
  if os.path.exists(path):
    logging.info("features of %s restored from %s", name, path)
    return np.load(path)
  features = extract_features(
    embed_jit, params, images, mesh=mesh, batch_size=batch_size, name=name
  )
  if parallel.is_writer():
    buf = io.BytesIO()
    np.save(buf, features)
    workdir_lib.atomic_write(path, buf.getvalue())
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
  metadata,
  t_start,
):
  timer = _Timer()
  mesh = parallel.data_mesh()
  eb = cfg.eval_batch_size
  precomputed = embed_fn is None
  if not precomputed:
    embed_jit = jax.jit(embed_fn)
    params = parallel.replicate(params, mesh)
  cache = os.path.join(workdir, "cache") if workdir else None

  with timer.stage("extraction"):
    if precomputed:
      f_aux = _check_features(aux_features, aux.shape[0], name="aux_features")
      f_tgt = _check_features(target_features, targets.shape[0], name="target_features")
    else:
      f_aux, f_tgt = (
        _guarded(_cached_features, targets.shape[1:])(
          embed_jit, params, images, mesh=mesh, batch_size=eb, name=name, cache_dir=cache
        )
        for images, name in ((aux, "aux_images"), (targets, "target_images"))
      )
    if f_aux.shape[1] != f_tgt.shape[1]:
      raise ModelError(
        f"embed_fn returned {f_aux.shape[1]}-d features for aux_images but "
        f"{f_tgt.shape[1]}-d for target_images"
      )

  with timer.stage("decoder_training"):
    ckpt = None
    if workdir:
      ckpt = os.path.join(workdir, "checkpoints", "decoder")
      workdir_lib.claim_stage(
        ckpt,
        {
          "decoder": cfg.decoder.to_dict(),
          "train": cfg.train.to_dict(),
          "seed": cfg.seed,
          "seed_controls": "decoder initialisation, training batch order, the held-out validation "
          "part of the auxiliary set, the bootstrap resamples (and, from the CLI, the builtin "
          "model's init and batch order); the role splits follow data.split_seed",
          "ssim": cfg.ssim.to_dict(),
          "aux": workdir_lib.array_hash(f_aux, aux),
        },
        overwrite=cfg.overwrite,
        what="decoder checkpoint",
      )
    decoder, dparams, convergence = train_decoder(f_aux, aux, cfg, mesh=mesh, checkpoint_dir=ckpt)

  with timer.stage("reconstruction"):
    decode = jax.jit(decoder.apply)
    recon = parallel.batched_map(
      functools.partial(decode, dparams), [f_tgt], batch_size=eb, mesh=mesh
    )

  with timer.stage("scoring"):
    fs, sigma = cfg.ssim.filter_size, cfg.ssim.filter_sigma
    score = jax.jit(functools.partial(metrics.image_scores, filter_size=fs, filter_sigma=sigma))
    scores = parallel.batched_map(score, [targets, recon], batch_size=eb, mesh=mesh)
    mean_aux = np.broadcast_to(aux.mean(axis=0, keepdims=True), targets.shape)
    mean_image_ssim = parallel.batched_map(
      jax.jit(functools.partial(metrics.ssim, filter_size=fs, filter_sigma=sigma)),
      [targets, mean_aux],
      batch_size=eb,
      mesh=mesh,
    )
    n = targets.shape[0]
    ident = identify(recon, targets, scores["ssim"], cfg=cfg, mesh=mesh)
    mismatched = ident["baseline"]
    gain = scores["ssim"] - mismatched
    gain_ci = metrics.bootstrap_mean_ci(gain, samples=cfg.bootstrap_samples, seed=cfg.seed)
    image_hits = ident["hits"]

  model_hits = cos = None
  if not precomputed:
    with timer.stage("reidentification"):
      f_rec = _guarded(extract_features, targets.shape[1:])(
        embed_jit, params, recon, mesh=mesh, batch_size=eb, name="reconstructions"
      )
      cos = np.asarray(metrics.cosine_similarity_matrix(jnp.asarray(f_rec), jnp.asarray(f_tgt)))
      model_hits = metrics.rank1_hits(cos)

  chance = 1.0 / n
  level, reasons = risk.verdict(
    ssim_gain_ci_low=gain_ci[0],
    image_reid_rate=float(image_hits.mean()),
    reid_chance=chance,
    thresholds=cfg.risk,
  )
  psnr = np.minimum(scores["psnr"], _PSNR_CAP_DB)
  per_image = {
    "ssim": scores["ssim"].astype(np.float64),
    "psnr": psnr.astype(np.float64),
    "mse": scores["mse"].astype(np.float64),
    "baseline_ssim": mismatched.astype(np.float64),
    "mean_image_ssim": mean_image_ssim.astype(np.float64),
    "image_reid_hit": image_hits.astype(np.int64),
  }
  if model_hits is not None:
    per_image["reid_hit"] = model_hits.astype(np.int64)
  if labels is not None:
    per_image["label"] = labels.astype(np.int64)
  summary = {
    "risk_level": level,
    "risk_reasons": reasons,
    "ssim": float(scores["ssim"].mean()),
    "ssim_per_image": [float(v) for v in scores["ssim"]],
    "psnr": float(psnr.mean()),
    "mse": float(scores["mse"].mean()),
    "baseline_ssim": float(mismatched.mean()),
    "baseline": "mismatched pairs: each target's SSIM against the reconstructions of all "
    "other targets' features (what this decoder scores with no information about the target)"
    + (
      ""
      if ident["exact"]
      else f"; estimated from {cfg.reid.baseline_samples} random "
      "mismatched reconstructions per target"
    ),
    "image_reid_method": "exact: SSIM of every (reconstruction, original) pair"
    if ident["exact"]
    else f"shortlist: the {cfg.reid.shortlist} originals nearest in pixel distance to each "
    "reconstruction, re-ranked by exact SSIM (N > reid.exact_max_targets); a competitor "
    "outside the shortlist can make this overstate the rate",
    "mean_image_ssim": float(mean_image_ssim.mean()),
    "ssim_gain": float(gain.mean()),
    "ssim_gain_ci": gain_ci,
    "image_reid_rate": float(image_hits.mean()),
    "image_reid": "rank-1: the reconstruction's SSIM with its own original is strictly higher "
    "than with every other target (ties count as misses); independent of the audited model",
    "reid_rate": None if precomputed else float(model_hits.mean()),
    "reid": _NO_MODEL_REID if precomputed else _TYPE_I_REID,
    "reid_chance": chance,
    "num_targets": int(n),
    "num_aux": int(aux.shape[0]),
    "image_shape": list(targets.shape[1:]),
    "feature_dim": int(f_tgt.shape[1]),
    "ssim_definition": {
      "implementation": "dm_pix.ssim (Gaussian window, valid region, K1=0.01, K2=0.03, "
      "data range 1, mean over valid positions and channels); equals skimage "
      "structural_similarity(gaussian_weights=True, use_sample_covariance=False)",
      "filter_size": int(fs),
      "filter_sigma": float(sigma),
    },
    "psnr_cap_db": _PSNR_CAP_DB,
    "convergence": convergence,
    "config": cfg.to_dict(),
    "seed": cfg.seed,
    "seed_controls": "decoder initialisation, training batch order, the held-out validation "
    "part of the auxiliary set, the bootstrap resamples (and, from the CLI, the builtin "
    "model's init and batch order); the role splits follow data.split_seed",
    "versions": _versions(),
    "devices": {
      "count": jax.device_count(),
      "kind": jax.devices()[0].device_kind,
      "platform": jax.devices()[0].platform,
      "processes": jax.process_count(),
    },
    "metadata": metadata or {},
  }
  if labels is not None:
    summary["image_label_match_rate"] = float(metrics.label_hits(ident["best"], labels).mean())
    if cos is not None:
      best = np.argmax(cos, axis=1)
      summary["reid_label_match_rate"] = float(metrics.label_hits(best, labels).mean())
    summary["label_chance"] = metrics.label_chance(labels)
  summary["seconds"] = dict(timer.seconds, total=round(time.perf_counter() - t_start, 3))
  report = report_lib.Report(summary, per_image, targets, np.asarray(recon))
  if workdir is not None:
    if parallel.is_writer():
      report_lib.write(report, workdir, per_row=cfg.grid_examples)
      logging.info("report written to %s", workdir)
    else:
      logging.info("process %d: report files are process 0's to write", jax.process_index())
  logging.info("verdict: %s risk; %s", level, "; ".join(reasons))
  return report


def run(config: ml_collections.ConfigDict, workdir: str) -> report_lib.Report:
  """The CLI's audit: load the configured data and model, then `assess` (same code path)."""
  t = time.perf_counter()
  embedding.validate(config.model)
  data = data_lib.load(config)
  precomputed = isinstance(data, sources.Precomputed)
  if precomputed != (config.model.kind == "precomputed"):
    raise ConfigError(
      "config.model.kind='precomputed' goes with an npz source holding aux/target features, "
      f"got model.kind={config.model.kind!r} and data.source={config.data.source!r}"
      + (" with features" if precomputed else "")
    )
  audit_cfg = ml_collections.ConfigDict(config.to_dict())
  for key in ("data", "model"):
    del audit_cfg[key]
  target_images = data.target_images if precomputed else data.targets.images
  # Check the whole config before any work, so a bad value costs nothing and writes nothing.
  config_lib.validate(config_lib.for_images(target_images.shape[1:], audit_cfg))
  with workdir_lib.locked(workdir) as workdir:
    mesh = parallel.data_mesh()
    model_info = {"kind": config.model.kind}
    if precomputed:
      embed_fn = params = None
      aux_images, target_labels = data.aux_images, data.target_labels
      features = {"aux_features": data.aux_features, "target_features": data.target_features}
    else:
      aux_images, target_labels, features = data.aux.images, data.targets.labels, {}
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
        rec_dir = os.path.join(workdir, "checkpoints", "recognition")
        workdir_lib.claim_stage(
          rec_dir,
          {
            "model": config.model.to_dict(),
            "seed": config.seed,
            "train": workdir_lib.array_hash(data.model_train.images, data.model_train.labels),
            "test": workdir_lib.array_hash(test.images, test.labels),
          },
          overwrite=config.overwrite,
          what="recognition model",
        )
        embed_fn, params, info = recognition.train_or_restore(
          data.model_train,
          test,
          config,
          mesh=mesh,
          checkpoint_dir=rec_dir,
        )
        model_info.update(info)
      elif config.model.kind == "flax":
        embed_fn, params = embedding.load_flax(config.model, target_images.shape[1:])
        model_info.update(
          module=config.model.module,
          checkpoint=config.model.checkpoint,
          method=config.model.method or "__call__",
        )
      else:
        embed_fn, params = embedding.load_function(config.model, config)
        model_info.update(factory=config.model.factory)
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
      metadata={
        "data": description,
        "model": model_info,
        "data_config": config.data.to_dict(),
        "model_config": config.model.to_dict(),
        "seconds_data_and_model": round(time.perf_counter() - t, 3),
      },
    )
