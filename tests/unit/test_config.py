"""Config checks: statistics too degenerate to judge from are refused."""

import re

import ml_collections
import pytest

import privjax
from privjax import config as config_lib
from privjax import settings as settings_lib


@pytest.mark.parametrize(
  "field,value,message",
  [
    ("min_targets", 1, "config.min_targets must be at least 10"),
    ("bootstrap_samples", 1, "config.bootstrap_samples must be at least 100"),
    ("ssim", {"filter_size": 101}, "does not fit 8x8 images"),
    (
      "attacks",
      {"decoder": {"ssim_weight": -0.1}},
      "config.attacks.decoder.ssim_weight must be a number >= 0.0, got -0.1",
    ),
    (
      "attacks",
      {"decoder": {"ema_decay": 1.0}},
      "config.attacks.decoder.ema_decay must be below 1 in float32 (0: off; at most "
      "0.9999999), got 1.0",
    ),
    (
      "attacks",
      {"decoder": {"ema_decay": 0.99999999}},  # 1.0 in float32
      "config.attacks.decoder.ema_decay must be below 1 in float32",
    ),
  ],
)
def test_degenerate_statistics_are_refused(field, value, message):
  import ml_collections

  from privjax import config as config_lib

  with pytest.raises(privjax.ConfigError, match=re.escape(message)):
    config_lib.validate(config_lib.for_images((8, 8, 1), ml_collections.ConfigDict({field: value})))


def test_naming_one_attacker_changes_only_it_and_off_removes_one():
  c = config_lib.for_images(
    (8, 8, 1),
    ml_collections.ConfigDict(
      {
        "attacks": {
          "decoder": {"num_steps": 7},
          "nearest": {"type": "off"},
          "mine": {"type": "a:b"},
        }
      }
    ),
  )
  assert c.attacks.decoder.num_steps == 7 and c.attacks.decoder.width == 0  # the rest kept
  assert c.attacks.ridge.num_features == 1024 and c.attacks.whitebox.type == "whitebox"
  assert c.attacks.nearest.type == "off" and c.attacks.mine.type == "a:b"
  # A new type for a named attacker starts from that type's defaults.
  c = config_lib.for_images(
    (8, 8, 1), ml_collections.ConfigDict({"attacks": {"ridge": {"type": "nearest"}}})
  )
  assert c.attacks.ridge.to_dict() == {"type": "nearest"}


def test_the_old_decoder_keys_are_read_at_their_new_place_with_one_warning(caplog):
  old = ml_collections.ConfigDict(
    {"train": {"num_steps": 9, "val_fraction": 0.2}, "decoder": {"width": 8}}
  )
  with caplog.at_level("WARNING"):
    c = config_lib.for_images((8, 8, 1), old)
  assert (c.attacks.decoder.num_steps, c.attacks.decoder.width, c.val_fraction) == (9, 8, 0.2)
  lines = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
  assert len(lines) == 1 and "train.num_steps -> attacks.decoder.num_steps" in lines[0]
  assert "train.val_fraction -> val_fraction" in lines[0]
  # The new key, where also given, wins.
  both = ml_collections.ConfigDict(
    {"train": {"num_steps": 9}, "attacks": {"decoder": {"num_steps": 5}}}
  )
  assert config_lib.for_images((8, 8, 1), both).attacks.decoder.num_steps == 5
  assert settings_lib.moved_key("decoder.hidden") == "attacks.decoder.hidden"
  assert settings_lib.moved_key("ssim.filter_size") is None


def test_a_whole_config_runs_exactly_its_attackers():
  whole = config_lib.audit_config()
  whole.attacks = ml_collections.ConfigDict({"ridge": {"num_features": 8}, "nearest": {}})
  c = config_lib.for_images((8, 8, 1), whole, whole=True)
  assert list(c.attacks) == ["nearest", "ridge"] and c.attacks.ridge.bandwidths == (0.5, 1.0, 2.0)
  assert set(config_lib.for_images((8, 8, 1), whole).attacks) == {
    "decoder",
    "ridge",
    "nearest",
    "whitebox",
    "blend",
  }


def test_the_default_attackers_are_those_registered_default_on_in_registration_order():
  from privjax import attacks

  assert attacks.default_on() == ["decoder", "ridge", "nearest", "whitebox", "blend"]
  c = config_lib.audit_config()
  assert set(c.attacks) == set(attacks.default_on())
  for name in attacks.default_on():
    assert c.attacks[name].to_dict() == attacks.with_defaults(name, {})


def test_numpy_scalars_are_read_as_the_numbers_they_hold():
  import json

  import numpy as np

  overrides = {
    "risk": {"high_ssim_gain": np.float32(0.3)},
    "bootstrap_samples": np.int64(200),
    "attacks": {"ridge": {"num_features": np.int32(64), "penalties": (np.float64(1e-3),)}},
    "metrics": {"close": {"type": "a:b", "high": np.float32(0.5)}},  # a family's entries too
  }
  c = config_lib.for_images((8, 8, 1), ml_collections.ConfigDict(overrides))
  assert c.risk.high_ssim_gain == pytest.approx(0.3) and type(c.risk.high_ssim_gain) is float
  assert c.metrics.close.high == 0.5 and type(c.metrics.close.high) is float
  assert c.bootstrap_samples == 200 and c.attacks.ridge.num_features == 64
  json.dumps(c.to_dict())  # the report's copy of the config serialises


def test_a_whole_config_with_plugins_given_as_functions_is_named_by_their_paths():
  import json

  from tests.unit import toy_plugins

  c = ml_collections.ConfigDict(
    {
      "model": {"kind": toy_plugins.flat_model, "width": 4},
      "data": {"source": toy_plugins.stripes},
      "attacks": {"toy": {"type": toy_plugins.mean_image, "gain": 0.5}},
    }
  )
  named = config_lib.named(c)
  assert named.model.kind == "tests.unit.toy_plugins:flat_model"
  assert named.data.source == "tests.unit.toy_plugins:stripes"
  assert named.attacks.toy.to_dict() == {"type": "tests.unit.toy_plugins:mean_image", "gain": 0.5}
  assert c.model.kind is toy_plugins.flat_model  # (the given config is unchanged)
  json.dumps(named.to_dict())  # as the report stores it


def test_set_entry_adds_or_retypes_an_entry_by_its_familys_rules():
  c = config_lib.audit_config()
  settings_lib.set_entry(c, "attacks", "toy", {"type": "tests.unit.toy_plugins:mean_image", "g": 1})
  assert c.attacks.toy.to_dict() == {"type": "tests.unit.toy_plugins:mean_image", "g": 1}
  steps = c.attacks.decoder.num_steps
  settings_lib.set_entry(c, "attacks", "decoder", {"type": "decoder", "width": 8})  # same type
  assert c.attacks.decoder.width == 8 and c.attacks.decoder.num_steps == steps
  settings_lib.set_entry(c, "attacks", "decoder", {"type": "ridge"})  # a new type starts afresh
  assert c.attacks.decoder.to_dict() == config_lib.audit_config().attacks.ridge.to_dict()
  settings_lib.set_entry(c, "defense.sweep", "noise", {"type": "gaussian_noise", "strengths": (1,)})
  assert c.defense.sweep.noise.param == "sigma"
  with pytest.raises(privjax.ConfigError, match="unknown config key 'attacks.ridge.width'"):
    settings_lib.set_entry(c, "attacks", "ridge", {"width": 8})
  with pytest.raises(privjax.ConfigError, match=r"^unknown config key 'nope'; known keys"):
    settings_lib.set_entry(ml_collections.ConfigDict({"a": 1}), "nope", "x", {"type": "y"})
