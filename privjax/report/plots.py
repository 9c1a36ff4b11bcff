"""The report's plots (matplotlib's Agg renderer, no pyplot), each returned as PNG bytes.

Each takes the report's JSON-ready summary (or its per-image columns), so a plot can be
redrawn from a report.json alone.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure

from privjax.report import readings

__all__ = ["evaluator_scores", "privacy_utility", "ssim_histogram", "strength", "training_curves"]


def _figure(ncols: int = 1, figsize=(7, 3.4)):
  """A figure drawn by matplotlib's Agg renderer alone: pyplot (and the caller's chosen
  backend, a notebook's say) is never touched."""
  fig = Figure(figsize=figsize, layout="constrained")
  return fig, fig.subplots(1, ncols)


def _png(fig) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  return buf.getvalue()


def ssim_histogram(ssim, baseline) -> bytes:
  """Per-target SSIM of the reconstructions against the no-information baseline's."""
  fig, ax = _figure()
  edges = np.linspace(min(np.min(ssim), np.min(baseline), 0.0), 1.0, 41)
  ax.hist(baseline, edges, alpha=0.6, label="baseline: against other targets' reconstructions")
  ax.hist(ssim, edges, alpha=0.6, label="reconstruction against its own original")
  ax.set(xlabel="SSIM per target", ylabel="targets")
  ax.legend(fontsize=8, loc="upper left")
  fig.suptitle("Per-target SSIM of the deciding attacker")
  return _png(fig)


def training_curves(history: list) -> bytes:
  """The decoder's training and validation loss at each evaluation."""
  fig, ax = _figure()
  steps = [h["step"] for h in history]
  train_loss, val_loss = [h["train_loss"] for h in history], [h["val_loss"] for h in history]
  ax.plot(steps, train_loss, "o-", label="training loss")
  ax.plot(steps, val_loss, "o-", label="validation loss (held-out aux)")
  # A log axis for the mse losses; a loss that is already a log (log_mse+ssim) is negative.
  positive = min(train_loss + val_loss, default=1.0) > 0
  ax.set(xlabel="step", ylabel="loss", yscale="log" if positive else "linear")
  ax.legend(fontsize=8)
  fig.suptitle("Decoder training")
  return _png(fig)


def strength(strength: list) -> bytes:
  """Leakage against the attacker's auxiliary data size: SSIM gain and image re-id per attacker."""
  fig, axes = _figure(2, figsize=(9, 3.6))
  sizes = [row["num_aux"] for row in strength]
  for name in strength[-1]["attacks"]:
    rows = [row["attacks"].get(name) for row in strength]
    if any(r is None for r in rows):
      continue
    gain = np.array([r["ssim_gain"] for r in rows])
    lo = np.array([r["ssim_gain_ci"][0] for r in rows])
    hi = np.array([r["ssim_gain_ci"][1] for r in rows])
    (line,) = axes[0].plot(sizes, gain, "o-", label=name)
    axes[0].fill_between(sizes, lo, hi, color=line.get_color(), alpha=0.2)
    axes[1].plot(sizes, [r["image_reid_rate"] for r in rows], "o-", label=name)
  axes[0].set(xlabel="auxiliary images", ylabel="SSIM gain over baseline (95% CI)")
  axes[1].set(xlabel="auxiliary images", ylabel="image re-identification rate", ylim=(0, 1.02))
  axes[0].legend()
  fig.suptitle("Leakage against the attacker's data")
  return _png(fig)


def evaluator_scores(summary: dict) -> bytes:
  """The evaluator's genuine and impostor score distributions on the original targets, its
  thresholds, and the deciding attacker's type-II scores."""
  ev = summary["evaluator"]
  h = ev["histograms"]
  edges = np.asarray(h["bin_edges"])
  centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
  fig, ax = _figure(figsize=(7, 3.8))

  def density(counts):
    c = np.asarray(counts, np.float64)
    return c / max(c.sum(), 1) / width

  ax.bar(centres, density(h["impostor"]), width, alpha=0.5, label="impostor pairs (originals)")
  ax.bar(centres, density(h["genuine"]), width, alpha=0.5, label="genuine pairs (originals)")
  if "attack_type2" in h:
    ax.stairs(
      density(h["attack_type2"]),
      edges,
      color="black",
      label=f"{summary['deciding_attack']}: reconstruction vs same identity (type II)",
    )
  for row, style in zip(ev["thresholds"], (":", "--", "-.", "-"), strict=False):
    ax.axvline(
      row["threshold"],
      color="red",
      linestyle=style,
      linewidth=1,
      label=f"threshold at FMR {row['fmr']:g} ({row['threshold']:.3f})",
    )
  ax.set(xlabel="evaluator cosine similarity", ylabel="density")
  ax.legend(fontsize=8, loc="upper left")
  fig.suptitle("Independent evaluator: score distributions and thresholds")
  return _png(fig)


def privacy_utility(sweep: dict) -> bytes:
  """The defense sweep's curve: utility against the deciding attacker's SSIM gain and image
  re-id, one line per defense, each point labelled with its strength; the undefended
  features as a star."""
  fig, axes = _figure(2, figsize=(10, 4.2))
  ref = sweep["undefended"]
  head = readings.headline(ref["utility"])
  name = "utility (none measured: point index)" if head is None else head[0]
  for entry_name, entry in sweep["defenses"].items():
    pts = entry["points"]
    xs = [
      i if readings.headline(p["utility"]) is None else readings.headline(p["utility"])[1]
      for i, p in enumerate(pts)
    ]
    for ax, key in zip(axes, ("ssim_gain", "image_reid_rate"), strict=True):
      ys = [p["deciding"][key] for p in pts]
      learned = "trained_against" in entry  # a learned defense: its own marker
      (line,) = ax.plot(
        xs,
        ys,
        "s--" if learned else "o-",
        label=f"{entry_name} ({entry['param']}{', learned' if learned else ''})",
      )
      for x, y, p in zip(xs, ys, pts, strict=True):
        ax.annotate(
          f"{p['strength']:g}",
          (x, y),
          fontsize=7,
          xytext=(3, 3),
          textcoords="offset points",
          color=line.get_color(),
        )
  t = sweep["thresholds"]
  for ax, key, what in zip(
    axes, ("ssim_gain", "image_reid_rate"), ("ssim_gain", "image_reid"), strict=True
  ):
    ax.axhline(t[f"high_{what}"], color="red", linewidth=0.8, linestyle="--", label="high from")
    ax.axhline(
      t[f"medium_{what}"], color="orange", linewidth=0.8, linestyle="--", label="medium from"
    )
    if head is not None:
      ax.plot([head[1]], [ref["deciding"][key]], "k*", markersize=12, label="undefended")
      if "chance" in ref["utility"].get(head[0], {}):
        ax.axvline(
          ref["utility"][head[0]]["chance"],
          color="gray",
          linewidth=0.8,
          linestyle=":",
          label="utility at chance",
        )
  refitted = "\n(attackers re-fitted to the defense)"
  axes[0].set(xlabel=name, ylabel="SSIM gain over baseline" + refitted)
  axes[1].set(xlabel=name, ylabel="image re-id" + refitted, ylim=(0, 1.02))
  axes[0].legend(fontsize=8)
  fig.suptitle("Privacy against utility: each defense over its strengths")
  return _png(fig)
