"""The benchmark scripts run end to end (their speed is not tested: numbers live in the JSON).

Each script's main(argv) runs in this process, with its 4 CPU devices (a subprocess would
get the same 4 through XLA_FLAGS, and pay JAX's start-up)."""

import json
import sys

from tests.conftest import REPO_ROOT


def test_benchmark_smoke_mode_runs_and_writes_json(tmp_path, capsys):
  from benchmarks import run

  out = tmp_path / "bench.json"
  run.main(["--smoke", f"--out={out}"])
  res = json.loads(out.read_text())
  assert res["decoder_geometries"]["digits32/phases"]["images_per_s"]["median"] > 0
  assert res["ssim"][0]["max_abs_diff_vs_skimage"] < 1e-4
  assert "| stage |" in capsys.readouterr().out


def test_fast_transposed_convolutions_equal_pytorch_semantics():
  """Every formulation computes PyTorch's ConvTranspose2d(k=4, s=2, p=1)."""
  import jax
  import numpy as np

  sys.path.insert(0, REPO_ROOT)
  from benchmarks.geometries import ConvTranspose4x4s2

  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 5, 6, 3)))

  def naive(x, w):  # y[2i - 1 + ky, 2j - 1 + kx] += x[i, j] @ w[ky, kx]
    b, h, wd, _ = x.shape
    y = np.zeros((b, 2 * h + 2, 2 * wd + 2, w.shape[3]))
    for i in range(h):
      for j in range(wd):
        for ky in range(4):
          for kx in range(4):
            y[:, 2 * i + ky, 2 * j + kx] += x[:, i, j] @ w[ky, kx]
    return y[:, 1:-1, 1:-1]

  for mode in ("transpose", "subpixel", "phases", "gemm", "gemm4"):
    layer = ConvTranspose4x4s2(4, mode, use_bias=False)
    params = layer.init(jax.random.key(1), x)
    np.testing.assert_allclose(
      layer.apply(params, x), naive(x, np.asarray(params["params"]["kernel"])), atol=1e-5
    )


def test_per_layer_modes_compute_the_same_network():
  import jax
  import numpy as np
  import pytest

  from benchmarks.geometries import BEST_MODE, GEOMETRIES

  for name, g in GEOMETRIES.items():
    z = jax.random.normal(jax.random.key(0), (2, g["in_dim"]))
    variables = g["model"]("phases").init(jax.random.key(1), z)
    want = g["model"]("transpose").apply(variables, z, train=False)
    got = g["model"](BEST_MODE[name]).apply(variables, z, train=False)
    np.testing.assert_allclose(got, want, atol=1e-5, err_msg=name)
    with pytest.raises(ValueError, match="comma-separated modes, got 'phases,gemm'"):
      g["model"]("phases,gemm").init(jax.random.key(1), z)


def test_scaling_benchmark_smoke_mode_runs(tmp_path, capsys):
  from benchmarks import scaling

  out = tmp_path / "scaling.json"
  scaling.main(["--smoke", f"--out={out}"])
  res = json.loads(out.read_text())
  assert res["device_counts"] == [1, 2, 4]  # the suite's 4 forced devices
  for n in res["device_counts"]:
    assert res["runs"][str(n)]["decoder_train_step"]["images_per_s"]["median"] > 0
  assert "per-image time on 4 devices" in capsys.readouterr().out


def test_attack_benchmark_smoke_mode_runs_and_writes_json(tmp_path):
  from benchmarks import attacks

  out = tmp_path / "attacks.json"
  attacks.main(["--smoke", f"--out={out}", "--cpu_devices=2"])  # XLA_FLAGS' 4 devices win
  res = json.loads(out.read_text())
  assert set(res["default_audit"]["attacks"]) == {"decoder", "ridge", "nearest", "whitebox"}
  assert res["whitebox"][0]["image_steps_per_s"] > 0
  assert res["nonlinear"][0]["deciding"] in res["nonlinear"][0]["psnr"]
