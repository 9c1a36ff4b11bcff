"""privjax/stages/inputs.py: what the inputs' checks refuse, and what they flag for the report."""

import ml_collections
import numpy as np
import pytest

from privjax import config as config_lib
from privjax.errors import ConfigError
from privjax.stages import inputs as inputs_lib


def _check(aux, targets, target_labels=None, aux_labels=None):
  return inputs_lib.check(
    lambda p, x: x.reshape(x.shape[0], -1),
    None,
    aux,
    targets,
    target_labels=target_labels,
    aux_labels=aux_labels,
    aux_features=None,
    target_features=None,
    evaluator=None,
    target_sources=None,
    metadata=None,
    feature_dim=None,
  )


def test_targets_that_are_also_auxiliary_images_are_flagged(digits8):
  x, _ = digits8
  aux, targets = x[:300], np.concatenate([x[300:340], x[[5, 17]]])
  (line,) = _check(aux, targets).warnings
  assert line.startswith("2 of 42 target images are also auxiliary images (targets 40, 41)")
  assert _check(x[:300], x[300:342]).warnings == ()


def test_labels_sharing_no_identity_are_flagged(digits8):
  x, y = digits8
  aux, targets = x[:300], x[300:340]
  disjoint = _check(aux, targets, target_labels=np.full(40, 1), aux_labels=np.full(300, 2))
  (line,) = disjoint.warnings
  assert line.startswith("aux_labels share no identity with target_labels")
  shared = _check(aux, targets, target_labels=y[300:340], aux_labels=y[:300])
  assert shared.warnings == ()


def test_two_strength_fractions_giving_the_same_part_are_refused(digits8):
  x, _ = digits8
  cfg = ml_collections.ConfigDict({"attack_strength": {"aux_fractions": (0.5, 0.25, 0.5)}})
  with pytest.raises(
    ConfigError, match=r"aux_fractions\[2\]=0.5 gives the same 150 .* aux_fractions\[0\]=0.5"
  ):
    inputs_lib.check_sizes(config_lib.resolve(x.shape[1:], cfg), x[:300], x[300:340])
  near = ml_collections.ConfigDict({"attack_strength": {"aux_fractions": (0.5, 0.501)}})
  with pytest.raises(ConfigError, match="list each part once"):
    inputs_lib.check_sizes(config_lib.resolve(x.shape[1:], near), x[:300], x[300:340])
