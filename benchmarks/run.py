"""privjax benchmark: images/s per stage, decoder geometries, SSIM, re-identification, memory.

  python benchmarks/run.py            # full run (~35 min on 2 CPU cores), JSON to --out
  python benchmarks/run.py --quick    # under 2 minutes (~95 s on 2 CPU cores)
  python benchmarks/run.py --smoke    # seconds; what the test suite runs

Every throughput is the median over repeated timed windows after warm-up, with the
min-max range; compilation time is reported separately. Compare with the PyTorch
reference (../shared/peers, see the README) run on the same machine at the same time.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dm_pix  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.geometries import BEST_MODE, GEOMETRIES  # noqa: E402
from privjax import config as config_lib  # noqa: E402
from privjax import settings as settings_lib  # noqa: E402
from privjax.attacks import decoder_training  # noqa: E402
from privjax.models.nets import RecognitionCNN  # noqa: E402
from privjax.runtime import parallel
from privjax.scoring import metrics


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def timed(fn, *, repeats: int, min_seconds: float):
  """Calls fn() (which blocks) in windows of >= min_seconds; returns per-call seconds list."""
  fn()  # warm-up
  t = time.perf_counter()
  fn()
  one = max(time.perf_counter() - t, 1e-6)
  calls = max(1, int(min_seconds / one))
  out = []
  for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(calls):
      fn()
    out.append((time.perf_counter() - t) / calls)
  return out


def rate(items: int, seconds: list[float]) -> dict:
  r = sorted(items / s for s in seconds)
  return {"median": statistics.median(r), "min": r[0], "max": r[-1]}


def compile_seconds(jitted, *args) -> float:
  t = time.perf_counter()
  jitted.lower(*args).compile()
  return time.perf_counter() - t


# ----------------------------------------------------------------------------------------
def bench_geometry(name: str, mode: str, *, repeats: int, min_seconds: float, mesh=None) -> dict:
  """One Adam + MSE training step of a fixed geometry, as images/s.

  With `mesh`, data-parallel over its devices (batch split, state replicated; batch
  norm statistics still over the whole batch); otherwise on one device.
  """
  g = GEOMETRIES[name]
  b = g["batch"]
  model = g["model"](mode)
  z = jax.random.normal(jax.random.key(0), (b, g["in_dim"]))
  y = jax.random.uniform(jax.random.key(1), (b, *g["out_shape"]))
  variables = model.init(jax.random.key(2), z)
  tx = optax.adam(2e-4)

  def step(state, z, y):
    v, opt = state

    def loss(params):
      out, updates = model.apply({**v, "params": params}, z, mutable=["batch_stats"])
      return jnp.mean((out - y) ** 2), updates

    (value, updates), grads = jax.value_and_grad(loss, has_aux=True)(v["params"])
    upd, opt = tx.update(grads, opt, v["params"])
    return ({**v, **updates, "params": optax.apply_updates(v["params"], upd)}, opt), value

  state = [(variables, tx.init(variables["params"]))]
  if mesh is None:
    jitted = jax.jit(step, donate_argnums=0)
  else:
    repl = parallel.replicated(mesh)
    state = [parallel.replicate(state[0], mesh)]
    z, y = parallel.shard_batch([np.asarray(z), np.asarray(y)], mesh)
    jitted = jax.jit(
      step, donate_argnums=0, out_shardings=(jax.tree.map(lambda _: repl, state[0]), repl)
    )
  compile_s = compile_seconds(jitted, state[0], z, y)

  def run():
    state[0], loss = jitted(state[0], z, y)
    loss.block_until_ready()

  return {
    "images_per_s": rate(b, timed(run, repeats=repeats, min_seconds=min_seconds)),
    "compile_s": compile_s,
    "batch": b,
    "devices": 1 if mesh is None else mesh.size,
  }


def bench_default_stages(*, repeats: int, min_seconds: float, n_targets: int, mesh=None) -> dict:
  """The default config's stages at its geometry (16x16x1 digits, 64-d features).

  Runs over `mesh` (default: all devices); batches are 256 images (training: 128).
  """
  mesh = parallel.data_mesh() if mesh is None else mesh
  cfg = config_lib.for_images((16, 16, 1), None)
  fs, sigma = 7, 0.955
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(256, 16, 16, 1)).astype(np.float32)
  out = {}

  model = RecognitionCNN(num_classes=10, embed_dim=64)
  params = model.init(jax.random.key(0), images[:1])
  embed = jax.jit(functools.partial(model.apply, method=RecognitionCNN.embed))
  batch = parallel.shard_batch(images, mesh)
  out["extraction"] = {
    "images_per_s": rate(
      256,
      timed(
        lambda: embed(params, batch).block_until_ready(), repeats=repeats, min_seconds=min_seconds
      ),
    ),
    "compile_s": compile_seconds(embed, params, batch),
  }

  run_cfg = decoder_training.Settings.from_entry(
    cfg.attacks.decoder,
    filter_size=fs,
    filter_sigma=sigma,
    seed=cfg.seed,
    eval_batch_size=cfg.eval_batch_size,
  )
  decoder = decoder_training.make_decoder(run_cfg, (16, 16, 1))
  tx = decoder_training.make_optimizer(run_cfg)
  features = rng.normal(size=(128, 64)).astype(np.float32)
  loss_fn = functools.partial(
    decoder_training.per_example_loss, kind="mse", filter_size=fs, filter_sigma=sigma
  )
  training = decoder_training.training_for(decoder, tx, loss_fn, 64, mesh=mesh)
  step = training.step
  state = [training.init(jax.random.key(1))]
  tb = parallel.shard_batch({"features": features, "images": images[:128]}, mesh)
  compile_s = compile_seconds(step, state[0], tb)

  def run_step():
    state[0], m = step(state[0], tb)
    m["loss"].block_until_ready()

  out["decoder_train_step"] = {
    "images_per_s": rate(128, timed(run_step, repeats=repeats, min_seconds=min_seconds)),
    "compile_s": compile_s,
    "batch": 128,
  }

  decode = jax.jit(decoder.apply)
  fb = parallel.shard_batch(rng.normal(size=(256, 64)).astype(np.float32), mesh)
  out["reconstruction"] = {
    "images_per_s": rate(
      256,
      timed(
        lambda: decode(state[0].params, fb).block_until_ready(),
        repeats=repeats,
        min_seconds=min_seconds,
      ),
    ),
  }
  score = jax.jit(functools.partial(metrics.image_scores, filter_size=fs, filter_sigma=sigma))
  a, b = parallel.shard_batch([images, images[::-1].copy()], mesh)
  out["ssim_scoring"] = {
    "images_per_s": rate(
      256,
      timed(
        lambda: score(a, b)["ssim"].block_until_ready(), repeats=repeats, min_seconds=min_seconds
      ),
    ),
  }
  targets = rng.uniform(size=(n_targets, 16, 16, 1)).astype(np.float32)
  from privjax.scoring.scores import pairwise_ssim

  secs = timed(
    lambda: pairwise_ssim(targets, targets, mesh=mesh, filter_size=fs, filter_sigma=sigma),
    repeats=max(1, repeats // 2),
    min_seconds=0,
  )
  out["image_reidentification"] = {
    "n_targets": n_targets,
    "pairs_per_s": rate(n_targets**2, secs),
    "seconds": statistics.median(secs),
  }
  return out


def natural_images(n: int, size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
  from skimage import data

  img = data.astronaut().astype(np.float32) / 255.0
  if channels == 1:
    img = img.mean(axis=-1, keepdims=True)
  rng = np.random.default_rng(0)
  corners = rng.integers(0, 512 - size, size=(n, 2))
  a = np.stack([img[i : i + size, j : j + size] for i, j in corners])
  b = np.clip(a + rng.normal(0, 0.05, a.shape).astype(np.float32), 0, 1)
  return a, b


def bench_ssim(size: int, channels: int, *, repeats: int, min_seconds: float) -> dict:
  """Per-image SSIM (window 11, sigma 1.5): privjax (dm-pix + separable filter_fn),
  dm-pix's default filter, and skimage's per-image loop, with agreement to skimage."""
  from skimage.metrics import structural_similarity

  n = 256
  a, b = natural_images(n, size, channels)
  ours = jax.jit(functools.partial(metrics.ssim, filter_size=11, filter_sigma=1.5))
  default = jax.jit(functools.partial(dm_pix.ssim, filter_size=11, filter_sigma=1.5))
  ja, jb = jnp.asarray(a), jnp.asarray(b)

  def sk(k=None):
    k = k or n
    return [
      structural_similarity(
        x,
        y,
        gaussian_weights=True,
        sigma=1.5,
        data_range=1.0,
        use_sample_covariance=False,
        channel_axis=-1,
      )
      for x, y in zip(a[:k], b[:k], strict=True)
    ]

  ref = np.asarray(sk())
  k = 64
  return {
    "shape": [size, size, channels],
    "privjax_images_per_s": rate(
      n, timed(lambda: ours(ja, jb).block_until_ready(), repeats=repeats, min_seconds=min_seconds)
    ),
    "dm_pix_default_images_per_s": rate(
      n,
      timed(lambda: default(ja, jb).block_until_ready(), repeats=repeats, min_seconds=min_seconds),
    ),
    "skimage_loop_images_per_s": rate(
      k, timed(lambda: sk(k), repeats=repeats, min_seconds=min_seconds)
    ),
    "max_abs_diff_vs_skimage": float(np.abs(np.asarray(ours(ja, jb)) - ref).max()),
  }


def bench_reid_scaling(ns, *, size=64, channels=3) -> list[dict]:
  """Exact all-pairs image-space re-identification (SSIM matrix + rank-1) at several N."""
  from privjax.scoring.scores import pairwise_ssim

  mesh = parallel.data_mesh()
  rows = []
  for n in ns:
    a, b = natural_images(n, size, channels)
    t = time.perf_counter()
    s = pairwise_ssim(b, a, mesh=mesh, filter_size=11, filter_sigma=1.5)
    hits = metrics.rank1_hits(s)
    rows.append(
      {
        "n": n,
        "seconds": time.perf_counter() - t,
        "rank1": float(hits.mean()),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      }
    )
  return rows


def bench_reid_shortlist(ns, *, exact_up_to: int, size=64, channels=3) -> list[dict]:
  """Shortlist image re-identification (scoring.scores.identify above reid.exact_max_targets)
  at several N, with its agreement with the exact all-pairs result where N <= exact_up_to."""
  from privjax.scoring import scores as scoring

  mesh = parallel.data_mesh()
  cfg = config_lib.for_images((size, size, channels), None)
  rows = []
  for n in ns:
    a, b = natural_images(n, size, channels)
    own = np.asarray(metrics.ssim(jnp.asarray(a), jnp.asarray(b), filter_size=11, filter_sigma=1.5))
    cfg.reid.exact_max_targets = 1
    t = time.perf_counter()
    short = scoring.identify(b, a, own, settings=settings_lib.scoring(cfg), mesh=mesh)
    row = {
      "n": n,
      "seconds": time.perf_counter() - t,
      "rank1": float(short["hits"].mean()),
      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if n <= exact_up_to:
      cfg.reid.exact_max_targets = n
      exact = scoring.identify(b, a, own, settings=settings_lib.scoring(cfg), mesh=mesh)
      row.update(
        exact_rank1=float(exact["hits"].mean()),
        hit_agreement=float(np.mean(exact["hits"] == short["hits"])),
        best_match_agreement=float(np.mean(exact["best"] == short["best"])),
        baseline_abs_diff=float(abs(exact["baseline"].mean() - short["baseline"].mean())),
      )
    rows.append(row)
    print(f"shortlist re-id N={n}: {row}", flush=True)
  return rows


def _proc_status_mib(field: str) -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1024
  return float("nan")


def bench_stream_memory(ns, *, size=64, channels=3, batch=256) -> list[dict]:
  """Peak memory of feature extraction + SSIM scoring at several dataset sizes.

  For each N: the inputs are loaded first, then the peak RSS is reset (Linux
  /proc/self/clear_refs) and both stages run; `peak_rise_mib` is the peak RSS over the
  RSS with the inputs loaded, i.e. what the stages themselves allocate (their
  outputs, N x 128 features and N scores, included).
  """
  from privjax.stages.extraction import extract_features

  mesh = parallel.data_mesh()
  model = RecognitionCNN(num_classes=10, embed_dim=128)
  params = model.init(jax.random.key(0), jnp.zeros((1, size, size, channels)))
  embed = jax.jit(functools.partial(model.apply, method=RecognitionCNN.embed))
  score = jax.jit(functools.partial(metrics.image_scores, filter_size=11, filter_sigma=1.5))

  def stages(a, b):
    f = extract_features(embed, params, a, mesh=mesh, batch_size=batch, name="images")
    s = parallel.batched_map(score, [a, b], batch_size=batch, mesh=mesh)
    return f, s

  stages(*natural_images(batch, size, channels))  # compile outside the measurement
  rows = []
  for n in ns:
    a, b = natural_images(n, size, channels)
    before = _proc_status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
    t = time.perf_counter()
    stages(a, b)
    rows.append(
      {
        "n": n,
        "batch": batch,
        "seconds": time.perf_counter() - t,
        "inputs_mib": (a.nbytes + b.nbytes) / 2**20,
        "rss_with_inputs_mib": before,
        "peak_rise_mib": _proc_status_mib("VmHWM") - before,
      }
    )
    print(f"stream memory N={n}: {rows[-1]}", flush=True)
    del a, b
  return rows


def bench_default_audit() -> dict:
  """The whole default audit (configs/default.py) in a fresh workdir: seconds per stage."""
  from configs import default
  from privjax import audit

  with tempfile.TemporaryDirectory() as workdir:
    t = time.perf_counter()
    report = audit.run(default.get_config(), workdir).to_dict()
    total = time.perf_counter() - t
  return {
    "seconds": report["seconds"],
    "data_and_model_s": report["metadata"]["seconds_data_and_model"],
    "wall_s": total,
    "risk_level": report["risk_level"],
    "ssim": report["ssim"],
  }


def main(argv=None):
  from benchmarks import require_test_extras

  require_test_extras()
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  mode = ap.add_mutually_exclusive_group()
  mode.add_argument("--quick", action="store_true", help="under 2 minutes")
  mode.add_argument("--smoke", action="store_true", help="seconds: checks the script runs")
  ap.add_argument("--out", default="benchmarks/results.json", help="where the JSON goes")
  ap.add_argument(
    "--cpu_devices", type=int, default=0, help="JAX CPU devices (0: one per core, as launch.py)"
  )
  args = ap.parse_args(argv)
  parallel.use_cpu_cores(args.cpu_devices)
  full = not (args.quick or args.smoke)
  repeats, min_s = (1, 0.0) if args.smoke else ((3, 0.5) if args.quick else (5, 2.0))
  t0 = time.perf_counter()
  res = {
    "mode": "smoke" if args.smoke else ("quick" if args.quick else "full"),
    "cpu": cpu_model(),
    "cores": os.cpu_count(),
    "device_kind": jax.devices()[0].device_kind,
    "device_count": jax.device_count(),
    "jax": jax.__version__,
  }
  geometries = {}
  for name in ("digits32", "dcgan64"):
    modes = ["phases", "gemm", "subpixel"] + (["gemm4"] if full else [])
    if full or (args.quick and name == "digits32"):
      modes.append("transpose")  # the plain Flax layer; dcgan64 takes ~15 s a step
    if args.smoke:
      modes = ["phases"] if name == "digits32" else []
    if full and BEST_MODE[name] not in modes:
      modes.append(BEST_MODE[name])
    runs = [(m, None) for m in modes]
    if jax.device_count() > 1 and not args.smoke:  # as launch.py runs: one device per core
      parallel_modes = dict.fromkeys(
        ["phases", "gemm", BEST_MODE[name]] if full else [BEST_MODE[name]]
      )
      runs += [(m, parallel.data_mesh()) for m in parallel_modes]
    for m, mesh in runs:
      key = f"{name}/{m}" + ("" if mesh is None else f"/{mesh.size}dev")
      geometries[key] = bench_geometry(name, m, repeats=repeats, min_seconds=min_s, mesh=mesh)
      print(f"{key:22s} {geometries[key]['images_per_s']['median']:9.0f} img/s", flush=True)
  res["decoder_geometries"] = geometries
  res["default_stages"] = bench_default_stages(
    repeats=repeats, min_seconds=min_s, n_targets=64 if args.smoke else 359
  )
  res["ssim"] = [
    bench_ssim(s, c, repeats=repeats, min_seconds=min_s)
    for s, c in (((32, 1),) if args.smoke else ((64, 3), (32, 1)))
  ]
  res["reid_scaling_64x64x3"] = bench_reid_scaling(
    [64] if args.smoke else ([250] if args.quick else [500, 2000])
  )
  res["reid_shortlist_64x64x3"] = bench_reid_shortlist(
    [64] if args.smoke else ([250] if args.quick else [500, 1000, 2000, 10000]),
    exact_up_to=64 if args.smoke else (0 if args.quick else 2000),
  )
  res["stream_memory_64x64x3"] = bench_stream_memory(
    [256, 512] if args.smoke else ([1000, 4000] if args.quick else [2000, 20000])
  )
  if full:
    res["default_audit"] = bench_default_audit()
  res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  res["benchmark_s"] = time.perf_counter() - t0
  print(table(res))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(res, f, indent=1)
  print(f"wrote {args.out} ({res['benchmark_s']:.0f} s)")
  return res


def table(res) -> str:
  def r(x):
    return f"{x['median']:,.0f} ({x['min']:,.0f}-{x['max']:,.0f})"

  lines = [
    f"{res['cpu']}, {res['cores']} cores; {res['device_count']} x {res['device_kind']}",
    "",
    "| stage | images/s, median (min-max) | compile s |",
    "|---|---|---|",
  ]
  for k, v in res["decoder_geometries"].items():
    lines.append(
      f"| train step {k} (batch {v['batch']}, {v['devices']} device(s)) | "
      f"{r(v['images_per_s'])} | {v['compile_s']:.1f} |"
    )
  for k, v in res["default_stages"].items():
    if "images_per_s" in v:
      c = f"{v['compile_s']:.1f}" if "compile_s" in v else ""
      lines.append(f"| default {k} | {r(v['images_per_s'])} | {c} |")
  re = res["default_stages"]["image_reidentification"]
  lines.append(
    f"| default image re-id, N={re['n_targets']} | {r(re['pairs_per_s'])} pairs/s, "
    f"{re['seconds']:.2f} s | |"
  )
  for s in res["ssim"]:
    shape = "x".join(map(str, s["shape"]))
    lines.append(f"| SSIM {shape} privjax | {r(s['privjax_images_per_s'])} | |")
    lines.append(
      f"| SSIM {shape} dm-pix default filter | {r(s['dm_pix_default_images_per_s'])} | |"
    )
    lines.append(f"| SSIM {shape} skimage loop | {r(s['skimage_loop_images_per_s'])} | |")
    lines.append(f"| SSIM {shape} max abs diff vs skimage | {s['max_abs_diff_vs_skimage']:.1e} | |")
  for row in res["reid_scaling_64x64x3"]:
    lines.append(
      f"| exact image re-id 64x64x3, N={row['n']:,} | {row['seconds']:.1f} s "
      f"(peak RSS {row['peak_rss_mib']:.0f} MiB) | |"
    )
  for row in res.get("reid_shortlist_64x64x3", []):
    agree = ""
    if "hit_agreement" in row:
      agree = f", agrees with exact on {row['hit_agreement']:.1%} of hits"
    lines.append(
      f"| shortlist image re-id 64x64x3, N={row['n']:,} | {row['seconds']:.1f} s "
      f"(rank-1 {row['rank1']:.3f}{agree}) | |"
    )
  for row in res.get("stream_memory_64x64x3", []):
    lines.append(
      f"| extraction + scoring 64x64x3, N={row['n']:,} (batch {row['batch']}) | peak RSS rise "
      f"{row['peak_rise_mib']:.0f} MiB over {row['rss_with_inputs_mib']:.0f} MiB with the "
      f"{row['inputs_mib']:.0f} MiB inputs loaded | |"
    )
  if "default_audit" in res:
    a = res["default_audit"]
    stages = ", ".join(f"{k} {v:.1f}" for k, v in a["seconds"].items())
    lines.append(
      f"| default audit wall time | {a['wall_s']:.1f} s (data+model "
      f"{a['data_and_model_s']:.1f}; {stages}) | |"
    )
  lines.append(f"| peak RSS | {res['peak_rss_mib']:.0f} MiB | |")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
