"""Scoring reconstructions against their originals in a few lines, without the audit.

    import jax
    from privjax.scoring.api import score

    scores = score(originals, reconstructions, key=jax.random.key(0))
    scores.summary()  # {"ssim": ..., "ssim_gain": ..., "ssim_gain_ci": [lo, hi], ...}

`score` measures what the audit measures of one attacker's images, with the same
functions (privjax.scoring.metrics): per-image SSIM, PSNR and MSE; the no-information
baseline (each original's mean SSIM against the reconstructions of the OTHER originals, so
reconstructions that resemble every image gain nothing) and the percentile-bootstrap CI
of the mean gain over it; image-space rank-1 re-identification (each reconstruction's
SSIM with its own original strictly above every other original's) and its chance, 1 / N;
with labels, how often the best-matching original has the right label, and its chance.

Without a mesh it is one jnp program of plain arrays that runs under `jax.jit` (every
pair's SSIM in blocks of bounded memory). Given a mesh, or above `exact_max_targets`
images outside jit, it is the audit's own scoring stage (privjax.scoring.scores.score:
sharded over the devices, and a pixel-distance shortlist re-ranked by SSIM above
`exact_max_targets`), on the host.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from privjax.runtime import parallel
from privjax.scoring import metrics, scores

__all__ = ["ImageScores", "score"]

# The largest [B, H, W, C] batch of images whose per-image SSIM is computed at once.
_IMAGE_ELEMENTS = 2**22


class ImageScores(NamedTuple):
  """One set of reconstructions scored against its originals: a pytree of arrays (what a
  jitted `score` returns), with `summary()` for their means."""

  ssim: jax.Array  # [N] SSIM of each original and its reconstruction
  psnr: jax.Array  # [N] PSNR in dB, capped at scores.PSNR_CAP_DB (an exact image's is inf)
  mse: jax.Array  # [N]
  baseline_ssim: jax.Array  # [N] each original's mean SSIM against the other reconstructions
  image_reid_hit: jax.Array  # [N] bool: rank-1 re-identified by SSIM (ties are misses)
  best_match: jax.Array  # [N] int: the original each reconstruction matches best by SSIM
  ssim_gain_ci: jax.Array  # [2] 95% percentile-bootstrap CI of the mean of ssim - baseline
  label_hit: jax.Array | None = None  # [N] bool: best_match has the right label (labels given)
  label_chance: jax.Array | None = None  # the chance of a label match (labels given)

  @property
  def per_image(self) -> dict:
    """The [N] columns by the names of the audit's per_image.csv."""
    out = {
      "ssim": self.ssim,
      "psnr": self.psnr,
      "mse": self.mse,
      "baseline_ssim": self.baseline_ssim,
      "image_reid_hit": self.image_reid_hit,
    }
    return out if self.label_hit is None else {**out, "label_hit": self.label_hit}

  def summary(self) -> dict:
    """JSON-ready means (float64, on the host), by the names of the audit's report.json:
    ssim, psnr, mse, baseline_ssim, ssim_gain and its CI, image_reid_rate and its chance
    reid_chance (1 / N); with labels, image_label_match_rate and label_chance."""
    p = {k: np.asarray(v, np.float64) for k, v in self.per_image.items()}
    out = {
      "ssim": float(p["ssim"].mean()),
      "psnr": float(p["psnr"].mean()),
      "mse": float(p["mse"].mean()),
      "baseline_ssim": float(p["baseline_ssim"].mean()),
      "ssim_gain": float((p["ssim"] - p["baseline_ssim"]).mean()),
      "ssim_gain_ci": [metrics.host_float(v) for v in np.asarray(self.ssim_gain_ci)],
      "image_reid_rate": float(p["image_reid_hit"].mean()),
      "reid_chance": 1.0 / len(p["ssim"]),
    }
    if self.label_hit is not None:
      out["image_label_match_rate"] = float(p["label_hit"].mean())
      out["label_chance"] = metrics.host_float(self.label_chance)
    return out


def score(
  originals,
  reconstructions,
  *,
  key,
  labels=None,
  filter_size: int | None = None,
  filter_sigma: float | None = None,
  bootstrap_samples: int = 2000,
  mesh=None,
  exact_max_targets: int = 2000,
  batch_size: int = 256,
) -> ImageScores:
  """Scores reconstructions against their originals (see the module docstring).

  Args:
    originals: [N, H, W, C] images in [0, 1], N >= 2.
    reconstructions: [N, H, W, C] in [0, 1], reconstruction i of original i.
    key: a `jax.random` key (the bootstrap CI's; above `exact_max_targets`, also the
      shortlist's mismatched pairs').
    labels: optional [N] int labels of the originals (classes or identities).
    filter_size, filter_sigma: the SSIM window; None: 11 and 1.5 (Wang et al. 2004),
      shrunk to fit smaller images as the audit does (`metrics.ssim_window`).
    bootstrap_samples: resamples of the gain's CI.
    mesh: None: one jnp program on one device, which runs under jit. A mesh: the audit's
      scoring stage sharded over it (host numpy arrays back; not under jit).
    exact_max_targets: outside jit and without a mesh, more images than this are scored
      by the audit's stage over the default mesh; it scores all pairs up to this many,
      a pixel-distance shortlist re-ranked by SSIM above.
    batch_size: the audit stage's batch (with a mesh, or above `exact_max_targets`).

  Returns:
    An `ImageScores`; `.summary()` has the means and the CI as floats.
  """
  chex.assert_rank([originals, reconstructions], 4)
  chex.assert_equal_shape([originals, reconstructions])
  n, h, w, _ = originals.shape
  if n < 2:
    raise ValueError(f"scoring needs at least 2 images to mismatch for its baseline, got {n}")
  sigma = metrics.DEFAULT_SSIM_FILTER_SIGMA if filter_sigma is None else filter_sigma
  size, sigma = (
    metrics.ssim_window(h, w, filter_sigma=sigma) if filter_size is None else (filter_size, sigma)
  )
  traced = any(isinstance(x, jax.core.Tracer) for x in (originals, reconstructions, labels, key))
  if mesh is None and (traced or n <= exact_max_targets):
    return _exact(
      jnp.asarray(originals, jnp.float32),
      jnp.asarray(reconstructions, jnp.float32),
      key,
      None if labels is None else jnp.asarray(labels),
      filter_size=size,
      filter_sigma=sigma,
      bootstrap_samples=bootstrap_samples,
    )
  settings = {"batch_size": batch_size, "exact_max_targets": exact_max_targets}
  return _streamed(
    originals, reconstructions, key, labels, size, sigma, bootstrap_samples, mesh=mesh, **settings
  )


def _streamed(
  originals, reconstructions, key, labels, size, sigma, samples, *, mesh, **settings
) -> ImageScores:
  """The audit's own scoring stage (sharded over `mesh`, a shortlist above
  `exact_max_targets`) as `ImageScores`."""
  settings = scores.Settings(
    filter_size=size,
    filter_sigma=sigma,
    bootstrap_samples=samples,
    seed=int(jax.random.randint(jax.random.fold_in(key, 1), (), 0, 2**31 - 1)),
    shortlist=32,
    baseline_samples=64,
    **settings,
  )
  sc = scores.score(
    np.asarray(reconstructions, np.float32),
    np.asarray(originals, np.float32),
    settings=settings,
    mesh=parallel.data_mesh() if mesh is None else mesh,
    key=key,
  )
  p = sc.per_image
  out = ImageScores(
    p["ssim"],
    p["psnr"],
    p["mse"],
    p["baseline_ssim"],
    p["image_reid_hit"].astype(bool),
    sc.best_image_match,
    np.asarray(sc.gain_ci),
  )
  if labels is None:
    return out
  return out._replace(
    label_hit=np.asarray(metrics.label_hits(sc.best_image_match, labels)),
    label_chance=np.asarray(metrics.label_chance(labels)),
  )


def _per_image(originals, reconstructions, *, filter_size: int, filter_sigma: float) -> dict:
  """metrics.image_scores of [N, H, W, C] pairs, mapped over batches of bounded memory."""
  batch = max(1, min(originals.shape[0], _IMAGE_ELEMENTS // int(np.prod(originals.shape[1:]))))

  def one(pair):
    a, b = pair
    out = metrics.image_scores(a[None], b[None], filter_size=filter_size, filter_sigma=filter_sigma)
    return jax.tree.map(lambda x: x[0], out)

  return jax.lax.map(one, (originals, reconstructions), batch_size=batch)


@functools.partial(jax.jit, static_argnames=("filter_size", "filter_sigma", "bootstrap_samples"))
def _exact(
  originals, reconstructions, key, labels, *, filter_size, filter_sigma, bootstrap_samples
):
  """`score` on every pair at once: one jnp program."""
  window = {"filter_size": filter_size, "filter_sigma": filter_sigma}
  s = _per_image(originals, reconstructions, **window)
  sim = metrics.pairwise_ssim(reconstructions, originals, **window)  # [N recon, N originals]
  best = jnp.argmax(sim, axis=1)
  baseline = metrics.mismatched_baseline(sim)
  out = ImageScores(
    s["ssim"],
    jnp.minimum(s["psnr"], scores.PSNR_CAP_DB),
    s["mse"],
    baseline,
    metrics.rank1_hits(sim),
    best,
    metrics.bootstrap_mean_ci(s["ssim"] - baseline, key=key, samples=bootstrap_samples),
  )
  if labels is None:
    return out
  return out._replace(
    label_hit=metrics.label_hits(best, labels), label_chance=metrics.label_chance(labels)
  )
