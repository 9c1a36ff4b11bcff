"""Scoring an attacker's reconstructions of the targets: SSIM, PSNR, baseline, re-identification.

`score` is the one scoring stage every attacker goes through: per-target SSIM / PSNR /
MSE against the originals, the no-information baseline (each target against the other
targets' reconstructions by the same attacker, so no attacker can invent leakage), the
bootstrap CI of the gain, image-space rank-1 identification, and, when the audited
model can re-embed the reconstructions, model re-id. Each metric of config.metrics gets
the same treatment: its value per target, its baseline on mismatched pairs and the CI
of its gain (`metric_scores`).

This is the audit's scoring at scale: numpy on the host around programs sharded over the
mesh, and a shortlist above `reid.exact_max_targets`. Its arithmetic is
privjax.scoring.metrics' jnp functions (rank-1, the mismatched-pairs baseline, the
bootstrap with a `jax.random` key); privjax.scoring.api.score is the same scoring of plain
arrays in a few lines, under jit without a mesh.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from privjax.errors import ConfigError, ModelError
from privjax.registry import Registry, call_fn
from privjax.runtime import parallel
from privjax.scoring import metrics

__all__ = [
  "METRICS",
  "METRIC_BASELINE_SHIFTS",
  "PSNR_CAP_DB",
  "RESERVED_COLUMNS",
  "Scores",
  "Settings",
  "baseline_column",
  "baseline_shifts",
  "check_metrics",
  "identify",
  "mean_image_ssim",
  "metric_scores",
  "pairwise_ssim",
  "score",
  "shortlist",
]

# Per-target metrics beyond SSIM / PSNR / MSE: a registered name or a user's
# "package.module:function" in config.metrics; `fn(originals, reconstructions)` maps
# [B, H, W, C] batches in [0, 1] to [B] values, higher meaning more leakage, jittable.
# Each reaches per_image.csv, every attacker's row of report.json and report.html with its
# no-information baseline and gain, and, with thresholds, the verdict (risk.verdict) by
# the lower end of its gain's CI.
METRICS = Registry("metric")
# A metric's baseline pairs each target's original with the reconstruction of the target
# `shift` places on (cyclically), for this many distinct shifts drawn from the seed: a
# mismatched pair per target and shift, every reconstruction used once per shift, memory
# linear in N and the metric computed (1 + this) times.
METRIC_BASELINE_SHIFTS = 8
# per_image columns of the scoring stage and the report: no metric may take their names.
RESERVED_COLUMNS = (
  "index",
  "source",
  "label",
  "label_name",
  "ssim",
  "psnr",
  "mse",
  "baseline_ssim",
  "image_reid_hit",
  "reid_hit",
  "mean_image_ssim",
)

# Largest block of target pixels the shortlist sends to the devices at once (~128 MiB).
_SHORTLIST_BLOCK_ELEMENTS = 2**25
PSNR_CAP_DB = 100.0  # PSNR of an exact reconstruction is infinite; we report this cap.


_pairwise_ssim_jit = jax.jit(metrics.pairwise_ssim, static_argnames=("filter_size", "filter_sigma"))


def pairwise_ssim(queries, gallery, *, filter_size: int, filter_sigma: float, mesh=None):
  """[Q, G] SSIM of every (query, gallery) pair, [Q, H, W, C] x [G, H, W, C], in blocks of
  bounded memory.

  With a mesh, queries are sharded over the devices and each gallery block is replicated,
  the result a host numpy array; without one, `metrics.pairwise_ssim` on one device (a jax
  array). A block holds at most ~2^22 floats of pair products (16 MiB), whatever the
  dataset size.
  """
  if mesh is None:
    return _pairwise_ssim_jit(
      jnp.asarray(queries), jnp.asarray(gallery), filter_size=filter_size, filter_sigma=filter_sigma
    )
  h, w, c = gallery.shape[1:]
  side = max(mesh.size, int(math.sqrt(metrics.PAIRWISE_SSIM_ELEMENTS / (h * w * c))))
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


@functools.partial(jax.jit, static_argnames=("k",))
def _nearest_in_block(block, count, queries, *, k: int):
  """([Q, k] squared pixel distances, [Q, k] indices) of the k nearest each query among the
  first `count` rows of `block` (the rest is padding: never a candidate)."""
  d = metrics.squared_distances(queries, block)
  d = jnp.where(jnp.arange(block.shape[0]) < count, d, jnp.inf)
  neg, idx = jax.lax.top_k(-d, k)
  return -neg, idx


def shortlist(recon, targets, k: int, *, batch_size: int, mesh, block_rows: int = 0):
  """[N, k] indices of the k targets nearest each reconstruction by pixel distance.

  The targets go to the devices one block (`block_rows`; 0: ~128 MiB of pixels) at a time,
  never all of them on every device: each block's k nearest per reconstruction are merged
  into a running k nearest on the host, so a device holds one block and the host N x k.
  """
  n = targets.shape[0]
  pixels = int(np.prod(targets.shape[1:]))
  rows = min(n, block_rows or max(k, _SHORTLIST_BLOCK_ELEMENTS // pixels))
  rows = max(rows, k)
  best_d = np.zeros((recon.shape[0], 0), np.float32)
  best_i = np.zeros((recon.shape[0], 0), np.int64)
  for start in range(0, n, rows):
    block = targets[start : start + rows]
    fn = functools.partial(
      _nearest_in_block,
      parallel.replicate(jnp.asarray(parallel.pad_rows(block, rows)), mesh),
      jnp.int32(block.shape[0]),
      k=k,
    )
    d, i = parallel.batched_map(fn, [recon], batch_size=batch_size, mesh=mesh)
    best_d = np.concatenate([best_d, d], axis=1)
    best_i = np.concatenate([best_i, i + start], axis=1)
    keep = np.argsort(best_d, axis=1, kind="stable")[:, :k]
    best_d = np.take_along_axis(best_d, keep, axis=1)
    best_i = np.take_along_axis(best_i, keep, axis=1)
  return best_i


@dataclasses.dataclass(frozen=True)
class Settings:
  """What scoring reads from the config."""

  filter_size: int  # config.ssim: the SSIM window, fitted to the image size
  filter_sigma: float
  batch_size: int  # config.eval_batch_size
  bootstrap_samples: int  # config.bootstrap_samples: resamples of the gain's 95% CI
  seed: int  # config.seed
  exact_max_targets: int  # config.reid: all pairs up to this many targets, else ...
  shortlist: int  # ... the nearest originals by pixel distance, re-ranked by SSIM, and
  baseline_samples: int  # ... the baseline from this many mismatched pairs per target
  metrics: tuple = ()  # (name, type) of config.metrics: extra per-target metrics


def identify(recon, targets, own_ssim, *, settings: Settings, mesh) -> dict:
  """Image-space identification of each reconstruction among all original targets.

  Returns {"hits": [N] bool rank-1 (ties against the attacker), "best": [N] index of
  the best-matching original, "baseline": [N] mean SSIM of each original against the
  other targets' reconstructions, "exact": bool}. Exact all pairs up to
  `reid.exact_max_targets`; above, a pixel-distance shortlist re-ranked by SSIM.
  """
  fs, sigma = settings.filter_size, settings.filter_sigma
  n = targets.shape[0]
  if n <= settings.exact_max_targets:
    # s[j, i] = SSIM(original i, reconstruction j): rows are queries (reconstructions).
    s = pairwise_ssim(recon, targets, mesh=mesh, filter_size=fs, filter_sigma=sigma)
    # In float64: a float32 column sum of N SSIMs rounds by ~N ulps, which showed as a
    # gain of 1e-7 for an attacker that returns one image for every target.
    return {
      "hits": np.asarray(metrics.rank1_hits(s)),
      "best": np.argmax(s, axis=1),
      "baseline": metrics.mismatched_baseline(s.astype(np.float64)),
      "exact": True,
    }
  k = min(settings.shortlist, n - 1)
  nearest = shortlist(recon, targets, k + 1, batch_size=settings.batch_size, mesh=mesh)
  rows = np.arange(n)
  ssim_pairs = functools.partial(metrics.ssim_jit, filter_size=fs, filter_sigma=sigma)

  def pair_ssim(q_idx, g_idx):  # SSIM(original g, reconstruction q), gathered in chunks
    q_flat, g_flat = q_idx.ravel(), g_idx.ravel()
    chunk = 16 * settings.batch_size  # bounds host memory whatever N is
    out = [
      parallel.batched_map(
        ssim_pairs,
        [targets[g_flat[i : i + chunk]], recon[q_flat[i : i + chunk]]],
        batch_size=settings.batch_size,
        mesh=mesh,
      )
      for i in range(0, len(q_flat), chunk)
    ]
    return np.concatenate(out).reshape(g_idx.shape)

  others = np.where(nearest == rows[:, None], -1, nearest)  # the target itself: -1
  scores = np.where(
    others >= 0, pair_ssim(np.repeat(rows[:, None], k + 1, 1), np.maximum(others, 0)), -np.inf
  )
  best_other = scores.max(axis=1)
  best = np.where(own_ssim > best_other, rows, others[rows, np.argmax(scores, axis=1)])
  rng = np.random.default_rng((settings.seed, 11))
  m = min(settings.baseline_samples, n - 1)
  sampled = (rows[:, None] + rng.integers(1, n, size=(n, m))) % n  # never the target itself
  baseline = pair_ssim(sampled, np.repeat(rows[:, None], m, 1)).mean(axis=1)
  return {"hits": own_ssim > best_other, "best": best, "baseline": baseline, "exact": False}


@dataclasses.dataclass(frozen=True)
class Scores:
  """One attacker's scores on the targets."""

  per_image: dict  # name -> [N] array: ssim, psnr, mse, baseline_ssim, image_reid_hit[, reid_hit]
  best_image_match: np.ndarray  # [N] index of the original each reconstruction matches best
  best_model_match: np.ndarray | None  # [N] the same by the audited model's cosine, or None
  gain_ci: tuple[float, float]  # 95% bootstrap CI of the mean SSIM gain over the baseline
  exact: bool  # all pairs scored (else the shortlist estimate)
  identity: dict | None = None  # the evaluator's judgement (identity.evaluate), or None
  type2_scores: np.ndarray | None = None  # its type-II scores on identity.FINE_BINS (counts)
  metrics: tuple = ()  # the names of config.metrics' columns in per_image
  # name -> 95% bootstrap CI of the mean gain of config.metrics.<name> over its baseline
  metric_gain_ci: dict = dataclasses.field(default_factory=dict)

  def summary(self) -> dict:
    """JSON-ready means: ssim, psnr, mse, baseline_ssim, ssim_gain, its CI, re-id rates and,
    per config.metrics entry, {mean, baseline, gain, gain_ci}."""
    p = self.per_image
    out = {
      "ssim": float(p["ssim"].mean()),
      "psnr": float(p["psnr"].mean()),
      "mse": float(p["mse"].mean()),
      "baseline_ssim": float(p["baseline_ssim"].mean()),
      "ssim_gain": float((p["ssim"] - p["baseline_ssim"]).mean()),
      "ssim_gain_ci": [float(v) for v in self.gain_ci],
      "image_reid_rate": float(p["image_reid_hit"].mean()),
      "reid_rate": float(p["reid_hit"].mean()) if "reid_hit" in p else None,
    }
    if self.metrics:
      out["metrics"] = {
        name: {
          "mean": float(p[name].mean()),
          "baseline": float(p[baseline_column(name)].mean()),
          "gain": float((p[name] - p[baseline_column(name)]).mean()),
          "gain_ci": [float(v) for v in self.metric_gain_ci[name]],
        }
        for name in self.metrics
      }
    if self.identity is not None:
      out["identity"] = self.identity
    return out


def score(
  recon,
  targets,
  *,
  settings: Settings,
  mesh,
  reembed=None,
  target_features=None,
  judge_identity=None,
  key=None,
) -> Scores:
  """Scores reconstructions [N, H, W, C] of `targets` [N, H, W, C].

  Args:
    recon: the attacker's reconstructions, in target order.
    targets: the original target images.
    settings: the SSIM window, batch size, bootstrap and re-identification settings.
    mesh: the data mesh.
    reembed: optional `images -> features` of the audited model, for model re-id.
    target_features: [N, D] the targets' features in the same units as `reembed`'s.
    judge_identity: optional `recon -> (summary, {"type2_scores": ...})` of the
      independent evaluator (privjax.scoring.identity.evaluate on its embeddings).
    key: the `jax.random` key of the bootstrap CIs; None: `jax.random.key(settings.seed)`
      (the audit's). `settings.seed` still draws the shortlist's and the metrics'
      mismatched pairs.
  """
  key = jax.random.key(settings.seed) if key is None else key
  fs, sigma = settings.filter_size, settings.filter_sigma
  eb = settings.batch_size
  fn = functools.partial(metrics.image_scores_jit, filter_size=fs, filter_sigma=sigma)
  s = parallel.batched_map(fn, [targets, recon], batch_size=eb, mesh=mesh)
  ident = identify(recon, targets, s["ssim"], settings=settings, mesh=mesh)
  gain = s["ssim"] - ident["baseline"]
  per_image = {
    "ssim": s["ssim"].astype(np.float64),
    "psnr": np.minimum(s["psnr"], PSNR_CAP_DB).astype(np.float64),
    "mse": s["mse"].astype(np.float64),
    "baseline_ssim": ident["baseline"].astype(np.float64),
    "image_reid_hit": ident["hits"].astype(np.int64),
  }
  model_best = None
  if reembed is not None:
    per_image["reid_hit"], model_best = _model_reid(reembed(recon), target_features)
  metric_ci = _metric_columns(per_image, targets, recon, key=key, settings=settings, mesh=mesh)
  ci = metrics.bootstrap_mean_ci(gain, key=key, samples=settings.bootstrap_samples)
  identity, type2 = (None, None) if judge_identity is None else judge_identity(recon)
  return Scores(
    per_image,
    ident["best"],
    model_best,
    tuple(metrics.host_float(v) for v in ci),
    ident["exact"],
    identity,
    None if type2 is None else type2["type2_scores"],
    tuple(name for name, _ in settings.metrics),
    metric_ci,
  )


def _model_reid(f_rec, target_features) -> tuple[np.ndarray, np.ndarray]:
  """([N] rank-1 hits, [N] nearest target) of re-embedded reconstructions by cosine."""
  cos = np.asarray(
    metrics.cosine_similarity_matrix(jnp.asarray(f_rec), jnp.asarray(target_features))
  )
  return np.asarray(metrics.rank1_hits(cos)).astype(np.int64), np.argmax(cos, axis=1)


def _metric_columns(per_image: dict, targets, recon, *, key, settings: Settings, mesh) -> dict:
  """Each config.metrics entry's per-target values and baselines added to `per_image`;
  returns name -> the 95% CI of its gain over the baseline."""
  metric_ci = {}
  for name, kind in settings.metrics:
    own, base = metric_scores(name, kind, targets, recon, settings=settings, mesh=mesh)
    per_image[name], per_image[baseline_column(name)] = own, base
    ci = metrics.bootstrap_mean_ci(own - base, key=key, samples=settings.bootstrap_samples)
    metric_ci[name] = tuple(metrics.host_float(v) for v in ci)
  return metric_ci


@functools.cache
def _jitted(fn):
  return jax.jit(fn)


def baseline_column(name: str) -> str:
  """The per_image column of config.metrics.<name>'s no-information baseline."""
  return f"baseline_{name}"


def baseline_shifts(n: int, seed: int) -> np.ndarray:
  """The sorted shifts s in [1, n) of the metrics' baselines: target i's original against
  target (i + s) % n's reconstruction; min(METRIC_BASELINE_SHIFTS, n - 1) distinct ones,
  drawn from `seed` alone."""
  if n < 2:
    raise ModelError(f"a baseline needs at least 2 targets to mismatch, got {n}")
  k = min(METRIC_BASELINE_SHIFTS, n - 1)
  return np.sort(np.random.default_rng((seed, 13)).choice(np.arange(1, n), size=k, replace=False))


def metric_scores(name, kind, targets, recon, *, settings: Settings, mesh):
  """([N] values, [N] baseline) of config.metrics.<name> (a METRICS plug-in) in float64.

  The value: the metric of each target's original and its reconstruction. The baseline:
  what the same metric gives with no information about the target, its mean over the
  mismatched pairs of `baseline_shifts` (the target's original against other targets'
  reconstructions by the same attacker), as SSIM's baseline is. Every call of the metric
  goes through the plug-in guard and its output is checked at the seam.
  """
  plugin = METRICS.get(kind, field=f"metrics.{name}.type")
  own = _metric_values(name, plugin, targets, recon, settings=settings, mesh=mesh)
  n = targets.shape[0]
  rows = np.arange(n)
  base = np.zeros(n, np.float64)
  shifts = baseline_shifts(n, settings.seed)
  for s in shifts:  # one shifted copy of the reconstructions at a time
    others = recon[(rows + s) % n]
    base += _metric_values(name, plugin, targets, others, settings=settings, mesh=mesh)
  return own, base / len(shifts)


def _metric_values(name, plugin, targets, recon, *, settings: Settings, mesh) -> np.ndarray:
  """[N] float64 values of the metric `plugin` on (targets[i], recon[i]): jitted, batched
  over the mesh, through the plug-in guard (what a user's metric raises is one line naming
  it), checked at the seam (one finite number per image)."""
  values = call_fn(
    parallel.batched_map,
    plugin.name,
    f"metric {name!r}",
    ModelError,
    _jitted(plugin.fn),
    [targets, recon],
    batch_size=settings.batch_size,
    mesh=mesh,
    user=not plugin.builtin,
  )
  values = np.asarray(values)
  if values.shape != (targets.shape[0],) or not np.all(np.isfinite(values)):
    raise ModelError(
      f"metric {name!r} ({plugin.name}) must return one finite number per image, got shape "
      f"{values.shape}{'' if values.shape != (targets.shape[0],) else ' with non-finite values'}"
    )
  return values.astype(np.float64)


def check_metrics(metric_types, image_shape) -> None:
  """Refuses in one line, before any work, a config.metrics entry that cannot score images
  of `image_shape` ([H, W, C]): a name another per_image column has, a metric that raises
  on such images or returns other than one number per image. Each is traced once on a
  batch of two abstract images (jax.eval_shape: nothing is computed).

  Args:
    metric_types: (name, type) of config.metrics, as Settings.metrics.
    image_shape: the targets' [H, W, C].
  """
  names = [name for name, _ in metric_types]
  for name, kind in metric_types:
    if name in RESERVED_COLUMNS:
      raise ConfigError(
        f"config.metrics.{name}: the name of one of privjax's own per_image.csv columns "
        f"{list(RESERVED_COLUMNS)}; rename the metric"
      )
    if baseline_column(name) in names:
      raise ConfigError(
        f"config.metrics.{name}: its baseline's per_image.csv column "
        f"{baseline_column(name)!r} is config.metrics.{baseline_column(name)}'s; rename one"
      )
    plugin = METRICS.get(kind, field=f"metrics.{name}.type")
    shape = "x".join(str(int(d)) for d in image_shape)
    spec = jax.ShapeDtypeStruct((2, *(int(d) for d in image_shape)), jnp.float32)
    out = call_fn(
      jax.eval_shape,
      plugin.name,
      f"config.metrics.{name} on {shape} images",
      ConfigError,
      plugin.fn,
      spec,
      spec,
      user=not plugin.builtin,
    )
    if getattr(out, "shape", None) != (2,):
      got = getattr(out, "shape", type(out).__name__)
      raise ConfigError(
        f"config.metrics.{name} ({plugin.name}) must return one number per image, [B]: "
        f"got {got} for a batch of 2 {shape} images"
      )


def mean_image_ssim(aux, targets, *, settings: Settings, mesh) -> np.ndarray:
  """[N] SSIM of each target with the mean auxiliary image (a no-information reference)."""
  mean_aux = np.broadcast_to(aux.mean(axis=0, keepdims=True), targets.shape)
  return parallel.batched_map(
    functools.partial(
      metrics.ssim_jit, filter_size=settings.filter_size, filter_sigma=settings.filter_sigma
    ),
    [targets, mean_aux],
    batch_size=settings.batch_size,
    mesh=mesh,
  )
