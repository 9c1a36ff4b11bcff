"""Test setup for both tiers: four CPU devices, so every test runs the sharded code paths;
the digits data and a tiny audit config. (The command-line harness is tests/e2e/conftest.py.)"""

import os

# Must run before JAX initialises its backends.
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from privjax.data.splits import load_digits  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
  del config
  assert jax.device_count() == 4, f"expected 4 forced CPU devices, got {jax.devices()}"


# The longest test files, longest first (their summed test times in one `make test`, e2e
# tier: scale 315 s, reliability 582 s, benchmarks 263 s, ... on 2 busy cores). Parallel
# workers take whole files in this order, so the longest no longer starts last and runs
# alone while the other workers idle (test_scale's one fixture did, for over 200 s).
LONGEST_FIRST = (
  "tests/e2e/test_scale.py",
  "tests/e2e/test_reliability.py",
  "tests/e2e/test_benchmarks.py",
  "tests/e2e/test_readme.py",
  "tests/e2e/test_workdir.py",
  "tests/e2e/test_attacks.py",
  "tests/e2e/test_launch.py",
  "tests/e2e/test_sources.py",
  "tests/e2e/test_audit.py",
  "tests/e2e/test_research_doc.py",
)


def pytest_collection_modifyitems(session, config, items):
  """Runs the files of LONGEST_FIRST first (in its order), every other file after them in
  the order collected; a file's tests keep their order."""
  del session, config
  rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
  where = lambda item: os.path.relpath(str(item.path), REPO_ROOT).replace(os.sep, "/")
  items.sort(key=lambda item: rank.get(where(item), len(rank)))  # (a stable sort)


@pytest.fixture(scope="session")
def digits8():
  """sklearn digits at 8x8: images [1797, 8, 8, 1] in [0, 1], labels [1797]."""
  return load_digits(8)


def tiny_config(**train) -> ml_collections.ConfigDict:
  """An audit config that trains a small decoder in a few seconds."""
  t = {
    "num_steps": 600,
    "eval_every": 100,
    "batch_size": 128,
    "learning_rate": 3e-3,
  }
  t.update(train)
  t.setdefault("warmup_steps", min(20, t["num_steps"] // 2))
  return ml_collections.ConfigDict(
    {"attacks": {"decoder": dict(t, width=32, hidden=256)}, "bootstrap_samples": 300}
  )


BUILTIN_ATTACKERS = ("decoder", "ridge", "nearest", "whitebox", "blend")


def only_attackers(**entries) -> dict:
  """A config.attacks override running only the named attackers (the others "off"):
  naming an attacker merges into it, so the rest must be switched off by name."""
  return {**{n: {"type": "off"} for n in BUILTIN_ATTACKERS}, **entries}


def tiny_training(image_shape, **train):
  """The Settings that train `tiny_config`'s decoder on images of this shape."""
  from privjax import config as config_lib
  from privjax.attacks.decoder_training import Settings

  c = config_lib.for_images(image_shape, tiny_config(**train))
  return Settings.from_entry(
    c.attacks.decoder,
    filter_size=c.ssim.filter_size,
    filter_sigma=c.ssim.filter_sigma,
    seed=c.seed,
    eval_batch_size=c.eval_batch_size,
    val_fraction=c.val_fraction,
  )


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def png_header(path, width, height) -> str:
  """Writes a PNG whose header claims width x height pixels (its pixel data is 64 zero
  bytes: a decompression-bomb stand-in that costs nothing); returns its path."""
  import struct
  import zlib

  def chunk(kind, payload):
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

  ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
  idat = zlib.compress(b"\0" * 64)
  path.write_bytes(
    b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
  )
  return str(path)


def snapshot(directory):
  """{relative path: (mtime_ns, bytes)} of every file under `directory` but the lock file:
  what "the workdir is unchanged" compares."""
  from privjax.runtime import workdir as workdir_lib

  out = {}
  for root, _, files in os.walk(directory):
    for f in files:
      if f != workdir_lib.LOCK_FILE:
        path = os.path.join(root, f)
        with open(path, "rb") as fh:
          out[os.path.relpath(path, directory)] = (os.stat(path).st_mtime_ns, fh.read())
  return out
