"""The learned defense against the fixed ones, on the default digits and the 64x64x3 crops.

  .venv/bin/python benchmarks/learned_defense.py                      # both workloads
  .venv/bin/python benchmarks/learned_defense.py --workloads digits   # ~10 min, 2 cores
  .venv/bin/python benchmarks/learned_defense.py --workloads crops64 --crops c.npz
      # run 1: 34 min on 2 idle cores; run 2 (a 64x64 decoder per g): 59 min on 2 shared
  .venv/bin/python benchmarks/learned_defense.py --out benchmarks/results_learned_defense.json

For each workload, two runs of the command line in one fresh workdir (no compilation cache):
1. the workload's audit (configs/default.py; configs/npz.py on the crops) with
   configs/learned_defense.py's sweep: the fixed defenses of configs/defense_sweep.py and
   `learned` at lam 0, 1, 4, 16, every point attacked by ridge and nearest (the learned g
   was trained against a linear ridge inside its loss);
2. the learned entry alone, attacked by ridge, nearest, decoder and blend: the decoder
   and the blend never appeared in its loss (the audit in the workdir is reused).
Prints, per workload: every point's k-NN rank-1 utility (chance beside it), the deciding
attacker's SSIM gain CI and image re-id, the training time and in-loss / held-out ridge
R^2 of each learned point; for each learned point the fixed point of nearest utility at or
above it (equal utility) with its leakage; and each unseen attacker's SSIM gain at each
lam. The whitebox attacker is not among them: the sweep's attackers see defended features
only, never the model (docs/method.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import sweep  # noqa: E402 (the command-line runner)

UNSEEN = ("ridge", "nearest", "decoder", "blend")


def _run(config: str, workdir: str, extra: list) -> tuple[dict, float]:
  report, wall, _ = sweep.launch(config, workdir, extra)
  return report, wall


def _row(name: str, point: dict) -> dict:
  d, u = point["deciding"], point["utility"]
  knn = u.get("knn_rank1", {})
  row = {
    "defense": name,
    "strength": point.get("strength"),
    "risk_level": point["risk_level"],
    "attacker": d["attacker"],
    "fitted_on": d.get("fitted_on", ""),
    "ssim_gain": d["ssim_gain"],
    "ssim_gain_ci": d["ssim_gain_ci"],
    "image_reid_rate": d["image_reid_rate"],
    "knn_rank1": knn.get("rate"),
    "knn_chance": knn.get("chance"),
    "refitted_ssim_gain": {  # (the undefended reference's attackers are its "attackers")
      n: r["ssim_gain"]
      for n, r in point.get("refitted", point.get("attackers", {})).items()
      if "ssim_gain" in r
    },
  }
  if "training" in point:
    t = point["training"]
    row["training"] = {
      "seconds": round(t["seconds"], 1),
      "in_loss_r2_end": t["end"]["privacy_r2"],
      "held_out_ridge_r2": t["held_out_ridge_r2"],
    }
  return row


def _rows(sweep: dict) -> list:
  rows = [_row("undefended", sweep["undefended"])]
  for name, entry in sweep["defenses"].items():
    rows += [_row(name, p) for p in entry["points"]]
  return rows


def _equal_utility(rows: list) -> list:
  """For each learned point, the fixed point whose k-NN rank-1 is nearest at or above it."""
  fixed = [r for r in rows if r["defense"] not in ("learned", "undefended")]
  out = []
  for r in (r for r in rows if r["defense"] == "learned"):
    above = [f for f in fixed if f["knn_rank1"] >= r["knn_rank1"]]
    best = min(above, key=lambda f: f["knn_rank1"] - r["knn_rank1"]) if above else None
    out.append({"learned": r, "fixed": best})
  return out


def _print(rows: list) -> None:
  for r in rows:
    s = "" if r["strength"] is None else format(r["strength"], "g")
    t = r.get("training")
    extra = (
      f" | trained {t['seconds']:.0f}s, held-out ridge R^2 "
      f"{t['held_out_ridge_r2']['before']:.3f} -> {t['held_out_ridge_r2']['after']:.3f}"
      if t
      else ""
    )
    print(
      f"  {r['defense']:>15} {s:>5} {r['risk_level']:>6} {r['attacker']:>8} "
      f"({r['fitted_on'] or '-':>12}) gain [{r['ssim_gain_ci'][0]:.3f}, "
      f"{r['ssim_gain_ci'][1]:.3f}] re-id {r['image_reid_rate']:.3f} k-NN "
      f"{r['knn_rank1']:.3f} (chance {r['knn_chance']:.3f}){extra}"
    )


def _sweep_flags(entries: dict, attackers) -> list:
  """configs/learned_defense.py's sweep (`entries`), as flags any config takes."""
  plain = {
    n: {k: list(v) if isinstance(v, tuple) else v for k, v in e.items()} for n, e in entries.items()
  }
  return [
    f"--config.defense.sweep={json.dumps(plain)}",
    f"--config.defense.attacks={tuple(attackers)!r}",
  ]


def workload(name: str, config: str, extra: list) -> dict:
  from configs import learned_defense

  c = learned_defense.get_config()
  entries = c.defense.sweep.to_dict()
  workdir = tempfile.mkdtemp(prefix=f"privjax-learned-{name}-")
  report, wall_a = _run(config, workdir, extra + _sweep_flags(entries, c.defense.attacks))
  rows = _rows(report["defense"])
  only = _sweep_flags({"learned": entries["learned"]}, UNSEEN)
  report_b, wall_b = _run(config, workdir, extra + only)
  unseen = _rows(report_b["defense"])
  print(
    f"\n{name}: audit {report['risk_level']} ({report['deciding_attack']}); run 1 {wall_a:.0f}s"
  )
  _print(rows)
  print("  equal utility (k-NN rank-1): learned point vs the fixed point nearest at or above it")
  for pair in _equal_utility(rows):
    r, f = pair["learned"], pair["fixed"]
    other = (
      "none keeps as much utility"
      if f is None
      else f"{f['defense']} {f['strength']:g}: k-NN {f['knn_rank1']:.3f}, gain "
      f"{f['ssim_gain']:.3f}, re-id {f['image_reid_rate']:.3f}"
    )
    print(
      f"    lam {r['strength']:g}: k-NN {r['knn_rank1']:.3f}, gain {r['ssim_gain']:.3f}, "
      f"re-id {r['image_reid_rate']:.3f} | {other}"
    )
  print(f"  unseen attackers ({', '.join(UNSEEN)}), run 2 {wall_b:.0f}s: SSIM gain re-fitted")
  for r in unseen:
    gains = ", ".join(f"{n} {g:.3f}" for n, g in r["refitted_ssim_gain"].items())
    print(f"    {r['defense']} {'' if r['strength'] is None else format(r['strength'], 'g')}: "
          f"{r['risk_level']} by {r['attacker']}; {gains}")  # fmt: skip
  return {
    "workdir": workdir,
    "audit": {"risk_level": report["risk_level"], "deciding": report["deciding_attack"]},
    "seconds": {"run1": round(wall_a, 1), "run2": round(wall_b, 1)},
    "points": rows,
    "equal_utility": _equal_utility(rows),
    "unseen_attackers": unseen,
  }


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workloads", default="digits,crops64")
  p.add_argument("--crops", default="", help="the crops64 npz (default: made in a temp dir)")
  p.add_argument("--out", default="", help="write the numbers as JSON here")
  args = p.parse_args()
  result = {}
  for name in args.workloads.split(","):
    if name == "digits":
      result[name] = workload(name, "configs/default.py", [])  # (the sweep comes as flags)
    elif name == "crops64":
      path = args.crops or os.path.join(tempfile.mkdtemp(prefix="privjax-crops-"), "c.npz")
      if not os.path.exists(path):
        subprocess.run([sys.executable, "benchmarks/crops64.py", path], cwd=ROOT, check=True)
      result[name] = workload(name, "configs/npz.py", [f"--config.data.path={path}"])
    else:
      raise SystemExit(f"unknown workload {name!r}: digits or crops64")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
