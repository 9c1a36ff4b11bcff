"""What the features are still good for: the model's own task, measured on (defended) features.

A defense that stops the attackers but also stops the model from recognising anyone
buys nothing. Two measures, each with its chance level and a 95% bootstrap CI over
the targets:

- `knn_rank1`: identification, the model's use: each target's features looked up by
  cosine among a labelled gallery (the auxiliary set); a hit when the nearest gallery
  item has the target's label. Targets whose label the gallery lacks cannot be
  identified and are excluded (counted). Chance: a random gallery item's label
  matches, sum over labels of (target share x gallery share).
- `linear_probe`: classification: a linear least-squares classifier (one-hot targets,
  an intercept, a ridge penalty chosen on the auxiliary set's held-out part) fitted on
  the auxiliary features, scored on the targets. Chance: always answering the most
  frequent target label.

Both are plug-ins (`UTILITIES`, privjax/registry.py) of one signature, each declaring its
place in the headline order; a new one is a function plus a registration. A user's
utility is a function `utility(aux_features, aux_labels, target_features,
target_labels) -> {name: number}` named by import path (config.defense.utility).
"""

from __future__ import annotations

import jax
import numpy as np

from privjax.errors import ModelError
from privjax.registry import Registry, call_fn
from privjax.runtime.parallel import cross_products
from privjax.scoring import identity, metrics
from privjax.scoring.standardizer import Standardizer

UTILITIES = Registry("utility")
PROBE_PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # x the mean eigenvalue of the Gram matrix


def _rate(hits: np.ndarray, chance: float, *, samples: int, seed: int, **counts) -> dict:
  ci = metrics.bootstrap_mean_ci(hits.astype(np.float64), key=jax.random.key(seed), samples=samples)
  return {
    "rate": float(hits.mean()),
    "ci": [float(v) for v in ci],
    "chance": float(chance),
    **{k: int(v) for k, v in counts.items()},
  }


@UTILITIES.register("knn_rank1", headline=0)
def knn_rank1(
  gallery, gallery_labels, queries, query_labels, *, split, mesh, batch_size, samples, seed
):
  """Rank-1 identification of each query among the gallery by cosine (see the module doc)."""
  del split
  known = np.isin(query_labels, gallery_labels)
  if not known.any():
    return None
  best = identity.nearest(queries[known], gallery, mesh=mesh, batch_size=batch_size)
  hits = gallery_labels[best] == query_labels[known]
  q_labels, q_counts = np.unique(query_labels[known], return_counts=True)
  g_share = {
    c: n / len(gallery_labels)
    for c, n in zip(*np.unique(gallery_labels, return_counts=True), strict=True)
  }
  chance = sum(n / known.sum() * g_share[c] for c, n in zip(q_labels, q_counts, strict=True))
  return _rate(
    hits, chance, samples=samples, seed=seed, queries=known.sum(), excluded=(~known).sum()
  )


@UTILITIES.register("linear_probe", headline=1)
def linear_probe(
  aux_features,
  aux_labels,
  target_features,
  target_labels,
  *,
  split,
  mesh,
  batch_size,
  samples,
  seed,
):
  """Accuracy of a ridge least-squares linear classifier fitted on the auxiliary features.

  `split` is (train, val) indices into the auxiliary set: the penalty is chosen on val,
  then the classifier is refitted on all of it.
  """
  del batch_size
  classes = np.unique(aux_labels)
  known = np.isin(target_labels, classes)
  if len(classes) < 2 or not known.any():
    return None
  standardize = Standardizer.fit(aux_features)
  x, xt = standardize(aux_features).astype(np.float64), standardize(target_features[known])
  y = (aux_labels[:, None] == classes[None, :]).astype(np.float64)

  def fit(rows, penalty):
    mu_x, mu_y = x[rows].mean(0), y[rows].mean(0)
    xc = x[rows] - mu_x
    gram = cross_products(xc, xc, mesh=mesh)
    lam = penalty * max(float(np.trace(gram)) / gram.shape[0], 1e-12)
    w = np.linalg.solve(
      gram + lam * np.eye(gram.shape[0]), cross_products(xc, y[rows] - mu_y, mesh=mesh)
    )
    return lambda f: classes[np.argmax((f - mu_x) @ w + mu_y, axis=1)]

  train, val = split
  val_acc = [float(np.mean(fit(train, p)(x[val]) == aux_labels[val])) for p in PROBE_PENALTIES]
  penalty = PROBE_PENALTIES[int(np.argmax(val_acc))]
  hits = fit(np.arange(len(x)), penalty)(xt) == target_labels[known]
  _, counts = np.unique(target_labels[known], return_counts=True)
  out = _rate(
    hits,
    counts.max() / known.sum(),
    samples=samples,
    seed=seed,
    queries=known.sum(),
    excluded=(~known).sum(),
  )
  return dict(out, penalty=float(penalty))


def measure(
  aux_f, aux_labels, tgt_f, tgt_labels, *, split, user_fn, mesh, samples, seed, batch_size
) -> dict:
  """Every configured utility of one set of (defended) features; {} without labels or user fn.

  `samples` bootstrap resamples (seeded by `seed`) give each rate's 95% CI; `batch_size`
  is the k-NN search's.
  """
  out = {}
  common = {"split": split, "mesh": mesh, "batch_size": batch_size, "samples": samples}
  if aux_labels is not None and tgt_labels is not None:
    for name in _by_headline():
      got = UTILITIES.get(name, field="").fn(
        aux_f, aux_labels, tgt_f, tgt_labels, seed=seed, **common
      )
      if got is not None:
        out[name] = got
  if user_fn is not None:
    got = call_fn(
      user_fn,
      getattr(user_fn, "__name__", "utility"),
      "config.defense.utility",
      ModelError,
      aux_f,
      aux_labels,
      tgt_f,
      tgt_labels,
    )
    if not isinstance(got, dict) or not all(
      isinstance(v, (int, float, np.floating, np.integer)) and np.isfinite(v) for v in got.values()
    ):
      raise ModelError(
        f"config.defense.utility must return a dict of finite numbers, got {got!r:.200}"
      )
    out["user"] = {str(k): float(v) for k, v in got.items()}
  return out


def _by_headline() -> list[str]:
  """The registered utilities in their declared headline order."""
  return sorted(UTILITIES.names(), key=lambda n: UTILITIES.get(n, field="").declared["headline"])
