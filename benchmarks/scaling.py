"""Scaling benchmark: images/s per stage of the default audit on 1, 2, 4 and 8 devices.

  python benchmarks/scaling.py            # ~4 min on 2 CPU cores
  python benchmarks/scaling.py --smoke    # seconds; what the test suite runs

Each device count runs the same stages (feature extraction, one decoder training
step, reconstruction, SSIM scoring, image-space re-identification) over a mesh of
the first N devices, with the same global batches. On a CPU the script forces 8
host devices (XLA_FLAGS), which share the machine's cores: the numbers then show
the data-parallel overhead per image, not a speed-up. On GPUs or TPUs it uses the
real devices (counts above jax.device_count() are skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from benchmarks.run import bench_default_stages, cpu_model  # noqa: E402
from privjax.runtime import parallel  # noqa: E402

STAGES = ("extraction", "decoder_train_step", "reconstruction", "ssim_scoring")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--smoke", action="store_true", help="seconds: checks the script runs")
  ap.add_argument("--out", default="benchmarks/results_scaling.json", help="where the JSON goes")
  args = ap.parse_args(argv)
  # Rounds interleave the device counts, so a drift of the machine hits them alike.
  rounds, repeats, min_s = (1, 1, 0.0) if args.smoke else (3, 3, 0.5)
  counts = [n for n in (1, 2, 4, 8) if n <= jax.device_count()]
  res = {
    "cpu": cpu_model(),
    "cores": os.cpu_count(),
    "device_kind": jax.devices()[0].device_kind,
    "device_counts": counts,
    "jax": jax.__version__,
    "runs": {},
  }
  per_round = {n: [] for n in counts}
  for r in range(rounds):
    for n in counts:
      mesh = parallel.data_mesh(jax.devices()[:n])
      per_round[n].append(
        bench_default_stages(
          repeats=repeats, min_seconds=min_s, n_targets=64 if args.smoke else 256, mesh=mesh
        )
      )
      print(f"round {r + 1}/{rounds}: {n} device(s) done", flush=True)
  res["runs"] = {n: median_over_rounds(per_round[n]) for n in counts}
  print(table(res))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(res, f, indent=1)
  print(f"wrote {args.out}")
  return res


def median_over_rounds(rounds: list[dict]) -> dict:
  """Per stage: the median of the rounds' medians, with the min and max over all rounds."""
  out = {}
  for stage, first in rounds[0].items():
    key = "images_per_s" if "images_per_s" in first else "pairs_per_s"
    values = [r[stage][key] for r in rounds]
    out[stage] = {
      key: {
        "median": statistics.median(v["median"] for v in values),
        "min": min(v["min"] for v in values),
        "max": max(v["max"] for v in values),
      }
    }
  return out


def table(res) -> str:
  counts = res["device_counts"]
  runs = res["runs"]
  lines = [
    f"{res['cpu']}, {res['cores']} cores; {res['device_kind']}",
    "",
    "| stage, images/s (median) | " + " | ".join(f"{n} dev" for n in counts) + " |",
    "|---" * (len(counts) + 1) + "|",
  ]
  for stage in STAGES:
    row = [runs[n][stage]["images_per_s"]["median"] for n in counts]
    lines.append(f"| {stage} | " + " | ".join(f"{v:,.0f}" for v in row) + " |")
  reid = [runs[n]["image_reidentification"]["pairs_per_s"]["median"] for n in counts]
  lines.append("| image re-id (pairs/s) | " + " | ".join(f"{v:,.0f}" for v in reid) + " |")
  lines.append("")
  lines.append(
    f"per-image time on {counts[-1]} devices relative to 1 device (1.00 = same; above 1 = slower):"
  )
  for stage in STAGES:
    one = runs[counts[0]][stage]["images_per_s"]["median"]
    last = runs[counts[-1]][stage]["images_per_s"]["median"]
    lines.append(f"  {stage}: {one / last:.2f}")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
