"""Time to verdict: the wall seconds of whole audits from a cold start, stage by stage.

  python benchmarks/verdict.py                          # the default audit, 3 runs
  python benchmarks/verdict.py --rounds 1 --config configs/smoke.py
  python benchmarks/verdict.py --against ../other-checkout   # A/B in alternating rounds

Each run is a fresh process with a fresh workdir and JAX's persistent compilation cache
off, so compilation is counted every time. Prints, per run, the wall seconds (process
start to exit), the report's per-stage seconds, the verdict, the deciding attacker and
its SSIM and image re-id; then the median wall per checkout. With --against, the other
checkout's launch.py runs in the same rounds, alternating with this one (timings on a
shared machine drift: alternate, never compare runs made minutes apart).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one(checkout: str, config: str, extra: list[str], workdir: str = "") -> dict:
  """One cold audit in a fresh process; its workdir is `workdir` (kept) or a temporary one."""
  if not workdir:
    with tempfile.TemporaryDirectory() as tmp:
      return one(checkout, config, extra, os.path.join(tmp, "run"))
  env = dict(os.environ)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
  cmd = [sys.executable, os.path.join(checkout, "launch.py"), f"--config={config}"]
  cmd += [f"--workdir={workdir}", *extra]
  t = time.perf_counter()
  done = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - t
  if done.returncode != 0:
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    raise SystemExit(f"{checkout}: exit {done.returncode}: {' | '.join(tail)}")
  with open(os.path.join(workdir, "report.json")) as f:
    report = json.load(f)
  best = report["attacks"][report["deciding_attack"]]
  return {
    "wall_s": round(wall, 1),
    "stages_s": report["seconds"],
    "data_and_model_s": report.get("metadata", {}).get("seconds_data_and_model"),
    "attackers_s": {n: a.get("seconds") for n, a in report["attacks"].items()},
    "verdict": report["risk_level"],
    "deciding": report["deciding_attack"],
    "ssim": round(best["ssim"], 4),
    "image_reid": round(best["image_reid_rate"], 4),
    "attackers": {
      n: {k: round(a[k], 4) for k in ("ssim", "psnr", "image_reid_rate") if k in a}
      for n, a in report["attacks"].items()
      if "ssim" in a
    },
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/default.py")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--against", default="", help="another checkout, run in alternating rounds")
  p.add_argument("--out", default="", help="write every run as JSON here")
  a, overrides = p.parse_known_args()  # --config.x=y flags, passed to every run
  checkouts = [HERE] + ([os.path.abspath(a.against)] if a.against else [])
  runs = {c: [] for c in checkouts}
  for r in range(a.rounds):
    for c in checkouts if r % 2 == 0 else checkouts[::-1]:
      row = one(c, a.config, overrides)
      runs[c].append(row)
      print(f"round {r + 1} {c}: {json.dumps(row)}", flush=True)
  for c, rows in runs.items():
    walls = [x["wall_s"] for x in rows]
    print(
      f"{c}: median wall {statistics.median(walls):.1f} s over {len(walls)} runs "
      f"(min {min(walls):.1f}, max {max(walls):.1f}); verdict {rows[-1]['verdict']} by "
      f"{rows[-1]['deciding']}, SSIM {rows[-1]['ssim']}, image re-id {rows[-1]['image_reid']}"
    )
  if a.out:
    with open(a.out, "w") as f:
      json.dump(runs, f, indent=1)


if __name__ == "__main__":
  main()
