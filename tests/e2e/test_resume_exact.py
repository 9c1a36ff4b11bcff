"""Resume is exact by construction: a finished workdir re-run with any setting changed that
changes a number gives the report and sweep.json a fresh run of the changed config gives,
never the stored results of the old settings."""

import json
import shutil

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import privjax
from tests.conftest import only_attackers

# What differs between two runs that computed the same numbers: times, cache hits, the
# environment they ran in.
_VOLATILE = {"seconds", "cached", "environment", "seconds_data_and_model"}


def close_pixels(targets, recon):
  """A user's metric (by import path): 1 - mean absolute pixel error, per image."""
  return 1.0 - jnp.abs(targets - recon).mean(axis=(1, 2, 3))


def _config(**change) -> ml_collections.ConfigDict:
  cfg = {
    "attacks": only_attackers(ridge={"num_features": 64}, nearest={}),
    "bootstrap_samples": 100,
    "attack_strength": {"aux_fractions": (1.0,)},
    "defense": {"sweep": {"gaussian_noise": {"strengths": (0.5,)}}},
  }
  for path, value in change.items():  # "risk.high_ssim_gain": a partial group
    node = cfg
    *head, last = path.split(".")
    for part in head:
      node = node.setdefault(part, {})
    node[last] = value
  return ml_collections.ConfigDict(cfg)


def _audit(digits8, workdir, **change) -> tuple[dict, dict]:
  x, y = digits8
  rng = np.random.default_rng(0)
  proj = jnp.asarray(rng.normal(size=(64, 24)), jnp.float32)
  judge = jnp.asarray(rng.normal(size=(64, 16)), jnp.float32)
  embed = lambda p, im: jnp.tanh(im.reshape(im.shape[0], -1) @ p / 4)  # noqa: E731
  privjax.assess(
    embed,
    proj,
    x[:300],
    x[300:360],
    config=_config(**change),
    workdir=str(workdir),
    target_labels=y[300:360],
    aux_labels=y[:300],
    evaluator=privjax.Evaluator(embed, judge),
    progress=False,
  )
  read = lambda name: _stable(json.loads((workdir / name).read_text()))  # noqa: E731
  return read("report.json"), read("sweep.json")


def _stable(tree):
  if isinstance(tree, dict):
    return {k: _stable(v) for k, v in tree.items() if k not in _VOLATILE}
  if isinstance(tree, list):
    return [_stable(v) for v in tree]
  return tree


@pytest.fixture(scope="module")
def finished(digits8, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("finished")
  return workdir, _audit(digits8, workdir)


METRIC = {"close": {"type": f"{__name__}:close_pixels", "high": 0.01, "medium": 0.005}}


@pytest.mark.parametrize(
  "change",
  [
    {"metrics": METRIC},
    {"risk.high_ssim_gain": 0.9, "risk.high_image_reid": 0.99},
    {"risk.identity_fmr": 0.1, "identity.fmrs": (0.1,)},
    {"bootstrap_samples": 150},
    {"ssim.filter_size": 3},
    {"seed": 1},
  ],
  ids=["metrics", "risk", "identity_fmr", "bootstrap", "ssim_window", "seed"],
)
def test_a_finished_workdir_rerun_with_a_change_gives_the_fresh_runs_numbers(
  digits8, finished, tmp_path, change
):
  workdir, before = finished
  rerun = tmp_path / "rerun"
  shutil.copytree(workdir, rerun)
  resumed = _audit(digits8, rerun, **change)
  fresh = _audit(digits8, tmp_path / "fresh", **change)
  assert resumed[1] == fresh[1]  # sweep.json
  assert resumed[0] == fresh[0]  # report.json
  assert fresh != before  # the change does change a number
