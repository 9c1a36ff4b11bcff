"""The 64x64x3 workload: natural-image crops of 9 pictures that ship with scikit-image.

  python benchmarks/crops64.py runs/crops64.npz        # writes the .npz (seconds)
  python launch.py --config=configs/npz.py --workdir=runs/crops64 \
      --config.data.path=runs/crops64.npz
  python benchmarks/crops64.py runs/crops64.npz --audit [--torch ~/.venv-torch-ref/bin/python]

With --audit (the time-to-verdict benchmark at 64x64x3): the audit above from a cold start
(fresh process and workdir, compilation cache off), its features exported in the
stored-features layout, the black-box audit of those stored features (no model), and, with
--torch, the PyTorch yardstick (../shared/peers/torch_inversion.py) on the same export;
prints each one's wall seconds and its attackers' SSIM, PSNR and image re-id, and writes
them to benchmarks/results_crops64.json.

2,700 crops (300 per picture) of random square windows (a quarter to three quarters of
the picture's shorter side, at a random place), resized to 64x64 with antialiasing; the
label is the source picture. With configs/npz.py's roles the builtin model trains on
1,350, the attacker holds 810 and 540 are targets. Deterministic (seed 0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PICTURES = (
  "astronaut",
  "coffee",
  "chelsea",
  "rocket",
  "hubble_deep_field",
  "immunohistochemistry",
  "retina",
  "camera",
  "brick",
)


def make(per_picture: int = 300, size: int = 64, seed: int = 0):
  """(images [9 * per_picture, size, size, 3] uint8, labels [9 * per_picture] int)."""
  from skimage import data, transform

  rng = np.random.default_rng(seed)
  images, labels = [], []
  for label, name in enumerate(PICTURES):
    pic = getattr(data, name)()
    if pic.ndim == 2:
      pic = np.repeat(pic[..., None], 3, axis=-1)
    pic = pic[..., :3].astype(np.float32) / 255.0
    h, w = pic.shape[:2]
    for _ in range(per_picture):
      side = int(rng.integers(min(h, w) // 4, 3 * min(h, w) // 4 + 1))
      i, j = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
      crop = transform.resize(pic[i : i + side, j : j + side], (size, size), anti_aliasing=True)
      images.append(np.clip(np.round(crop * 255), 0, 255).astype(np.uint8))
      labels.append(label)
  return np.stack(images), np.asarray(labels, np.int64)


HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YARDSTICK = os.path.join(os.path.dirname(HERE), "shared", "peers", "torch_inversion.py")


def _yardstick(torch_python: str, leak: str) -> dict:
  """The PyTorch yardstick on the stored-features npz, timed; its chosen model's numbers."""
  out = os.path.join(os.path.dirname(os.path.abspath(leak)), "yardstick.log")
  cmd = [torch_python, YARDSTICK, leak, "--sigma", "1.5", "--threads", "2"]
  t = time.perf_counter()
  done = subprocess.run(cmd, capture_output=True, text=True)
  wall = time.perf_counter() - t
  with open(out, "w") as f:
    f.write(done.stdout + done.stderr)
  if done.returncode != 0:
    raise SystemExit(f"yardstick: exit {done.returncode} (its output: {out})")
  chosen = json.loads(done.stdout.strip().splitlines()[-1])
  return {"wall_s": round(wall, 1), "command": " ".join(cmd), **chosen}


def audit(path: str, workdir: str, torch_python: str) -> dict:
  """The cold audit of the crops, the black-box audit of its stored features, the yardstick."""
  from benchmarks import attacks, verdict
  from configs import npz

  flag = f"--config.data.path={os.path.abspath(path)}"
  full = os.path.join(workdir, "audit")
  out = {"audit": verdict.one(HERE, "configs/npz.py", [flag], full)}
  print(f"audit: {json.dumps(out['audit'])}", flush=True)
  leak = os.path.join(workdir, "leak.npz")
  config = npz.get_config()
  config.data.path = os.path.abspath(path)
  attacks.export_features(config, full, leak)
  black_box = [f"--config.data.path={leak}", "--config.model.kind=precomputed"]
  out["stored_features"] = verdict.one(
    HERE, "configs/npz.py", black_box, os.path.join(workdir, "stored")
  )
  print(f"stored features: {json.dumps(out['stored_features'])}", flush=True)
  if torch_python:
    out["yardstick"] = _yardstick(torch_python, leak)
    print(f"yardstick: {json.dumps(out['yardstick'])}", flush=True)
  return out


def main():
  from benchmarks import require_test_extras

  require_test_extras()
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("out", help="the .npz to write (images, labels)")
  p.add_argument("--per_picture", type=int, default=300)
  p.add_argument("--audit", action="store_true", help="time the audits on it (see above)")
  p.add_argument("--workdir", default="runs/crops64-bench", help="--audit: its workdirs")
  p.add_argument("--torch", default="", help="--audit: a python with torch, for the yardstick")
  a = p.parse_args()
  if not (a.audit and os.path.exists(a.out)):
    images, labels = make(a.per_picture)
    np.savez(a.out, images=images, labels=labels)
    print(f"{a.out}: {images.shape[0]} images {images.shape[1:]} of {len(PICTURES)} pictures")
  if a.audit:
    if os.path.exists(a.workdir):
      shutil.rmtree(a.workdir)
    os.makedirs(a.workdir)
    result = audit(a.out, a.workdir, a.torch)
    with open(os.path.join(HERE, "benchmarks", "results_crops64.json"), "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
