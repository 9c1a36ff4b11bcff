"""Identity leakage judged by an independent evaluator: type I, type II, SAR@FMR, rank-1.

The evaluator is a second recognition model, independent of the audited one (another
architecture, seed and training data; or a real face model of the user's). Only its
embeddings of the ORIGINAL targets fix the decision thresholds (`calibrate`): at a
false match rate f, the threshold t_f is the lowest score that at most a fraction f of
impostor pairs (two originals of different identities) exceed; a pair is accepted when
its cosine similarity is > t_f. The reconstructions never move a threshold.

Per attacker (`evaluate`), with every reconstruction embedded by the evaluator:

  type I    reconstruction i against the evaluator's embedding of original i;
  type II   reconstruction i against the evaluator's embeddings of the OTHER originals of
            the same identity: the fraction accepted, per target (targets whose identity
            has a single image are excluded, and counted);
  SAR@FMR   the success-at-match rate: the mean over targets of the above, with a
            percentile-bootstrap 95% CI over targets;
  rank-1    identification among all identities: the nearest original other than the
            target's own is of the target's identity (strictly nearer than every other
            identity's originals; ties count as misses).

Reference levels, measured on the same targets: the evaluator's own genuine accept rate
(two originals of one identity, the type-II ceiling a perfect reconstruction reaches),
its own rank-1, and the attack's impostor accept rate (its reconstructions against
originals of OTHER identities at the same threshold: what a reconstruction carrying no
identity scores, which can exceed the FMR for an image that resembles many faces).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from privjax import metrics, parallel
from privjax.errors import DataError

HISTOGRAM_BINS = 40


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """An independent recognition model that judges identity leakage.

  Attributes:
    embed_fn: a pure, jittable `embed_fn(params, images) -> [N, D]`, images
      [N, H, W, C] float32 in [0, 1] (the audit's image shape).
    params: any pytree of arrays (or None) passed to `embed_fn`.
    info: JSON-ready facts the report states (kind, architecture, accuracy, ...).
  """

  embed_fn: Callable
  params: Any
  info: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Calibration:
  """The evaluator on the original targets: its embeddings, thresholds and own rates."""

  embeddings: np.ndarray  # [N, D] evaluator embeddings of the original targets
  labels: np.ndarray  # [N] int identities
  similarity: np.ndarray  # [N, N] cosine of every pair of originals
  fmrs: tuple  # the false match rates, as configured
  thresholds: tuple  # t_f per fmr: accept when cosine > t_f
  summary: dict  # JSON-ready: counts, thresholds, realised FMR, genuine accept rates, rank-1

  @property
  def genuine_scores(self) -> np.ndarray:
    iu = np.triu_indices(len(self.labels), 1)
    return self.similarity[iu][(self.labels[:, None] == self.labels[None, :])[iu]]

  @property
  def impostor_scores(self) -> np.ndarray:
    iu = np.triu_indices(len(self.labels), 1)
    return self.similarity[iu][(self.labels[:, None] != self.labels[None, :])[iu]]


@jax.jit
def _cosine(gallery, queries):
  return metrics.cosine_similarity_matrix(queries, gallery)


def similarity(queries, gallery, *, mesh, batch_size: int) -> np.ndarray:
  """[Q, G] cosine similarity of evaluator embeddings: queries sharded, gallery replicated."""
  g = parallel.replicate(jnp.asarray(gallery, jnp.float32), mesh)
  return parallel.batched_map(
    functools.partial(_cosine, g),
    [np.asarray(queries, np.float32)],
    batch_size=batch_size,
    mesh=mesh,
  )


def threshold_at(impostor: np.ndarray, fmr: float) -> float:
  """The lowest impostor score t with at most floor(fmr * M) of the M impostor scores > t."""
  d = np.sort(np.asarray(impostor, np.float64))[::-1]
  return float(d[min(int(math.floor(fmr * d.size)), d.size - 1)])


def _masks(labels):
  same = labels[:, None] == labels[None, :]
  other = same & ~np.eye(len(labels), dtype=bool)  # same identity, not the image itself
  return other, ~same


def _accept_rates(sim, mask, threshold):
  """[N] per row: the fraction of the row's masked entries with sim > threshold (NaN if none)."""
  count = mask.sum(axis=1)
  hits = ((sim > threshold) & mask).sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, hits / np.maximum(count, 1), np.nan)


def _rank1(sim, labels):
  """[N] bool: the best other original of the query's identity beats every other identity's."""
  other, impostor = _masks(labels)
  best_genuine = np.where(other, sim, -np.inf).max(axis=1)
  best_impostor = np.where(impostor, sim, -np.inf).max(axis=1)
  return best_genuine > best_impostor


def _rate(values, *, samples, seed) -> dict:
  v = np.asarray(values, np.float64)
  ci = metrics.bootstrap_mean_ci(v, samples=samples, seed=seed)
  return {"rate": float(v.mean()), "ci": [float(c) for c in ci]}


def calibrate(embeddings, labels, *, fmrs, mesh, batch_size, bootstrap_samples, seed):
  """Fixes the thresholds from the evaluator's embeddings of the original targets only.

  Raises:
    DataError: fewer than two identities among the targets (no impostor pairs).
  """
  labels = np.asarray(labels, np.int64)
  n = len(labels)
  ids, counts = np.unique(labels, return_counts=True)
  if len(ids) < 2:
    raise DataError(
      f"the evaluator needs targets of at least 2 identities to fix its thresholds from "
      f"impostor pairs, got {n} targets of {len(ids)} identity"
    )
  sim = similarity(embeddings, embeddings, mesh=mesh, batch_size=batch_size).astype(np.float64)
  other, impostor_mask = _masks(labels)
  eligible = other.any(axis=1)
  iu = np.triu_indices(n, 1)
  impostor = sim[iu][impostor_mask[iu]]
  thresholds, rows = [], []
  for f in fmrs:
    t = threshold_at(impostor, f)
    thresholds.append(t)
    row = {
      "fmr": float(f),
      "threshold": t,
      "realised_fmr": float(np.mean(impostor > t)),
      "resolvable": bool(f * impostor.size >= 1),
    }
    if eligible.any():
      gar = _accept_rates(sim, other, t)[eligible]
      row["genuine_accept_rate"] = _rate(gar, samples=bootstrap_samples, seed=seed)
    rows.append(row)
  summary = {
    "num_identities": int(len(ids)),
    "type2_targets": int(eligible.sum()),
    "single_image_targets_excluded": int((~eligible).sum()),
    "genuine_pairs": int(other[iu].sum()),
    "impostor_pairs": int(impostor.size),
    "thresholds": rows,
  }
  if eligible.any():
    summary["rank1"] = _rate(_rank1(sim, labels)[eligible], samples=bootstrap_samples, seed=seed)
    summary["rank1_chance"] = float(
      np.mean((counts[np.searchsorted(ids, labels)] - 1)[eligible]) / (n - 1)
    )
  return Calibration(
    np.asarray(embeddings, np.float32), labels, sim, tuple(fmrs), tuple(thresholds), summary
  )


def evaluate(cal: Calibration, recon_embeddings, *, mesh, batch_size, bootstrap_samples, seed):
  """One attacker's identity leakage: its reconstructions' evaluator embeddings [N, D], in
  target order, judged at the thresholds `cal` fixed on the originals.

  Returns (summary, scores): summary is JSON-ready ({"fmrs": [per fmr: type1_sar,
  type2_sar (each {rate, ci}), impostor_accept], "rank1": ...}); scores holds [K] type-II
  similarity scores (reconstruction vs same-identity originals) for the histogram.
  """
  sim = similarity(recon_embeddings, cal.embeddings, mesh=mesh, batch_size=batch_size)
  sim = sim.astype(np.float64)
  other, impostor = _masks(cal.labels)
  eligible = other.any(axis=1)
  rows = []
  for f, t in zip(cal.fmrs, cal.thresholds, strict=True):
    row = {
      "fmr": float(f),
      "type1_sar": _rate(np.diag(sim) > t, samples=bootstrap_samples, seed=seed),
      "impostor_accept": float(np.mean(_accept_rates(sim, impostor, t))),
    }
    if eligible.any():
      row["type2_sar"] = _rate(
        _accept_rates(sim, other, t)[eligible], samples=bootstrap_samples, seed=seed
      )
    rows.append(row)
  summary = {"fmrs": rows}
  if eligible.any():
    summary["rank1"] = _rate(
      _rank1(sim, cal.labels)[eligible], samples=bootstrap_samples, seed=seed
    )
  return summary, {"type2_scores": sim[other]}


def histograms(cal: Calibration, type2_scores=None) -> dict:
  """JSON-ready histograms of the genuine and impostor scores on originals (and, given, an
  attacker's type-II scores) over common bins."""
  genuine, impostor = cal.genuine_scores, cal.impostor_scores
  parts = [genuine, impostor] + ([type2_scores] if type2_scores is not None else [])
  lo = min(float(p.min()) for p in parts if p.size)
  hi = max(float(p.max()) for p in parts if p.size)
  edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, HISTOGRAM_BINS + 1)
  out = {
    "bin_edges": [float(e) for e in edges],
    "genuine": np.histogram(genuine, edges)[0].tolist(),
    "impostor": np.histogram(impostor, edges)[0].tolist(),
  }
  if type2_scores is not None:
    out["attack_type2"] = np.histogram(type2_scores, edges)[0].tolist()
  return out
