"""Test setup: four CPU devices, so every test runs the sharded code paths."""

import os

# Must run before JAX initialises its backends.
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from privjax.data import load_digits  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
  del config
  assert jax.device_count() == 4, f"expected 4 forced CPU devices, got {jax.devices()}"


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
    {"train": t, "decoder": {"width": 32, "hidden": 256}, "bootstrap_samples": 300}
  )


@pytest.fixture
def rng():
  return np.random.default_rng(0)
