"""The default defense sweep's time and numbers: configs/defense_sweep.py end to end.

  .venv/bin/python benchmarks/sweep.py                  # ~10 min on 2 CPU cores
  .venv/bin/python benchmarks/sweep.py --out benchmarks/results_sweep.json

Runs the command line in a fresh workdir (no compilation cache), then prints the wall
time, the audit's stage times, each sweep point's verdict, deciding attacker (and the
features it was fitted on), SSIM gain with its CI, image re-id and utility, and the best
trade-off line. Run it on an otherwise idle machine: the goal (the issue's) is the whole
default sweep, audit included, within 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(config: str, workdir: str, extra: list) -> tuple[dict, float, list]:
  """The command line on `config` in `workdir` (no compilation cache): (report.json, wall
  seconds, the command)."""
  cmd = [
    sys.executable,
    os.path.join(ROOT, "launch.py"),
    f"--config={config}",
    f"--workdir={workdir}",
    "--compilation_cache=",
    *extra,
  ]
  t = time.perf_counter()
  subprocess.run(cmd, cwd=ROOT, check=True, stderr=subprocess.DEVNULL)
  wall = time.perf_counter() - t
  with open(os.path.join(workdir, "report.json")) as f:
    return json.load(f), wall, cmd


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/defense_sweep.py")
  p.add_argument("--workdir", default="", help="default: a fresh temporary directory")
  p.add_argument("--out", default="", help="write the numbers as JSON here")
  args, extra = p.parse_known_args()
  workdir = args.workdir or tempfile.mkdtemp(prefix="privjax-sweep-")
  report, wall, cmd = launch(args.config, workdir, extra)
  sweep = report["defense"]
  rows = []
  for name, entry in {
    "undefended": {"param": "", "points": [sweep["undefended"]]},
    **sweep["defenses"],
  }.items():
    for point in entry["points"]:
      d, u = point["deciding"], point["utility"]
      rows.append(
        {
          "defense": name,
          "strength": point.get("strength"),
          "risk_level": point["risk_level"],
          "attacker": d["attacker"],
          "fitted_on": d.get("fitted_on", ""),
          "ssim_gain_ci": d["ssim_gain_ci"],
          "image_reid_rate": d["image_reid_rate"],
          **{k: [u[k]["rate"], *u[k]["ci"]] for k in ("knn_rank1", "linear_probe") if k in u},
        }
      )
  result = {
    "command": " ".join(cmd[1:]),
    "wall_seconds": round(wall, 1),
    "stage_seconds": report["seconds"],
    "audit_verdict": report["risk_level"],
    "points": rows,
    "best_tradeoff": sweep["best_tradeoff_line"],
  }
  print(f"wall {wall:.1f} s (audit + sweep); stages: {report['seconds']}")
  for r in rows:
    knn = r.get("knn_rank1")
    print(
      f"{r['defense']:>15} {'' if r['strength'] is None else format(r['strength'], 'g'):>5} "
      f"{r['risk_level']:>6} {r['attacker']:>8} {r['fitted_on']:>12} gain "
      f"[{r['ssim_gain_ci'][0]:.3f}, {r['ssim_gain_ci'][1]:.3f}] re-id "
      f"{r['image_reid_rate']:.3f} knn "
      + ("n/a" if knn is None else f"{knn[0]:.3f} [{knn[1]:.3f}, {knn[2]:.3f}]")
    )
  print(sweep["best_tradeoff_line"])
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
