"""Ridge's cost against the feature width: seconds and peak memory of one ridge attacker
fit and reconstruction as the stored features widen past the auxiliary count.

  python benchmarks/ridge_width.py                      # widths 512, 2048, 8192
  python benchmarks/ridge_width.py --widths 8192 --aux 810 --size 64

Each width runs in its own process (peak RSS is per process): `aux` auxiliary and 100
target random-projection features of random images (size x size x 3), the default ridge
settings (1,024 random features beside the features, 3 bandwidths x 5 penalties).
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


def one(width: int, n_aux: int, size: int) -> dict:
  import ml_collections
  import numpy as np

  from privjax import attacks
  from privjax.runtime import parallel

  rng = np.random.default_rng(0)
  images = rng.uniform(size=(n_aux + 100, size, size, 3)).astype(np.float32)
  proj = rng.normal(size=(size * size * 3, width)).astype(np.float32) / np.sqrt(size * size * 3)
  f = np.tanh(images.reshape(len(images), -1) @ proj)
  std = attacks.Standardizer.fit(f[:n_aux])
  idx = np.arange(n_aux)
  aux = attacks.AuxSet(std(f[:n_aux]), images[:n_aux], idx[n_aux // 10 :], idx[: n_aux // 10])
  ctx = attacks.Context(
    mesh=parallel.data_mesh(),
    seed=0,
    eval_batch_size=256,
    filter_size=11,
    filter_sigma=1.5,
    checkpoint_dir=None,
    model=None,
    fitted=None,
  )
  own = attacks.own_config(ml_collections.ConfigDict(attacks.with_defaults("ridge", {})))
  t = time.perf_counter()
  fitted = attacks.get("ridge")(aux, ctx, own)
  fitted.reconstruct(std(f[n_aux:]))
  seconds = time.perf_counter() - t
  return {
    "width": width,
    "aux": n_aux,
    "pixels": size * size * 3,
    "seconds": round(seconds, 2),
    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--widths", default="512,2048,8192")
  p.add_argument("--aux", type=int, default=810)
  p.add_argument("--size", type=int, default=32)
  p.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.one:
    print(json.dumps(one(a.one, a.aux, a.size)))
    return
  for w in (int(s) for s in a.widths.split(",")):
    cmd = [sys.executable, __file__, "--one", str(w), "--aux", str(a.aux), "--size", str(a.size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    print(
      f"width {w:>6,} ({a.aux} aux, {row['pixels']} pixels): {row['seconds']:7.1f} s, "
      f"peak RSS {row['peak_rss_mib']:,} MiB",
      flush=True,
    )


if __name__ == "__main__":
  main()
