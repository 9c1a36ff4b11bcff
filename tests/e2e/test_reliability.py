"""Interruptions resume to the same answer; runs reproduce; one run per workdir; caches."""

import functools
import json
import os
import random
import shutil
import signal

import numpy as np
import pytest

import privjax
from tests.conftest import only_attackers, tiny_config
from tests.e2e.conftest import last_line, launch, launch_until

# Long enough to be interrupted mid-way (a few seconds of training), short enough for CI.
LONG = [
  "--config.attacks.decoder.num_steps=300",
  "--config.attacks.decoder.eval_every=20",
  "--config.attacks.decoder.checkpoint_every=40",
  "--config.attacks.decoder.patience=100",
]


METRICS = (
  "ssim",
  "ssim_per_image",
  "psnr",
  "baseline_ssim",
  "ssim_gain",
  "ssim_gain_ci",
  "image_reid_rate",
  "reid_rate",
  "risk_level",
  "convergence",
)


def _metrics(workdir):
  r = json.loads((workdir / "report.json").read_text())
  return {k: r[k] for k in METRICS}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, launch_here):
  """An uninterrupted run (in this process: the fresh-process runs below must match it)."""
  workdir = tmp_path_factory.mktemp("reference")
  result = launch_here("configs/smoke.py", workdir, *LONG)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def test_fresh_runs_with_the_same_seed_are_identical(reference, tmp_path):
  result = launch("configs/smoke.py", tmp_path, *LONG)  # a fresh process, as a user runs it
  assert result.returncode == 0, result.stderr[-3000:]
  assert _metrics(tmp_path) == _metrics(reference)


@pytest.mark.parametrize(
  "marker,delay",
  [
    ("decoder: training on", random.Random(0).uniform(0.5, 2.0)),  # a random training step
    ("stage extraction ...", 0.0),  # (SIGTERM at the last scoring covers a late stop)
  ],
)
def test_sigkill_then_rerun_gives_the_uninterrupted_answer(
  reference, tmp_path, launch_here, marker, delay
):
  code, _ = launch_until(
    "configs/smoke.py", tmp_path, marker, *LONG, sig=signal.SIGKILL, delay=delay
  )
  assert code == -signal.SIGKILL
  result = launch_here("configs/smoke.py", tmp_path, *LONG)
  assert result.returncode == 0, result.stderr[-3000:]
  assert _metrics(tmp_path) == _metrics(reference)  # bitwise on CPU


def test_sigterm_saves_a_checkpoint_and_resumes(reference, tmp_path, launch_here):
  code, stderr = launch_until(
    "configs/smoke.py", tmp_path, "decoder step 60/", *LONG, sig=signal.SIGTERM
  )
  assert code == 143, stderr[-3000:]
  last = stderr.strip().splitlines()[-1]
  assert "stopped by SIGTERM at decoder step" in last and "re-run the same command" in last
  step = int(last.split("decoder step ")[1].split(";")[0])
  assert str(step) in os.listdir(tmp_path / "checkpoints" / "decoder")
  result = launch_here("configs/smoke.py", tmp_path, *LONG)
  assert result.returncode == 0 and f"resumed from checkpoint at step {step}" in result.stderr
  assert _metrics(tmp_path) == _metrics(reference)


def test_rerun_reuses_cached_stages(reference, launch_here):
  result = launch_here("configs/smoke.py", reference, *LONG)
  assert result.returncode == 0
  assert "recognition model restored" in result.stderr
  assert "features of aux_images restored" in result.stderr
  assert "features of target_images restored" in result.stderr
  assert "decoder step" not in result.stderr


def test_changed_config_is_refused_unless_overwrite(reference, tmp_path, launch_here):
  before = (reference / "report.json").read_bytes()
  result = launch_here("configs/smoke.py", reference, *LONG, "--config.attacks.decoder.width=8")
  assert result.returncode == 2
  assert "decoder checkpoint was made with different inputs (width: 16 -> 8" in last_line(result)
  assert (reference / "report.json").read_bytes() == before
  result = launch_here("configs/smoke.py", reference, *LONG, "--config.model.embed_dim=32")
  assert result.returncode == 2 and "recognition model was made with different" in last_line(result)
  # Thresholds do not change any cached result: no conflict.
  result = launch_here("configs/smoke.py", reference, *LONG, "--config.risk.high_ssim_gain=0.9")
  assert result.returncode == 0, result.stderr[-2000:]
  # overwrite=True discards the stale stage and retrains it (in a copy, to keep reference).
  import shutil

  shutil.copytree(reference, tmp_path / "w")
  result = launch_here(
    "configs/smoke.py",
    tmp_path / "w",
    *LONG,
    "--config.attacks.decoder.width=8",
    "--config.overwrite=True",
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert "decoder step" in result.stderr


def test_second_concurrent_run_fails_at_once_and_a_killed_run_leaves_no_stale_lock(
  tmp_path, launch_here
):
  import subprocess
  import sys
  import time

  from tests.conftest import REPO_ROOT

  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  first = subprocess.Popen(
    [
      sys.executable,
      "launch.py",
      "--config=configs/smoke.py",
      f"--workdir={tmp_path}",
      *LONG,
      "--config.attacks.decoder.num_steps=3000",
    ],
    cwd=REPO_ROOT,
    env=env,
    stderr=subprocess.PIPE,
    stdout=subprocess.DEVNULL,
    text=True,
  )
  try:
    for line in first.stderr:
      if "decoder: training on" in line:
        break
    t = time.perf_counter()
    second = launch_here("configs/smoke.py", tmp_path, *LONG)  # another process: this one
    assert second.returncode == 2
    assert f"another privjax run (pid {first.pid}) is using workdir" in last_line(second)
    assert time.perf_counter() - t < 60
  finally:
    first.kill()
    first.wait()
  # The dead run's lock is gone (its half-trained decoder is discarded: a new config).
  third = launch_here(
    "configs/smoke.py",
    tmp_path,
    *LONG,
    "--config.attacks.decoder.patience=1",
    "--config.overwrite=True",
  )
  assert third.returncode == 0, third.stderr[-2000:]


def _projection_audit(digits8, seed, workdir=None):
  import jax.numpy as jnp

  x, _ = digits8
  proj = jnp.asarray(np.random.default_rng(0).normal(size=(64, 16)), jnp.float32)
  cfg = tiny_config(num_steps=60)
  cfg.seed = seed
  return privjax.assess(
    lambda p, im: im.reshape(im.shape[0], -1) @ p,
    proj,
    x[:400],
    x[400:460],
    config=cfg,
    workdir=workdir,
  )


def test_seed_controls_the_decoder(digits8):
  a, b = _projection_audit(digits8, 0), _projection_audit(digits8, 0)
  c = _projection_audit(digits8, 1)
  np.testing.assert_array_equal(a.reconstructions, b.reconstructions)
  assert a.to_dict()["ssim_per_image"] == b.to_dict()["ssim_per_image"]
  assert not np.array_equal(a.reconstructions, c.reconstructions)
  assert a.to_dict()["seed"] == 0 and "batch order" in a.to_dict()["seed_controls"]


def test_divergence_keeps_the_last_good_checkpoint(digits8, tmp_path, monkeypatch):
  import jax
  import jax.numpy as jnp
  import optax
  import orbax.checkpoint as ocp

  from privjax.attacks import decoder_training

  make_optimizer = decoder_training.make_optimizer

  def poisoned(tc):  # a fault injected into the optimizer: NaN updates from step 15 on
    base = make_optimizer(tc)

    def update(grads, state, params=None):
      updates, inner = base.update(grads, state[0], params)
      bad = state[1] >= 15
      updates = jax.tree.map(lambda u: jnp.where(bad, jnp.nan, u), updates)
      return updates, (inner, state[1] + 1)

    return optax.GradientTransformation(lambda p: (base.init(p), jnp.zeros((), jnp.int32)), update)

  monkeypatch.setattr(decoder_training, "make_optimizer", poisoned)
  x, _ = digits8
  cfg = tiny_config(num_steps=100, eval_every=10)
  cfg.attacks.decoder.checkpoint_every = 10
  with pytest.raises(privjax.TrainingError, match="non-finite loss nan at step 20"):
    privjax.assess(
      lambda p, im: im.reshape(im.shape[0], -1),
      None,
      x[:400],
      x[400:460],
      config=cfg,
      workdir=str(tmp_path),
    )
  ckpt = tmp_path / "checkpoints" / "decoder"
  steps = sorted(int(s) for s in os.listdir(ckpt) if s.isdigit())
  assert steps == [10]  # the step-20 state was never saved over the good one
  restored = ocp.StandardCheckpointer().restore(ckpt / "10" / "state")
  leaves = [np.asarray(v) for v in jax.tree.leaves(restored)]
  assert all(np.all(np.isfinite(v)) for v in leaves if v.dtype.kind == "f")


@pytest.mark.parametrize(
  "eval_every,checkpoint_every,num_steps,patience",
  [(20, 5, 40, 2), (7, 3, 30, 1), (10, 10, 25, 3), (50, 40, 30, 1)],
)
def test_valid_train_schedules_finish_and_resume(
  digits8, tmp_path, eval_every, checkpoint_every, num_steps, patience
):
  x, _ = digits8
  cfg = tiny_config(num_steps=num_steps, eval_every=eval_every, warmup_steps=2)
  cfg.attacks.decoder.checkpoint_every = checkpoint_every
  cfg.attacks.decoder.patience = patience
  run = functools.partial(
    privjax.assess,
    lambda p, im: im.reshape(im.shape[0], -1),
    None,
    x[:300],
    x[300:340],
    config=cfg,
    workdir=str(tmp_path),
  )
  first = run().to_dict()
  again = run().to_dict()  # resumes from the finished checkpoint: nothing retrained
  assert first["convergence"] == again["convergence"]
  assert first["ssim_per_image"] == again["ssim_per_image"]


@pytest.mark.parametrize(
  "impurity",
  ["random at trace time", "depends on the batch"],
)
def test_an_impure_embed_fn_is_refused(digits8, impurity):
  import jax.numpy as jnp

  x, _ = digits8
  if impurity == "random at trace time":  # new random weights each time it is traced

    def embed(p, im):
      w = np.random.default_rng().normal(size=(64, 8)).astype(np.float32)
      return im.reshape(im.shape[0], -1) @ w

  else:  # batch statistics (a BatchNorm left in training mode)

    def embed(p, im):
      f = im.reshape(im.shape[0], -1)
      return (f - f.mean(axis=0)) @ jnp.ones((64, 8))

  with pytest.raises(privjax.ModelError, match="embed_fn is not deterministic"):
    privjax.assess(embed, None, x[:300], x[300:360], config=tiny_config(num_steps=20))


class _ArrayLike:  # a NumPy-compatible object that is not a JAX array (a torch tensor, say)
  def __init__(self, a):
    self.a = a

  def __array__(self, dtype=None, copy=None):
    return self.a if dtype is None else self.a.astype(dtype)


def test_params_are_converted_when_numpy_compatible_and_refused_otherwise(digits8):
  x, _ = digits8
  proj = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
  cfg = tiny_config(num_steps=20)
  cfg.attacks = only_attackers(ridge={})
  embed = lambda p, im: im.reshape(im.shape[0], -1) @ p["w"]  # noqa: E731
  a = privjax.assess(embed, {"w": _ArrayLike(proj)}, x[:200], x[200:240], config=cfg)
  b = privjax.assess(embed, {"w": proj}, x[:200], x[200:240], config=cfg)
  assert a.to_dict()["ssim_per_image"] == b.to_dict()["ssim_per_image"]
  with pytest.raises(privjax.ModelError, match=r"params\['w'\] must be a numeric array, got str"):
    privjax.assess(embed, {"w": "weights.npy"}, x[:200], x[200:240], config=cfg)


def test_a_damaged_or_nan_cache_is_recomputed_never_trusted(digits8, tmp_path, caplog):
  from privjax.runtime import cache

  x, _ = digits8
  proj = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
  cfg = tiny_config(num_steps=20)
  cfg.attacks = only_attackers(ridge={}, nearest={})
  run = functools.partial(
    privjax.assess,
    lambda p, im: im.reshape(im.shape[0], -1) @ p,
    proj,
    x[:200],
    x[200:240],
    config=cfg,
    workdir=str(tmp_path),
    progress=False,  # warnings then reach the caller's logging (caplog)
  )
  first = run().to_dict()
  (path,) = (tmp_path / "cache").glob("target_images-*.npz")
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
  path.write_bytes(bytes(data))
  assert run().to_dict()["ssim_per_image"] == first["ssim_per_image"]
  assert "is damaged" in caplog.text
  caplog.clear()
  good = cache.load(str(path))[0]["features"]
  cache.save(str(path), {"features": np.full_like(good, np.nan)})  # a valid checksum of NaN
  assert run().to_dict()["ssim_per_image"] == first["ssim_per_image"]
  assert "non-finite values" in caplog.text
  np.testing.assert_array_equal(cache.load(str(path))[0]["features"], good)


@pytest.mark.parametrize("marker", ["stage scoring ..."])  # (SIGKILL: extraction)
def test_sigterm_in_any_stage_is_one_line_and_resumes(reference, tmp_path, launch_here, marker):
  code, stderr = launch_until("configs/smoke.py", tmp_path, marker, *LONG, sig=signal.SIGTERM)
  assert code == 143, stderr[-3000:]
  assert stderr.strip().splitlines()[-1].startswith("privjax: stopped by SIGTERM")
  assert "Traceback" not in stderr
  result = launch_here("configs/smoke.py", tmp_path, *LONG)
  assert result.returncode == 0, result.stderr[-3000:]
  assert _metrics(tmp_path) == _metrics(reference)


def test_a_changed_byte_in_the_latest_checkpoint_falls_back_to_the_previous_one(
  reference, tmp_path, launch_here
):
  # A same-size change that orbax itself restores without complaint (a number changes).
  shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
  decoder = tmp_path / "checkpoints" / "decoder"
  latest = max((p for p in decoder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
  data = max((latest / "state").glob("ocdbt.process_0/d/*"), key=lambda p: p.stat().st_size)
  damaged = bytearray(data.read_bytes())
  damaged[len(damaged) // 2] ^= 0x01
  data.write_bytes(bytes(damaged))
  for cached in (tmp_path / "cache").glob("attack-decoder-*.npz"):
    cached.unlink()  # so the decoder stage reads its checkpoint again
  result = launch_here("configs/smoke.py", tmp_path, *LONG)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"checkpoint step {latest.name} in {decoder} cannot be restored" in result.stderr
  assert "Traceback" not in result.stderr  # (TensorStore's closed-loop callbacks: hidden)
  assert "do not match the checksum" in result.stderr
  assert (decoder / f"{latest.name}.damaged").is_dir()
  assert _metrics(tmp_path) == _metrics(reference)  # retrained from the previous step
