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

The arithmetic is jnp functions of plain arrays that run under jit: `thresholds_at_fmr`
(the thresholds, from the originals' embeddings and identities) and `sar_at_fmr` (type I,
type II, the attack's impostor accepts, rank-1, per target and as rates). `calibrate` and
`evaluate` add the JSON summary, with percentile-bootstrap CIs from a `jax.random` key.

Without a mesh, up to ALL_PAIRS_MAX_TARGETS targets, they compute every pair at once on one
device, the thresholds the exact order statistics of the sorted impostor scores. Given a
mesh, or above, memory grows linearly with the targets: every pair's similarity is computed
on the devices a block of query rows at a time (the gallery replicated), and only
per-target counts and running histograms leave a block; no [N, N] array exists. The
per-block arithmetic is the same functions'. The streamed thresholds are exact: the
impostor scores are counted on a grid of FINE_BINS bins over [-1, 1], then the bin holding
the threshold is counted again on its own grid of FINE_BINS sub-bins (width 2 /
FINE_BINS**2, below float32's spacing of cosines above 0.004), whose largest score is the
threshold. Where a sub-bin still holds distinct scores, its smallest is taken (the
attacker's side) and the report states the bound (`threshold_error_bound`).

Reference levels, measured on the same targets: the evaluator's own genuine accept rate
(two originals of one identity, the type-II ceiling a perfect reconstruction reaches),
its own rank-1, and the attack's impostor accept rate (its reconstructions against
originals of OTHER identities at the same threshold: what a reconstruction carrying no
identity scores, which can exceed the FMR for an image that resembles many faces).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from privjax.errors import DataError
from privjax.runtime import parallel
from privjax.scoring import metrics

__all__ = [
  "ALL_PAIRS_MAX_TARGETS",
  "Calibration",
  "DEFAULT_BATCH_SIZE",
  "Evaluator",
  "FINE_BINS",
  "HISTOGRAM_BINS",
  "calibrate",
  "evaluate",
  "histograms",
  "nearest",
  "sar_at_fmr",
  "similarity",
  "thresholds_at_fmr",
]

HISTOGRAM_BINS = 40  # the report's score histograms
FINE_BINS = 1 << 16  # the running histograms' grid over [-1, 1]
_FINE_WIDTH = 2.0 / FINE_BINS
# Without a mesh, every pair at once on one device up to this many targets ([N, N] float32
# similarities, 16 MiB); above, the streamed path over the default mesh.
ALL_PAIRS_MAX_TARGETS = 2048
DEFAULT_BATCH_SIZE = 256  # query rows per block of the streamed path


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
  fmrs: tuple  # the false match rates, as configured
  thresholds: tuple  # t_f per fmr: accept when cosine > t_f
  summary: dict  # JSON-ready: counts, thresholds, realised FMR, genuine accept rates, rank-1
  genuine_histogram: np.ndarray  # [FINE_BINS] counts of genuine pair scores (each pair once)
  impostor_histogram: np.ndarray  # [FINE_BINS] counts of impostor pair scores (each once)


@jax.jit
def _cosine(gallery, queries):
  return metrics.cosine_similarity_matrix(queries, gallery)


def similarity(queries, gallery, *, mesh=None, batch_size: int = DEFAULT_BATCH_SIZE):
  """[Q, G] cosine similarity of evaluator embeddings [Q, D] x [G, D]: with a mesh, queries
  sharded and the gallery replicated, a host numpy array; without, a jax array."""
  if mesh is None:
    return _cosine(jnp.asarray(gallery, jnp.float32), jnp.asarray(queries, jnp.float32))
  g = parallel.replicate(jnp.asarray(gallery, jnp.float32), mesh)
  return parallel.batched_map(
    functools.partial(_cosine, g),
    [np.asarray(queries, np.float32)],
    batch_size=batch_size,
    mesh=mesh,
  )


@jax.jit
def _argmax_cosine(gallery, queries):
  return jnp.argmax(metrics.cosine_similarity_matrix(queries, gallery), axis=1)


def nearest(queries, gallery, *, mesh=None, batch_size: int = DEFAULT_BATCH_SIZE):
  """[Q] index of each query's most similar gallery row by cosine (first on a tie), of
  [Q, D] queries among [G, D]: with a mesh, a block of queries at a time on the devices, so
  no [Q, G] array reaches the host (a host numpy array); without, a jax array."""
  if mesh is None:
    return _argmax_cosine(jnp.asarray(gallery, jnp.float32), jnp.asarray(queries, jnp.float32))
  g = parallel.replicate(jnp.asarray(gallery, jnp.float32), mesh)
  return parallel.batched_map(
    functools.partial(_argmax_cosine, g),
    [np.asarray(queries, np.float32)],
    batch_size=batch_size,
    mesh=mesh,
  )


def _bin(scores, lo, width, bins):
  """Bin index of each score on a grid of `bins` bins of `width` from `lo` (clipped)."""
  return jnp.clip(jnp.floor((scores - lo) / width), 0, bins - 1).astype(jnp.int32)


def _count(scores, mask, lo, width, bins):
  """[bins] counts of the masked scores on the grid."""
  idx = _bin(scores, lo, width, bins)
  return jnp.zeros(bins, jnp.int32).at[idx.ravel()].add(mask.ravel().astype(jnp.int32))


def _pairs(gallery, labels, valid, queries, q_labels, q_index):
  """A block of query rows against every original: similarity and the pair masks."""
  sim = metrics.cosine_similarity_matrix(queries, gallery)  # [b, N] float32
  same = q_labels[:, None] == labels[None, :]
  col = jnp.arange(labels.shape[0])
  itself = q_index[:, None] == col[None, :]
  v = valid[:, None]
  return sim, (same & ~itself) & v, ~same & v, col[None, :] > q_index[:, None]


def _rank1_rows(sim, other, impostor):
  best_genuine = jnp.where(other, sim, -jnp.inf).max(axis=1)
  best_impostor = jnp.where(impostor, sim, -jnp.inf).max(axis=1)
  return best_genuine > best_impostor


@jax.jit
def _calibration_pass(gallery, labels, valid, queries, q_labels, q_index):
  """Per row: genuine pair count and rank-1; summed: fine histograms of the pairs, each once."""
  sim, other, impostor, upper = _pairs(gallery, labels, valid, queries, q_labels, q_index)
  rows = {"genuine": other.sum(axis=1), "rank1": _rank1_rows(sim, other, impostor)}
  totals = {
    "genuine": _count(sim, other & upper, -1.0, _FINE_WIDTH, FINE_BINS),
    "impostor": _count(sim, impostor & upper, -1.0, _FINE_WIDTH, FINE_BINS),
  }
  return rows, totals


@jax.jit
def _refine_pass(gallery, labels, valid, queries, q_labels, q_index, lows):
  """Summed, per threshold: the impostor scores inside its bin [low, low + width) counted on
  a sub-grid, with each sub-bin's smallest and largest score."""
  sim, _, impostor, upper = _pairs(gallery, labels, valid, queries, q_labels, q_index)
  width = _FINE_WIDTH / FINE_BINS
  out = []
  for i in range(lows.shape[0]):
    low = lows[i]
    inside = (
      impostor
      & upper
      & (_bin(sim, -1.0, _FINE_WIDTH, FINE_BINS) == _bin(low, -1.0, _FINE_WIDTH, FINE_BINS))
    )
    idx = _bin(sim, low, width, FINE_BINS).ravel()
    m = inside.ravel()
    s = sim.ravel()
    out.append(
      {
        "count": jnp.zeros(FINE_BINS, jnp.int32).at[idx].add(m.astype(jnp.int32)),
        "min": jnp.full(FINE_BINS, jnp.inf).at[idx].min(jnp.where(m, s, jnp.inf)),
        "max": jnp.full(FINE_BINS, -jnp.inf).at[idx].max(jnp.where(m, s, -jnp.inf)),
      }
    )
  return {}, out


@jax.jit
def _combine_refined(a, b):
  return [
    {
      "count": x["count"] + y["count"],
      "min": jnp.minimum(x["min"], y["min"]),
      "max": jnp.maximum(x["max"], y["max"]),
    }
    for x, y in zip(a, b, strict=True)
  ]


def _reduce(
  fn, cal_or_gallery, labels, queries, q_labels, *, mesh, batch_size, extra=(), combine=None
):
  """fn over blocks of query rows (sharded) against the replicated gallery."""
  g = parallel.replicate(
    (jnp.asarray(cal_or_gallery, jnp.float32), jnp.asarray(labels, jnp.int32)), mesh
  )
  n = queries.shape[0]
  return parallel.batched_reduce(
    functools.partial(fn, *g),
    [np.asarray(queries, np.float32), np.asarray(q_labels, np.int32), np.arange(n, dtype=np.int32)],
    extra=extra,
    combine=combine,
    batch_size=batch_size,
    mesh=mesh,
  )


def _locate(histogram_desc_cumulative, k):
  """The bin holding the k-th largest (0-based) score: the first bin from the top whose
  cumulative count exceeds k."""
  return int(np.searchsorted(histogram_desc_cumulative, k, side="right"))


def _thresholds(impostor_hist, fmrs, refine):
  """Thresholds from the impostor histogram: t_f is the floor(f * M)-th largest (0-based) of
  the M impostor scores, found in its fine bin by `refine(lows) -> per-bin sub-grids`.

  Returns ([(t_f, error bound)], M): the bound is 0 where t_f is exact, else the spread of
  its sub-bin (t_f is then the sub-bin's smallest score: never above the exact one).
  """
  m = int(impostor_hist.sum())
  desc = np.cumsum(np.asarray(impostor_hist, np.int64)[::-1])  # at or above each bin, from the top
  picks = []
  for f in fmrs:
    k = min(int(np.floor(f * m)), m - 1)
    j = _locate(desc, k)  # the bin, counted from the top
    picks.append((FINE_BINS - 1 - j, k - (int(desc[j - 1]) if j else 0)))
  subs = refine(np.asarray([-1.0 + b * _FINE_WIDTH for b, _ in picks], np.float32))
  out = []
  for (_, r), sub in zip(picks, subs, strict=True):
    i = FINE_BINS - 1 - _locate(np.cumsum(np.asarray(sub["count"], np.int64)[::-1]), r)
    lo, hi = float(sub["min"][i]), float(sub["max"][i])
    out.append((hi, 0.0) if lo == hi else (lo, hi - lo))
  return out, m


def _rate(values, *, key, samples, where=None) -> dict:
  """{"rate": the mean of `values` [N] (where `where`, given) in float64, "ci": its 95%
  percentile-bootstrap CI by `key`}."""
  v = np.asarray(values, np.float64)
  ci = metrics.bootstrap_mean_ci(v, key=key, samples=samples, where=where)
  rate = (v if where is None else v[where]).mean()
  return {"rate": float(rate), "ci": [metrics.host_float(c) for c in ci]}


def _whole(fn, gallery, labels, queries, *extra):
  """A pass `fn`'s (rows, totals) with every query row in one block against the gallery:
  the streamed path's arithmetic on all pairs at once (jnp; runs under jit)."""
  n = queries.shape[0]
  return fn(
    gallery, labels, jnp.ones(n, bool), queries, labels, jnp.arange(n, dtype=jnp.int32), *extra
  )


def _ranks(fmrs, m):
  """[F] int32: the 0-based rank min(floor(f * m), m - 1) of each threshold among the m
  impostor scores (float32: an f * m within 2^-20 relative below an integer counts as it)."""
  k = jnp.floor(jnp.asarray(fmrs, jnp.float32) * m.astype(jnp.float32) * (1 + 2.0**-20))
  return jnp.minimum(k.astype(jnp.int32), m - 1)


def _sorted_thresholds(sim, impostor_pairs, fmrs):
  """[F] the exact thresholds: the _ranks-th largest of the impostor scores `sim` [N, N]
  where `impostor_pairs` (each pair once)."""
  scores = jnp.where(impostor_pairs, sim, -jnp.inf).ravel()
  descending = -jnp.sort(-scores)
  return descending[_ranks(fmrs, impostor_pairs.sum())]


def thresholds_at_fmr(embeddings, labels, fmrs):
  """The evaluator's decision thresholds, fixed on the original targets alone.

  At a false match rate f, t_f is the floor(f * M)-th largest (0-based) of the M impostor
  scores (cosine similarities of two originals of different identities, each pair once):
  at most a fraction f of impostor pairs is accepted (cosine > t_f). All pairs at once: a
  jnp function that runs under jit (memory O(N^2)); floor(f * M) is taken in float32, an
  f * M within 2^-20 (relative) below an integer counting as that integer.

  Args:
    embeddings: [N, D] the evaluator's embeddings of the original targets.
    labels: [N] int identities (at least two distinct).
    fmrs: [F] false match rates in (0, 1).

  Returns:
    [F] float32 thresholds.
  """
  emb, labels = jnp.asarray(embeddings, jnp.float32), jnp.asarray(labels, jnp.int32)
  sim, _, impostor, upper = _whole(_pairs, emb, labels, emb)
  return _sorted_thresholds(sim, impostor & upper, fmrs)


def _masked_mean(values, mask):
  """Mean over the leading axis of `values` [N, ...] where `mask` [N] (NaN where none)."""
  m = mask.reshape(mask.shape + (1,) * (values.ndim - 1))
  return jnp.sum(jnp.where(m, values, 0), axis=0) / jnp.sum(mask)


def sar_at_fmr(embeddings, labels, recon_embeddings, thresholds) -> dict:
  """Identity leakage of reconstructions at the thresholds: a jnp function of plain arrays
  that runs under jit (all pairs at once, memory O(F * N^2)).

  Args:
    embeddings: [N, D] the evaluator's embeddings of the original targets.
    labels: [N] int identities.
    recon_embeddings: [N, D] its embeddings of the reconstructions, in target order.
    thresholds: [F] accept when cosine > t (`thresholds_at_fmr`).

  Returns:
    {"type1_sar": [F] the fraction of reconstructions accepted against their own original;
    "type2_sar": [F] the mean over `type2_eligible` targets of the fraction of the OTHER
    originals of their identity accepted; "impostor_accept": [F] the mean over targets of
    the fraction of other identities' originals accepted (the attack's chance level);
    "rank1": the fraction of eligible targets whose nearest other original is of their
    identity (strictly); per target: "type1" [N, F] bool, "type2" [N, F] float,
    "type2_eligible" [N] bool (its identity has another original), "rank1_hits" [N] bool}.
  """
  emb, labels = jnp.asarray(embeddings, jnp.float32), jnp.asarray(labels, jnp.int32)
  recon = jnp.asarray(recon_embeddings, jnp.float32)
  rows, _ = _whole(_evaluate_pass, emb, labels, recon, jnp.asarray(thresholds, jnp.float32))
  eligible = rows["genuine"] > 0
  type2 = rows["type2_hits"] / jnp.maximum(rows["genuine"], 1)[:, None]
  impostor = rows["impostor_hits"] / jnp.maximum(rows["impostors"], 1)[:, None]
  return {
    "type1_sar": jnp.mean(rows["type1"], axis=0),
    "type2_sar": _masked_mean(type2, eligible),
    "impostor_accept": _masked_mean(impostor, rows["impostors"] > 0),
    "rank1": _masked_mean(rows["rank1"], eligible),
    "type1": rows["type1"],
    "type2": type2,
    "type2_eligible": eligible,
    "rank1_hits": rows["rank1"],
  }


@jax.jit
def _calibrate_all_pairs(embeddings, labels, fmrs):
  """calibrate's passes on all pairs at once, with the exact sorted thresholds."""
  rows, totals = _whole(_calibration_pass, embeddings, labels, embeddings)
  thresholds = thresholds_at_fmr(embeddings, labels, fmrs)
  accepted, above = _whole(_accept_pass, embeddings, labels, embeddings, thresholds)
  return rows, totals, thresholds, accepted, above


@jax.jit
def _accept_pass(gallery, labels, valid, queries, q_labels, q_index, thresholds):
  """Per row and threshold: genuine pairs accepted (sim > t), and impostors above each t."""
  sim, other, impostor, upper = _pairs(gallery, labels, valid, queries, q_labels, q_index)
  hits = (sim[None] > thresholds[:, None, None]) & other[None]  # [F, b, N]
  above = (sim[None] > thresholds[:, None, None]) & (impostor & upper)[None]
  return {"genuine_hits": hits.sum(axis=2).T}, {"impostor_above": above.sum(axis=(1, 2))}


def _all_pairs(n: int, mesh) -> bool:
  """Whether n targets are judged all pairs at once (no mesh, at most ALL_PAIRS_MAX_TARGETS)."""
  return mesh is None and n <= ALL_PAIRS_MAX_TARGETS


def calibrate(
  embeddings,
  labels,
  *,
  fmrs,
  key,
  bootstrap_samples: int,
  mesh=None,
  batch_size: int = DEFAULT_BATCH_SIZE,
) -> Calibration:
  """Fixes the thresholds from the evaluator's embeddings of the original targets only.

  Args:
    embeddings: [N, D] the evaluator's embeddings of the original targets.
    labels: [N] int identities.
    fmrs: the false match rates, each in (0, 1).
    key: a `jax.random` key for the bootstrap CIs.
    bootstrap_samples: resamples of each CI.
    mesh: None: all pairs at once on one device up to ALL_PAIRS_MAX_TARGETS targets
      (`thresholds_at_fmr`: the exact sorted order statistics), streamed over the default
      mesh above; a mesh: streamed over it, `batch_size` query rows per block.

  Raises:
    DataError: fewer than two identities among the targets (no impostor pairs).
  """
  labels = np.asarray(labels, np.int64)
  embeddings = np.asarray(embeddings, np.float32)
  ids, counts = _identities(labels)
  passes = _passes_all_pairs if _all_pairs(len(labels), mesh) else _passes_streamed
  rows, totals, thresholds, picked, m, accepted, above = passes(
    embeddings, labels, fmrs, mesh=mesh, batch_size=batch_size
  )
  genuine_hist, impostor_hist = totals["genuine"], totals["impostor"]
  eligible = rows["genuine"] > 0
  common = {"key": key, "samples": bootstrap_samples}
  out_rows = [
    _threshold_row(i, f, t, bound, m, above, accepted, rows, eligible, common)
    for i, (f, (t, bound)) in enumerate(zip(fmrs, picked, strict=True))
  ]
  summary = {
    "num_identities": int(len(ids)),
    "type2_targets": int(eligible.sum()),
    "single_image_targets_excluded": int((~eligible).sum()),
    "genuine_pairs": int(genuine_hist.sum()),
    "impostor_pairs": m,
    "thresholds": out_rows,
    **(_rank1(rows, eligible, labels, ids, counts, common) if eligible.any() else {}),
  }
  return Calibration(
    embeddings,
    labels,
    tuple(fmrs),
    tuple(float(t) for t in thresholds),
    summary,
    np.asarray(genuine_hist),
    np.asarray(impostor_hist),
  )


def _identities(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(identities, images of each) among the targets; DataError for fewer than 2 (no
  impostor pairs to fix a threshold from)."""
  ids, counts = np.unique(labels, return_counts=True)
  if len(ids) < 2:
    raise DataError(
      f"the evaluator needs targets of at least 2 identities to fix its thresholds from "
      f"impostor pairs, got {len(labels)} targets of {len(ids)} identity"
    )
  return ids, counts


def _rank1(rows, eligible, labels, ids, counts, common) -> dict:
  """The evaluator's own rank-1 on the originals (targets with another image of their
  identity) and its chance level."""
  n = len(labels)
  chance = np.mean((counts[np.searchsorted(ids, labels)] - 1)[eligible]) / (n - 1)
  return {
    "rank1": _rate(rows["rank1"], where=eligible, **common),
    "rank1_chance": float(chance),
  }


def _passes_all_pairs(embeddings, labels, fmrs, *, mesh, batch_size):
  """Calibration on one device, all pairs at once: (rows, totals, thresholds, picked
  [(threshold, error bound)], impostor pairs, accepted, above)."""
  del mesh, batch_size
  rows, totals, thresholds, accepted, above = jax.device_get(
    _calibrate_all_pairs(
      jnp.asarray(embeddings), jnp.asarray(labels, jnp.int32), jnp.asarray(fmrs, jnp.float32)
    )
  )
  picked = [(float(t), 0.0) for t in thresholds]
  return rows, totals, thresholds, picked, int(totals["impostor"].sum()), accepted, above


def _passes_streamed(embeddings, labels, fmrs, *, mesh, batch_size):
  """Calibration streamed over the mesh in blocks of `batch_size` query rows (histograms,
  then refined thresholds): the same tuple as `_passes_all_pairs`."""
  run = functools.partial(
    _reduce,
    cal_or_gallery=embeddings,
    labels=labels,
    queries=embeddings,
    q_labels=labels,
    mesh=parallel.data_mesh() if mesh is None else mesh,
    batch_size=batch_size,
  )
  rows, totals = run(_calibration_pass)
  picked, m = _thresholds(
    totals["impostor"],
    fmrs,
    lambda lows: run(_refine_pass, extra=(jnp.asarray(lows),), combine=_combine_refined)[1],
  )
  thresholds = np.asarray([t for t, _ in picked], np.float32)
  accepted, above = run(_accept_pass, extra=(jnp.asarray(thresholds),))
  return rows, totals, thresholds, picked, m, accepted, above


def _threshold_row(i, fmr, t, bound, m, above, accepted, rows, eligible, common) -> dict:
  """One FMR's row of the calibration: its threshold, the FMR it realises on the impostor
  pairs, and the evaluator's own genuine accept rate there (`common`: _rate's key and
  samples)."""
  row = {
    "fmr": float(fmr),
    "threshold": float(t),
    "threshold_error_bound": float(bound),
    "realised_fmr": float(above["impostor_above"][i]) / m,
    "resolvable": bool(fmr * m >= 1),
  }
  if eligible.any():
    gar = accepted["genuine_hits"][:, i] / np.maximum(rows["genuine"], 1)
    row["genuine_accept_rate"] = _rate(gar, where=eligible, **common)
  return row


@jax.jit
def _evaluate_pass(gallery, labels, valid, queries, q_labels, q_index, thresholds):
  """Per reconstruction row: type I per threshold (against its own original), type-II and
  impostor accepts per threshold, pair counts and rank-1; summed: its type-II histogram."""
  sim, other, impostor, _ = _pairs(gallery, labels, valid, queries, q_labels, q_index)
  own = jnp.take_along_axis(sim, q_index[:, None], axis=1)[:, 0]
  above = sim[None] > thresholds[:, None, None]  # [F, b, N]
  rows = {
    "type1": (own[None] > thresholds[:, None]).T,
    "type2_hits": (above & other[None]).sum(axis=2).T,
    "impostor_hits": (above & impostor[None]).sum(axis=2).T,
    "genuine": other.sum(axis=1),
    "impostors": impostor.sum(axis=1),
    "rank1": _rank1_rows(sim, other, impostor),
  }
  return rows, {"type2": _count(sim, other, -1.0, _FINE_WIDTH, FINE_BINS)}


def evaluate(
  cal: Calibration,
  recon_embeddings,
  *,
  key,
  bootstrap_samples: int,
  mesh=None,
  batch_size: int = DEFAULT_BATCH_SIZE,
):
  """One attacker's identity leakage: its reconstructions' evaluator embeddings [N, D], in
  target order, judged at the thresholds `cal` fixed on the originals.

  The per-target numbers are `sar_at_fmr`'s: all pairs at once without a mesh up to
  ALL_PAIRS_MAX_TARGETS targets, streamed over the mesh (the default one above) otherwise;
  `key` draws the bootstrap CIs.

  Returns (summary, scores): summary is JSON-ready ({"fmrs": [per fmr: type1_sar,
  type2_sar (each {rate, ci}), impostor_accept], "rank1": ...}); scores holds the
  [FINE_BINS] histogram of its type-II scores (reconstruction vs same-identity originals).
  """
  recon = np.asarray(recon_embeddings, np.float32)
  t = jnp.asarray(cal.thresholds, jnp.float32)
  if _all_pairs(len(cal.labels), mesh):
    rows, totals = jax.device_get(
      _evaluate_all_pairs(jnp.asarray(cal.embeddings), jnp.asarray(cal.labels, jnp.int32), recon, t)
    )
  else:
    rows, totals = _reduce(
      _evaluate_pass,
      cal.embeddings,
      cal.labels,
      recon,
      cal.labels,
      mesh=parallel.data_mesh() if mesh is None else mesh,
      batch_size=batch_size,
      extra=(t,),
    )
  eligible = rows["genuine"] > 0
  common = {"key": key, "samples": bootstrap_samples}
  out = []
  with np.errstate(invalid="ignore", divide="ignore"):
    for i, f in enumerate(cal.fmrs):
      impostor_rate = rows["impostor_hits"][:, i] / np.maximum(rows["impostors"], 1)
      row = {
        "fmr": float(f),
        "type1_sar": _rate(rows["type1"][:, i], **common),
        "impostor_accept": float(np.mean(impostor_rate[rows["impostors"] > 0])),
      }
      if eligible.any():
        type2 = rows["type2_hits"][:, i] / np.maximum(rows["genuine"], 1)
        row["type2_sar"] = _rate(type2, where=eligible, **common)
      out.append(row)
  summary = {"fmrs": out}
  if eligible.any():
    summary["rank1"] = _rate(rows["rank1"], where=eligible, **common)
  return summary, {"type2_scores": np.asarray(totals["type2"])}


@jax.jit
def _evaluate_all_pairs(gallery, labels, queries, thresholds):
  return _whole(_evaluate_pass, gallery, labels, queries, thresholds)


def histograms(cal: Calibration, type2_histogram=None) -> dict:
  """JSON-ready histograms of the genuine and impostor scores on originals (and, given, an
  attacker's type-II scores) over HISTOGRAM_BINS common bins: whole groups of the fine
  grid, spanning the scores' range."""
  parts = [cal.genuine_histogram, cal.impostor_histogram]
  if type2_histogram is not None:
    parts.append(np.asarray(type2_histogram))
  occupied = np.flatnonzero(np.sum(parts, axis=0))
  first, last = (int(occupied[0]), int(occupied[-1])) if occupied.size else (0, 0)
  group = -(-(last - first + 1) // HISTOGRAM_BINS)  # fine bins per shown bin
  start = min(first, FINE_BINS - group * HISTOGRAM_BINS)
  edges = [-1.0 + (start + i * group) * _FINE_WIDTH for i in range(HISTOGRAM_BINS + 1)]

  def shown(h):
    window = np.asarray(h, np.int64)[start : start + group * HISTOGRAM_BINS]
    return window.reshape(HISTOGRAM_BINS, group).sum(axis=1).tolist()

  out = {
    "bin_edges": [float(e) for e in edges],
    "genuine": shown(cal.genuine_histogram),
    "impostor": shown(cal.impostor_histogram),
  }
  if type2_histogram is not None:
    out["attack_type2"] = shown(type2_histogram)
  return out
