"""Attack benchmark: every attacker's strength and time on the default audit and on
nonlinear embeddings of real digits, and the whitebox attacker's steps/s per image size.

  python benchmarks/attacks.py             # ~6 min on 2 CPU cores
  python benchmarks/attacks.py --smoke     # seconds; what the test suite runs
  python benchmarks/attacks.py --export runs/leak.npz   # also writes the default audit's
      # features and images in the stored-features layout, for the PyTorch yardstick
      # (../shared/peers/torch_inversion.py runs/leak.npz --sigma 0.955)

Prints one line per measurement and writes them all to --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from privjax.runtime import parallel  # noqa: E402

ROW_KEYS = ("ssim", "psnr", "ssim_gain_ci", "image_reid_rate", "reid_rate", "seconds")


def _identity(row: dict) -> dict:
  """Type-I / type-II SAR at each FMR and rank-1 by the independent evaluator, when it ran."""
  if "identity" not in row:
    return {}
  out = {"identity_rank1": row["identity"].get("rank1", {}).get("rate")}
  for r in row["identity"]["fmrs"]:
    out[f"type1_sar@{r['fmr']:g}"] = r["type1_sar"]["rate"]
    if "type2_sar" in r:
      out[f"type2_sar@{r['fmr']:g}"] = r["type2_sar"]["rate"]
      out[f"type2_sar_ci@{r['fmr']:g}"] = r["type2_sar"]["ci"]
  return out


def _rows(report: dict) -> dict:
  out = {}
  for name, row in report["attacks"].items():
    out[name] = (
      {"skipped": row["skipped"]}
      if "skipped" in row
      else {k: row[k] for k in ROW_KEYS} | {"risk_level": row["risk_level"]} | _identity(row)
    )
  return out


def _evaluator(report: dict) -> dict:
  """The evaluator's accuracy, thresholds and own (ceiling) rates, without the histograms."""
  return {k: v for k, v in report["evaluator"].items() if k not in ("histograms", "protocol")}


def bench_default(smoke: bool, export: str) -> dict:
  """The default audit (configs/default.py, or smoke.py) from scratch: wall time and rows."""
  from configs import default
  from configs import smoke as smoke_cfg
  from privjax import audit

  config = (smoke_cfg if smoke else default).get_config()
  with tempfile.TemporaryDirectory() as workdir:
    t = time.perf_counter()
    report = audit.run(config, workdir).to_dict()
    wall = time.perf_counter() - t
    if export:
      export_features(config, workdir, export)
  out = {
    "wall_s": round(wall, 1),
    "seconds": report["seconds"],
    "deciding_attack": report["deciding_attack"],
    "risk_level": report["risk_level"],
    "attacks": _rows(report),
    "evaluator": _evaluator(report),
  }
  print(f"default audit: {wall:.1f}s, decided by {out['deciding_attack']}", flush=True)
  for name, row in out["attacks"].items():
    print(f"  {name}: {row}", flush=True)
  return out


def export_features(config, workdir, path):
  """The audit's aux/target images and features, from its caches, as a stored-features npz
  (with the identities, so the builtin evaluator runs on it too)."""
  from privjax.data import splits as data
  from privjax.runtime import cache

  d = data.load(config.data)
  feats = {}
  for f in os.listdir(os.path.join(workdir, "cache")):
    for role in ("aux_images", "target_images"):
      if f.startswith(role):
        feats[role] = cache.load(os.path.join(workdir, "cache", f))[0]["features"]
  labels = {"target_labels": d.targets.labels, "aux_labels": d.aux.labels}
  np.savez(
    path,
    aux_images=d.aux.images,
    aux_features=feats["aux_images"],
    target_images=d.targets.images,
    target_features=feats["target_images"],
    **{k: v for k, v in labels.items() if v is not None},
  )
  print(f"exported {path}", flush=True)


def _embeddings(size: int):
  """Nonlinear embeddings of [N, size, size, 1] images: name -> (embed_fn, params)."""
  import jax.numpy as jnp

  rng = np.random.default_rng(0)
  p = size * size
  w1 = jnp.asarray(rng.normal(size=(p, 64)) / np.sqrt(p), jnp.float32)
  w2 = jnp.asarray(rng.normal(size=(64, 32)) / 8.0, jnp.float32)
  wt = jnp.asarray(rng.normal(size=(p, 32)) * 2 / np.sqrt(p), jnp.float32)
  return {
    "tanh_projection": (lambda w, x: jnp.tanh(x.reshape(x.shape[0], -1) @ w), wt),
    "relu_net": (
      lambda ws, x: jnp.maximum(x.reshape(x.shape[0], -1) @ ws[0], 0.0) @ ws[1],
      (w1, w2),
    ),
  }


def bench_nonlinear(smoke: bool) -> list:
  """Every attacker on nonlinear embeddings of real digits (8x8 and 16x16)."""
  import privjax
  from privjax.data.splits import load_digits

  out = []
  for size in (8,) if smoke else (8, 16):
    x, _ = load_digits(size)
    aux, targets = (x[:200], x[200:260]) if smoke else (x[:1400], x[1400:])
    for name, (fn, params) in _embeddings(size).items():
      cfg = privjax.audit_config()
      if smoke:
        cfg.attacks.decoder.num_steps, cfg.attacks.decoder.warmup_steps = 20, 2
        cfg.attacks.whitebox.steps = 5
      report = privjax.assess(fn, params, aux, targets, config=cfg).to_dict()
      row = {"size": size, "embedding": name, "deciding": report["deciding_attack"]}
      row["psnr"] = {n: r.get("psnr") for n, r in _rows(report).items()}
      row["ssim"] = {n: r.get("ssim") for n, r in _rows(report).items()}
      print(f"nonlinear {name} {size}x{size}: {row}", flush=True)
      out.append(row)
  return out


def bench_whitebox(smoke: bool) -> list:
  """Whitebox optimisation image-steps/s through the builtin CNN per image size."""
  import functools

  import jax
  import jax.numpy as jnp

  from privjax.attacks.whitebox import invert
  from privjax.models.nets import RecognitionCNN

  mesh = parallel.data_mesh()
  out = []
  shapes = [(8, 8, 1)] if smoke else [(8, 8, 1), (16, 16, 1), (32, 32, 3), (64, 64, 3)]
  for shape in shapes:
    model = RecognitionCNN(num_classes=10)
    params = model.init(jax.random.key(0), jnp.zeros((1, *shape)))
    embed = functools.partial(model.apply, method=RecognitionCNN.embed)
    n, steps = (8, 5) if smoke else (64, 50)
    x = np.random.default_rng(0).uniform(size=(n, *shape)).astype(np.float32)
    f = np.asarray(embed(params, x))
    run = jax.jit(functools.partial(invert, embed, steps=(steps,), learning_rate=0.05))
    fn = functools.partial(run, params, tv_weight=jnp.float32(0.0))
    parallel.batched_map(fn, [x, f], batch_size=n, mesh=mesh)  # compile
    t = time.perf_counter()
    parallel.batched_map(fn, [x, f], batch_size=n, mesh=mesh)
    seconds = time.perf_counter() - t
    row = {"image_shape": list(shape), "image_steps_per_s": round(n * steps / seconds, 1)}
    print(f"whitebox {shape}: {row['image_steps_per_s']} image-steps/s", flush=True)
    out.append(row)
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--smoke", action="store_true", help="seconds: checks the script runs")
  ap.add_argument("--out", default="benchmarks/results_attacks.json", help="where the JSON goes")
  ap.add_argument("--export", default="", help="write the default audit's stored-features npz")
  ap.add_argument("--cpu_devices", type=int, default=0, help="JAX CPU devices (0: one per core)")
  args = ap.parse_args(argv)
  parallel.use_cpu_cores(args.cpu_devices)
  res = {
    "default_audit": bench_default(args.smoke, args.export),
    "whitebox": bench_whitebox(args.smoke),
    "nonlinear": bench_nonlinear(args.smoke),
  }
  with open(args.out, "w") as f:
    json.dump(res, f, indent=1)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
