"""What importing privjax costs, beside what importing JAX alone costs.

  python benchmarks/import_time.py              # 5 alternating rounds of each import
  python benchmarks/import_time.py --rounds 9 --json /tmp/import_time.json
  git archive HEAD | tar -x -C /tmp/head && python benchmarks/import_time.py --before /tmp/head

Each import runs in a fresh Python process (`python -c "import X"`, timed from outside:
the interpreter's start included, the same for every module), alternating between the
modules round by round so a busy machine weighs on each alike. Prints each module's
median and fastest wall time in seconds and its median's ratio to `import jax`'s; with
--before DIR, also the privjax modules as another checkout (DIR) has them, in the same
rounds, so a change is measured against its base on the same machine and load. The
goal (docs/layout.md, "A functional core"): `import privjax.scoring.metrics` costs at most
20% more than `import jax`; the package's `__init__` exports its heavy names lazily.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What is timed: JAX alone, a leaf module of privjax, the package itself, and the package
# with the whole audit (what `privjax.assess` loads on first use).
MODULES = (
  "jax",
  "privjax.scoring.metrics",
  "privjax",
  "privjax.audit",
)
BUDGET = 1.2  # the leaf module's median over jax's


def time_import(module: str, root: str = HERE) -> float:
  """Seconds a fresh interpreter takes to import `module` and exit, run in `root` (whose
  privjax it imports: the working directory comes first on the import path)."""
  start = time.perf_counter()
  subprocess.run([sys.executable, "-c", f"import {module}"], check=True, cwd=root)
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=5, help="fresh imports of each module")
  parser.add_argument("--modules", nargs="+", default=list(MODULES), help="what to import")
  parser.add_argument("--json", default="", help="also write the numbers here")
  parser.add_argument("--before", default="", help="another checkout to time beside this one")
  args = parser.parse_args()
  runs = [(m, m, HERE) for m in args.modules]  # (label, module, where it runs)
  if args.before:
    runs += [(f"{m} (before)", m, args.before) for m in args.modules if m.startswith("privjax")]
  for _, module, root in runs:  # warm the file system cache and the .pyc files first
    time_import(module, root)
  seconds = {label: [] for label, _, _ in runs}
  for _ in range(args.rounds):
    for label, module, root in runs:
      seconds[label].append(time_import(module, root))
  base = statistics.median(seconds[args.modules[0]])
  results = {}
  print(f"{'import':<37}{'median s':>10}{'min s':>8}{'x ' + args.modules[0]:>10}")
  for label, times in seconds.items():
    median = statistics.median(times)
    results[label] = {"median_s": median, "min_s": min(times), "ratio": median / base}
    print(f"{label:<37}{median:>10.2f}{min(times):>8.2f}{median / base:>10.2f}")
  leaf = results.get("privjax.scoring.metrics")
  if leaf is not None and "jax" in results:
    ratio = leaf["median_s"] / results["jax"]["median_s"]
    verdict = "within" if ratio <= BUDGET else "OVER"
    print(f"privjax.scoring.metrics / jax = {ratio:.2f}: {verdict} the {BUDGET:.1f}x budget")
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"rounds": args.rounds, "load": os.getloadavg(), "results": results}, f, indent=1)


if __name__ == "__main__":
  main()
