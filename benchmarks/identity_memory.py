"""Identity-stage benchmark: seconds and peak memory of the evaluator's calibration and one
attacker's judgement as the number of targets grows (blocked on the devices, no [N, N]).

  python benchmarks/identity_memory.py                   # N = 2,000, 8,000, 32,000
  python benchmarks/identity_memory.py --sizes 2000      # one size

Each size runs in its own process (peak RSS is per process): evaluator embeddings of N
targets of N / 4 identities (128-d), calibrated at FMR 0.01 and 0.001, then one set of
reconstruction embeddings judged. Prints one line per size and a linear extrapolation of
the peak memory to 100,000 targets.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def one(n: int, dim: int, batch_size: int) -> dict:
  import jax
  import numpy as np

  from privjax.runtime import parallel
  from privjax.scoring import identity

  mesh = parallel.data_mesh()
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(n // 4), 4)[:n]
  centres = rng.normal(size=(n // 4 + 1, dim)).astype(np.float32)
  emb = centres[labels] + 0.7 * rng.normal(size=(n, dim)).astype(np.float32)
  recon = emb + 0.7 * rng.normal(size=(n, dim)).astype(np.float32)
  common = {"mesh": mesh, "batch_size": batch_size, "bootstrap_samples": 200}
  base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  t = time.perf_counter()
  cal = identity.calibrate(emb, labels, fmrs=(0.01, 0.001), key=jax.random.key(0), **common)
  t_cal = time.perf_counter() - t
  t = time.perf_counter()
  summary, _ = identity.evaluate(cal, recon, key=jax.random.key(1), **common)
  t_eval = time.perf_counter() - t
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return {
    "targets": n,
    "devices": mesh.size,
    "calibrate_s": round(t_cal, 2),
    "evaluate_s": round(t_eval, 2),
    "peak_rss_mib": round(peak),
    "rss_before_mib": round(base),
    "type2_sar": summary["fmrs"][0]["type2_sar"]["rate"],
    "whole_matrix_mib": round(n * n * 8 / 2**20),  # what one float64 [N, N] would take
  }


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--sizes", default="2000,8000,32000")
  p.add_argument("--dim", type=int, default=128)
  p.add_argument("--batch_size", type=int, default=512)
  p.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.one:
    print(json.dumps(one(a.one, a.dim, a.batch_size)))
    return
  rows = []
  for n in (int(s) for s in a.sizes.split(",")):
    cmd = [sys.executable, __file__, "--one", str(n), "--dim", str(a.dim)]
    cmd += ["--batch_size", str(a.batch_size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    rows.append(row)
    print(
      f"N={n:>7,}: calibrate {row['calibrate_s']:7.1f} s, evaluate {row['evaluate_s']:7.1f} s, "
      f"peak RSS {row['peak_rss_mib']:6,} MiB (before {row['rss_before_mib']:,}; a float64 "
      f"[N, N] would be {row['whole_matrix_mib']:,} MiB)",
      flush=True,
    )
  if len(rows) >= 2:
    a0, a1 = rows[-2], rows[-1]
    slope = (a1["peak_rss_mib"] - a0["peak_rss_mib"]) / (a1["targets"] - a0["targets"])
    at = a1["peak_rss_mib"] + slope * (100_000 - a1["targets"])
    pairs = (a1["calibrate_s"] + a1["evaluate_s"]) / a1["targets"] ** 2
    print(
      f"extrapolated to N=100,000: peak RSS ~{at:,.0f} MiB per host (linear from the last two "
      f"sizes), ~{pairs * 1e10:,.0f} s on these devices (quadratic in N; divides by the "
      "number of devices across hosts)"
    )


if __name__ == "__main__":
  main()
