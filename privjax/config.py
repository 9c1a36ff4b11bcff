"""The audit's configuration: defaults, defaults adapted to an image shape, checks.

One `ml_collections.ConfigDict` with a group per stage drives the audit; the orchestrator
hands each stage its own group. `audit_config()` holds the defaults (also the base of
configs/default.py); `for_images()` merges a user's overrides onto them and adapts the
few fields that depend on the image size (the SSIM window); `validate()` checks every
field and raises `ConfigError` with a one-line message. The value checks are
privjax/checks.py's, shared with the plug-ins. A plug-in family's group (its entries:
the attackers, the metrics, the defense sweep's) is built, merged and checked by the
family's own rules, through `settings.FAMILIES`: this module knows none of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
import numpy as np

from privjax.checks import number, positive_int, require
from privjax.errors import ConfigError
from privjax.registry import path_of
from privjax.scoring import risk
from privjax.scoring.metrics import DEFAULT_SSIM_FILTER_SIGMA, DEFAULT_SSIM_FILTER_SIZE, ssim_window
from privjax.settings import FAMILIES
from privjax.stages import inputs

__all__ = [
  "MIN_BOOTSTRAP_SAMPLES",
  "MIN_TARGETS_FLOOR",
  "audit_config",
  "for_images",
  "named",
  "resolve",
  "validate",
]

# Floors below which the rates and the bootstrap CI mean little.
MIN_BOOTSTRAP_SAMPLES = 100
MIN_TARGETS_FLOOR = inputs.MIN_TARGETS_FLOOR


def audit_config() -> ml_collections.ConfigDict:
  """Returns the default audit config: one group per stage, each commented field by field."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # Root of every random choice: init, batch order, validation split, bootstrap.
  c.overwrite = False  # Discard workdir results made with different inputs (else: error).
  # The part of the auxiliary set every attacker holds out for its own model selection
  # (early stopping, penalties, prior weights); never the targets.
  c.val_fraction = 0.1
  # The attackers (privjax/attacks): each entry `name: {type, settings}` runs; the
  # verdict follows the most severe. `type` is a registered name (the defaults: those
  # registered `default_on`), a user's "package.module:function", or "off" to skip it.
  # Entries take their type's defaults for the fields they leave out; each built-in's
  # settings and their meaning are its module's DEFAULTS (--print_config shows them).
  c.attacks = _entries("attacks")
  # For release gates: once the verdict is high (a level only rises), skip the attackers
  # not run yet (the cheap ones run first); the report lists them as not run. Off: every
  # attacker runs, so the report has each one's numbers.
  c.fast_verdict = False
  # Attacker strength against its data: re-run every attacker on nested random parts
  # of the auxiliary set (fractions in (0, 1]; empty: off) and report leakage per part.
  c.attack_strength = ml_collections.ConfigDict()
  c.attack_strength.aux_fractions = ()  # Parts to re-run on, e.g. (0.1, 0.25, 0.5, 1.0).
  c.eval_batch_size = 256  # Batch for extraction, reconstruction and scoring.
  # How far (relative to the largest |feature|) the model's and evaluator's features of the
  # same images may differ across batch shapes and order before they are refused as impure;
  # 0: by the narrowest float the model computes in (float32 1e-4, bfloat16 0.0078).
  c.purity_tolerance = 0.0
  _scoring(c)
  # Extra per-target metrics: name -> {type, high, medium}; `type` a registered metric or
  # "package.module:function" `fn(originals, reconstructions) -> [B]` (higher: more
  # leakage). Each is shown beside its no-information baseline and votes by its gain's CI
  # lower bound (0: that level off); see docs/method.md.
  c.metrics = _entries("metrics")
  _risk(c)
  # The evaluator's thresholds: fixed on the original targets alone, at these false match
  # rates (the fraction of impostor pairs of originals it accepts).
  c.identity = ml_collections.ConfigDict()
  c.identity.fmrs = (0.01, 0.001)  # False match rates to report SAR at (each in (0, 0.5]).
  _defense(c)
  c.grid_examples = 8  # Pictures per row (best, median, worst) in the PNG grid.
  return c


def _entries(path: str) -> ml_collections.ConfigDict:
  """A plug-in family's group at `path`, holding its default entries."""
  return ml_collections.ConfigDict(FAMILIES[path].defaults())


def _scoring(c) -> None:
  c.ssim = ml_collections.ConfigDict()
  c.ssim.filter_size = DEFAULT_SSIM_FILTER_SIZE  # Odd; shrunk for images smaller than it.
  c.ssim.filter_sigma = DEFAULT_SSIM_FILTER_SIGMA
  # Image-space re-identification: exact all pairs up to exact_max_targets targets;
  # above, a shortlist of the `shortlist` nearest originals by pixel distance (one
  # matrix product) re-ranked by exact SSIM, and the baseline estimated from
  # `baseline_samples` random mismatched pairs per target.
  c.reid = ml_collections.ConfigDict()
  c.reid.exact_max_targets = 2000  # All pairs up to this many targets; a shortlist above.
  c.reid.shortlist = 32  # Nearest originals by pixel distance re-ranked by exact SSIM.
  c.reid.baseline_samples = 64  # Random mismatched pairs per target for the baseline (above).
  c.bootstrap_samples = 2000  # Resamples for the 95% confidence interval of the gain.
  c.min_targets = 10  # Fewer targets make the rates and intervals meaningless.


def _risk(c) -> None:
  # Verdict thresholds (see privjax/scoring/risk.py and docs/method.md).
  c.risk = ml_collections.ConfigDict()
  c.risk.high_ssim_gain = 0.3  # High if the gain's CI lower bound reaches this ...
  c.risk.high_image_reid = 0.5  # ... or image-space rank-1 re-identification reaches this.
  c.risk.medium_ssim_gain = 0.05  # Medium if the gain's CI lower bound reaches this ...
  c.risk.medium_image_reid = 0.05  # ... or image re-id reaches this and
  c.risk.medium_reid_over_chance = 5.0  # ... is at least this many times chance.
  # Identity leakage, when an independent evaluator is configured (privjax/scoring/identity.py):
  # high/medium if the type-II success rate at FMR identity_fmr reaches these (and is at
  # least medium_reid_over_chance x its chance level).
  c.risk.identity_fmr = 0.01  # One of identity.fmrs.
  c.risk.high_identity_sar = 0.5  # High if type-II SAR at identity_fmr reaches this ...
  c.risk.medium_identity_sar = 0.1  # ... medium if it reaches this (each >= 5x its chance).


def _defense(c) -> None:
  # Defenses (privjax/defenses/transforms.py): a sweep of feature-level defenses over strengths. At
  # each point the attackers below are re-fitted on DEFENDED auxiliary features (adaptive:
  # they know the defense) and, for contrast, the attackers fitted on undefended features
  # attack the defended targets (non-adaptive); the point's verdict is the adaptive one
  # (the non-adaptive one where it leaks more). Each entry `name: {type, strengths}`;
  # empty: no sweep (configs/defense_sweep.py runs one). Output: sweep.json and
  # privacy_utility.png beside the report.
  c.defense = ml_collections.ConfigDict()
  c.defense.sweep = _entries("defense.sweep")  # name -> {type, strengths[, param]}; empty: off.
  # Which of config.attacks attack every sweep point (each point re-fits them); empty:
  # every running attacker that can attack defended features (not the whitebox one).
  c.defense.attacks = ()
  c.defense.utility = ""  # Extra utility "package.module:function" (docs/method.md); "" for none.


def _merge(base: dict, overrides: dict, prefix: str = "", whole: bool = False) -> dict:
  for key, value in overrides.items():
    family = FAMILIES.get(f"{prefix}{key}")
    if family is not None:  # a plug-in family's entries, merged by its rules (`whole`: as given)
      base[key] = family.merge({} if whole else base[key], value)
      continue
    if key not in base:
      raise ConfigError(f"unknown config key '{prefix}{key}'; known keys: {sorted(base)}")
    if isinstance(base[key], dict):
      if not isinstance(value, dict):
        raise ConfigError(f"config.{prefix}{key} must be a group of settings, got {value!r}")
      _merge(base[key], value, f"{prefix}{key}.", whole)
    else:
      base[key] = value
  return base


def _plain(value, field: str = ""):
  """A numpy scalar (np.float32(0.3), np.int64(5)) as the Python number it holds; a
  plug-in given as the function or class itself as its import path (`registry.path_of`);
  dicts, tuples and lists element by element; anything else as is (the checks judge it).
  `field`: the dotted name of `value`, for errors."""
  if isinstance(value, np.generic) and value.dtype.kind in "biuf":
    return value.item()
  if isinstance(value, dict):
    return {k: _plain(v, f"{field}.{k}" if field else str(k)) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return type(value)(_plain(v, f"{field}[{i}]") for i, v in enumerate(value))
  if callable(value):
    return path_of(value, field=field)
  return value


def named(config) -> ml_collections.ConfigDict:
  """`config` (a ConfigDict or dict) with every plug-in given as the function or class
  itself (`config.attacks.mlp.type = mlp`, `config.model.kind = my_model`) replaced by its
  import path ("package.module:mlp", `registry.path_of`), so the config prints, hashes
  and is stored in the report as text, and names the same function; numpy scalars as
  Python numbers. A new ConfigDict; `config` is unchanged."""
  tree = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return ml_collections.ConfigDict(_plain(tree))


def for_images(
  image_shape: Sequence[int], config=None, *, whole: bool = False
) -> ml_collections.ConfigDict:
  """Returns the defaults, overridden by `config`'s fields, fitted to an image shape.

  `config` may set any subset of `audit_config()`'s fields; unknown fields are a
  ConfigError. A plug-in family's entries merge by the family's rules (the attackers one
  by one into the default set); with `whole=True` (a whole config, as a config file builds
  from audit_config()) the entries it gives are the group's (its `attacks` the set that
  runs). The SSIM window is shrunk for images smaller than it.
  """
  merged = audit_config().to_dict()
  if config is not None:
    overrides = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    for family in FAMILIES.values():  # an earlier layout's keys, read at their new place
      overrides = family.migrated(overrides)
    _merge(merged, _plain(overrides), whole=whole)
  c = ml_collections.ConfigDict(merged)
  h, w = int(image_shape[0]), int(image_shape[1])
  c.ssim.filter_size, c.ssim.filter_sigma = ssim_window(
    h, w, int(c.ssim.filter_size), float(c.ssim.filter_sigma)
  )
  return c


def resolve(
  image_shape: Sequence[int],
  config=None,
  *,
  feature_dim: int | None = None,
  whole: bool = False,
) -> ml_collections.ConfigDict:
  """The audit's config, once: `for_images`, then `validate` with the image shape and
  `feature_dim` (the features' width when known before any work, else None)."""
  c = for_images(image_shape, config, whole=whole)
  validate(c, feature_dim=feature_dim, image_shape=image_shape)
  return c


def validate(
  c: ml_collections.ConfigDict, *, feature_dim: int | None = None, image_shape=None
) -> None:
  """Checks every field the audit reads; raises ConfigError naming the first bad one.

  Each group has its checks; a plug-in family's are the family's own (an attacker's its
  type's, registered with it). `feature_dim`, when known, bounds the defense sweep's
  strengths; `image_shape`, when given, is the shape each metric is traced on.
  """
  _check_general(c)
  _check_scoring(c)
  risk.check(c.risk, c.identity.fmrs)
  for family in FAMILIES.values():
    family.check(c, feature_dim, image_shape)


def _check_general(c) -> None:
  number("val_fraction", c.val_fraction, 0.0, 0.5)
  require(c.val_fraction > 0, f"config.val_fraction must be in (0, 0.5], got {c.val_fraction}")
  positive_int("eval_batch_size", c.eval_batch_size)
  number("purity_tolerance", c.purity_tolerance, 0.0, 0.5)
  positive_int("grid_examples", c.grid_examples)
  require(
    isinstance(c.seed, int) and not isinstance(c.seed, bool) and 0 <= c.seed < 2**32,
    f"config.seed must be an integer in [0, 2**32), got {c.seed!r}",
  )
  require(isinstance(c.overwrite, bool), f"config.overwrite must be a bool, got {c.overwrite!r}")
  require(
    isinstance(c.fast_verdict, bool), f"config.fast_verdict must be a bool, got {c.fast_verdict!r}"
  )
  fractions = c.attack_strength.aux_fractions
  require(
    isinstance(fractions, (list, tuple)),
    f"config.attack_strength.aux_fractions must be a list of numbers, got {fractions!r}",
  )
  for i, f in enumerate(fractions):
    number(f"attack_strength.aux_fractions[{i}]", f, 1e-9, 1.0)


def _check_scoring(c) -> None:
  positive_int("ssim.filter_size", c.ssim.filter_size)
  require(
    c.ssim.filter_size % 2 == 1,
    f"config.ssim.filter_size must be odd, got {c.ssim.filter_size}",
  )
  number("ssim.filter_sigma", c.ssim.filter_sigma, 0.0)
  require(
    c.ssim.filter_sigma > 0, f"config.ssim.filter_sigma must be > 0, got {c.ssim.filter_sigma}"
  )
  positive_int("bootstrap_samples", c.bootstrap_samples)
  require(
    c.bootstrap_samples >= MIN_BOOTSTRAP_SAMPLES,
    f"config.bootstrap_samples must be at least {MIN_BOOTSTRAP_SAMPLES} for a meaningful 95% "
    f"interval, got {c.bootstrap_samples}",
  )
  for name in ("exact_max_targets", "shortlist", "baseline_samples"):
    positive_int(f"reid.{name}", c.reid[name])
  positive_int("min_targets", c.min_targets)
  require(
    c.min_targets >= MIN_TARGETS_FLOOR,
    f"config.min_targets must be at least {MIN_TARGETS_FLOOR} (fewer targets make the rates "
    f"and intervals meaningless), got {c.min_targets}",
  )
