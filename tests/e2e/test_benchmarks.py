"""The benchmark scripts run end to end (their speed is not tested: numbers live in the JSON).

Each script's main(argv) runs in this process, with its 4 CPU devices (a subprocess would
get the same 4 through XLA_FLAGS, and pay JAX's start-up)."""

import json


def test_benchmark_smoke_mode_runs_and_writes_json(tmp_path, capsys):
  from benchmarks import run

  out = tmp_path / "bench.json"
  run.main(["--smoke", f"--out={out}"])
  res = json.loads(out.read_text())
  assert res["decoder_geometries"]["digits32/phases"]["images_per_s"]["median"] > 0
  assert res["ssim"][0]["max_abs_diff_vs_skimage"] < 1e-4
  assert "| stage |" in capsys.readouterr().out


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
  assert set(res["default_audit"]["attacks"]) == {
    "decoder",
    "ridge",
    "nearest",
    "whitebox",
    "blend",
  }
  assert res["whitebox"][0]["image_steps_per_s"] > 0
  assert res["nonlinear"][0]["deciding"] in res["nonlinear"][0]["psnr"]


def test_crops64_maker_labels_each_crop_with_its_picture():
  from benchmarks import crops64

  images, labels = crops64.make(per_picture=2)
  assert images.shape == (2 * len(crops64.PICTURES), 64, 64, 3) and images.dtype.name == "uint8"
  assert labels.tolist() == [i for i in range(len(crops64.PICTURES)) for _ in range(2)]
  again, _ = crops64.make(per_picture=2)
  assert (images == again).all()  # seeded


def test_identity_memory_benchmark_measures_one_size():
  from benchmarks import identity_memory

  row = identity_memory.one(400, 16, 64)
  assert row["targets"] == 400 and row["peak_rss_mib"] >= row["rss_before_mib"] > 0
  assert 0 <= row["type2_sar"] <= 1
