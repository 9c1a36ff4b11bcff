"""privjax/runtime/keys.py: a stage key changes with anything that can change a number, and only
with that."""

import dataclasses

import ml_collections
import numpy as np
import pytest

from privjax.runtime import keys


@dataclasses.dataclass(frozen=True)
class _Settings:
  NOT_NUMBERS = frozenset({"workdir"})

  seed: int
  window: float
  table: dict
  weights: np.ndarray
  fn: object
  workdir: str


def _one(x):
  return x + 1


def _two(x):
  return x + 2


BASE = _Settings(0, 1.5, {"a": (1, 2)}, np.arange(3.0), _one, "/tmp/a")


@pytest.mark.parametrize(
  "change",
  [
    {"seed": 1},
    {"window": 1.5000001},
    {"table": {"a": (1, 3)}},
    {"weights": np.arange(3.0) + 1e-9},
    {"weights": np.arange(3.0).astype(np.float32)},
    {"fn": _two},
  ],
)
def test_every_field_that_holds_a_number_changes_the_key(change):
  assert keys.of(BASE) != keys.of(dataclasses.replace(BASE, **change))


def test_fields_declared_not_numbers_leave_the_key_alone():
  assert keys.of(BASE) == keys.of(dataclasses.replace(BASE, workdir="/elsewhere"))


def test_a_field_added_later_is_in_the_key_without_a_list_to_update():
  @dataclasses.dataclass(frozen=True)
  class Grown(_Settings):
    bootstrap_samples: int = 100

  grown = Grown(**{f.name: getattr(BASE, f.name) for f in dataclasses.fields(BASE)})
  assert keys.of(grown) != keys.of(dataclasses.replace(grown, bootstrap_samples=101))


def test_config_dicts_and_fingerprint_methods():
  class Model:
    def __init__(self, key):
      self.key = key

    def fingerprint(self):
      return self.key

  cfg = ml_collections.ConfigDict({"risk": {"high": 0.3}})
  other = ml_collections.ConfigDict({"risk": {"high": 0.31}})
  assert keys.of(cfg) == keys.of({"risk": {"high": 0.3}}) != keys.of(other)
  assert keys.of(Model("a")) == keys.of(Model("a")) != keys.of(Model("b"))
  assert keys.of(1) != keys.of(1.0) and keys.of(True) != keys.of(1)


def test_what_cannot_be_fingerprinted_is_refused_not_guessed():
  with pytest.raises(TypeError, match="cannot fingerprint a object"):
    keys.of(object())
