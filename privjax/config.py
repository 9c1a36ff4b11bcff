"""The audit's configuration: defaults, defaults adapted to an image shape, checks.

One `ml_collections.ConfigDict` with a group per stage drives the audit; the orchestrator
hands each stage its own group. `audit_config()` holds the defaults (also the base of
configs/default.py); `for_images()` merges a user's overrides onto them and adapts the
few fields that depend on the image size (the SSIM window); `validate()` checks every
field and raises `ConfigError` with a one-line message. The value checks are
privjax/checks.py's, shared with the plug-ins; an attacker's are its own.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize

import ml_collections
import numpy as np
from absl import logging

from privjax import attacks
from privjax.checks import number, numbers, positive_int, require
from privjax.defenses import transforms as defenses
from privjax.errors import ConfigError
from privjax.registry import import_object
from privjax.scoring import scores as scoring

# The Gaussian SSIM of Wang et al. 2004 (and skimage's `gaussian_weights=True`):
# an 11x11 window with sigma 1.5, constants K1=0.01, K2=0.03.
DEFAULT_SSIM_FILTER_SIZE = 11
DEFAULT_SSIM_FILTER_SIGMA = 1.5
MIN_SSIM_SIGMA = 0.5  # pixels: a narrower Gaussian weighs almost only the centre pixel
# Floors below which the rates and the bootstrap CI mean little.
MIN_TARGETS_FLOOR = 10
MIN_BOOTSTRAP_SAMPLES = 100


def audit_config() -> ml_collections.ConfigDict:
  """Returns the default audit config: one group per stage, each commented field by field."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # Root of every random choice: init, batch order, validation split, bootstrap.
  c.overwrite = False  # Discard workdir results made with different inputs (else: error).
  # The part of the auxiliary set every attacker holds out for its own model selection
  # (early stopping, penalties, prior weights); never the targets.
  c.val_fraction = 0.1
  c.attacks = _attacks()
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
  c.metrics = ml_collections.ConfigDict()
  _risk(c)
  # The evaluator's thresholds: fixed on the original targets alone, at these false match
  # rates (the fraction of impostor pairs of originals it accepts).
  c.identity = ml_collections.ConfigDict()
  c.identity.fmrs = (0.01, 0.001)  # False match rates to report SAR at (each in (0, 0.5]).
  _defense(c)
  c.grid_examples = 8  # Pictures per row (best, median, worst) in the PNG grid.
  return c


def _attacks() -> ml_collections.ConfigDict:
  # The attackers (privjax/attacks): each entry `name: {type, settings}` runs; the
  # verdict follows the most severe. `type` is a built-in name ("decoder", "ridge",
  # "nearest", "whitebox", "blend"), a user's "package.module:function", or "off" to skip it.
  # Entries take their type's defaults for the fields they leave out; each built-in's
  # settings and their meaning are its module's DEFAULTS (--print_config shows them).
  return ml_collections.ConfigDict(
    {
      name: attacks.with_defaults(name, {})
      for name in ("decoder", "ridge", "nearest", "whitebox", "blend")
    }
  )


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
  c.defense.sweep = ml_collections.ConfigDict()  # name -> {type, strengths[, param]}; empty: off.
  # Which of config.attacks attack every sweep point (each point re-fits them); empty:
  # every running attacker that can attack defended features (not the whitebox one).
  c.defense.attacks = ()
  c.defense.utility = ""  # Extra utility "package.module:function" (docs/method.md); "" for none.


def ssim_window(height: int, width: int, filter_size: int, filter_sigma: float):
  """Returns the SSIM (filter_size, filter_sigma) to use for images of this size.

  Images smaller than the configured window get the largest odd window that fits,
  with sigma scaled by the same factor (so the window still spans the same number of
  standard deviations); the report states the window used. A window that would need
  sigma below MIN_SSIM_SIGMA pixels to fit is refused: it would weigh almost only the
  centre pixel, and SSIM would degenerate into a per-pixel comparison.
  """
  smallest = min(height, width)
  if filter_size <= smallest:
    return filter_size, filter_sigma
  size = smallest if smallest % 2 == 1 else smallest - 1
  if size < 3:
    raise ConfigError(f"images must be at least 3x3 pixels for SSIM, got {height}x{width}")
  sigma = filter_sigma * size / filter_size
  if sigma < MIN_SSIM_SIGMA:
    raise ConfigError(
      f"config.ssim.filter_size={filter_size} (sigma {filter_sigma}) does not fit "
      f"{height}x{width} images: shrunk to {size} pixels its sigma would be {sigma:.3g} < "
      f"{MIN_SSIM_SIGMA} pixel; set ssim.filter_size <= {size} and ssim.filter_sigma yourself"
    )
  return size, sigma


def _merge(base: dict, overrides: dict, prefix: str = "") -> dict:
  for key, value in overrides.items():
    if prefix == "" and key == "attacks":  # merged attacker by attacker
      if not isinstance(value, dict) or not value:
        raise ConfigError(f"config.attacks must be a non-empty group of attackers, got {value!r}")
      for name, entry in value.items():
        base[key][name] = _merge_attacker(name, base[key].get(name), entry)
      continue
    if prefix == "" and key == "metrics":  # the metrics' entries replace the default
      if not isinstance(value, dict):
        raise ConfigError(f"config.metrics must be a group of metrics, got {value!r}")
      base[key] = {name: metric_entry(name, entry) for name, entry in value.items()}
      continue
    if prefix == "defense." and key == "sweep":  # the sweep's entries replace the default
      if not isinstance(value, dict):
        raise ConfigError(f"config.defense.sweep must be a group of defenses, got {value!r}")
      base[key] = {name: sweep_entry(name, entry) for name, entry in value.items()}
      continue
    if key not in base:
      raise ConfigError(f"unknown config key '{prefix}{key}'; known keys: {sorted(base)}")
    if isinstance(base[key], dict):
      if not isinstance(value, dict):
        raise ConfigError(f"config.{prefix}{key} must be a group of settings, got {value!r}")
      _merge(base[key], value, f"{prefix}{key}.")
    else:
      base[key] = _plain(value)
  return base


def _plain(value):
  """A numpy scalar (np.float32(0.3), np.int64(5)) as the Python number it holds; tuples and
  lists element by element; anything else as is (the checks judge it)."""
  if isinstance(value, np.generic) and value.dtype.kind in "biuf":
    return value.item()
  if isinstance(value, (list, tuple)):
    return type(value)(_plain(v) for v in value)
  return value


def _merge_attacker(name: str, current: dict | None, entry) -> dict:
  """`config.attacks.<name>` after `entry`: naming an attacker changes its fields (a new
  type starts from that type's defaults), type "off" removes it, a new name adds one."""
  if not isinstance(entry, dict):
    raise ConfigError(f"config.attacks.{name} must be a group of settings, got {entry!r}")
  entry = {k: _plain(v) for k, v in entry.items()}
  if current is not None and entry.get("type", current["type"]) == current["type"]:
    entry = {**current, **entry}
  return attacks.with_defaults(name, entry)


# Keys an earlier layout had, and where they live now (the decoder's settings moved under
# its attacker entry): still read, with one warning line naming each new key.
MOVED_KEYS = {"decoder": "attacks.decoder", "train": "attacks.decoder"}
MOVED_TOP = {"train.val_fraction": "val_fraction"}


def moved_key(old: str) -> str | None:
  """The new dotted name of an old config key ("train.num_steps"), or None if not moved."""
  if old in MOVED_TOP:
    return MOVED_TOP[old]
  group, _, field = old.partition(".")
  return f"{MOVED_KEYS[group]}.{field}" if group in MOVED_KEYS and field else None


def _migrated(overrides: dict) -> dict:
  """`overrides` with the old layout's keys moved to their new place (one warning line)."""
  moved, out = [], {k: v for k, v in overrides.items() if k not in MOVED_KEYS}
  for group in MOVED_KEYS:
    if not isinstance(overrides.get(group), dict):
      continue
    for field, value in overrides[group].items():
      new = moved_key(f"{group}.{field}")
      node = out
      *parents, leaf = new.split(".")
      for part in parents:
        node = node.setdefault(part, {})
      node.setdefault(leaf, value)  # the new key, where also given, wins
      moved.append(f"{group}.{field} -> {new}")
  if moved:
    logging.warning("deprecated config keys, read at their new place: %s", ", ".join(moved))
  return out


METRIC_ENTRY_KEYS = ("type", "high", "medium")


def metric_entry(name: str, entry) -> dict:
  """`config.metrics.<name>` completed: type defaults to the name, thresholds to 0 (off)."""
  if not isinstance(entry, dict):
    raise ConfigError(f"config.metrics.{name} must be a group of settings, got {entry!r}")
  unknown = sorted(set(entry) - set(METRIC_ENTRY_KEYS))
  if unknown:
    raise ConfigError(
      f"unknown config key 'metrics.{name}.{unknown[0]}'; known keys: {list(METRIC_ENTRY_KEYS)}"
    )
  return {
    "type": entry.get("type", name),
    "high": entry.get("high", 0.0),
    "medium": entry.get("medium", 0.0),
  }


SWEEP_ENTRY_KEYS = ("type", "strengths", "param")


def sweep_entry(name: str, entry) -> dict:
  """`config.defense.sweep.<name>` completed: type defaults to the name, param to the
  defense's own strength keyword (a user defense's: "strength")."""
  if not isinstance(entry, dict):
    raise ConfigError(f"config.defense.sweep.{name} must be a group of settings, got {entry!r}")
  unknown = sorted(set(entry) - set(SWEEP_ENTRY_KEYS))
  if unknown:
    raise ConfigError(
      f"unknown config key 'defense.sweep.{name}.{unknown[0]}'; known keys: "
      f"{list(SWEEP_ENTRY_KEYS)}"
    )
  kind = entry.get("type", name)
  param = entry.get("param") or ""
  if isinstance(kind, str) and kind in defenses.builtin_names():
    param = defenses.get(kind).param
  return {"type": kind, "strengths": entry.get("strengths", ()), "param": param or "strength"}


def sweep_attackers(c: ml_collections.ConfigDict) -> list[str]:
  """The attackers of the defense sweep: config.defense.attacks, or when empty every
  running attacker of config.attacks that can attack defended features (not the whitebox
  type: it differentiates through the model, which a defended feature no longer has)."""
  if len(c.defense.attacks):
    return list(c.defense.attacks)
  return [
    n
    for n in c.attacks
    if c.attacks[n].type != attacks.OFF and attacks.capabilities(c.attacks[n].type).models_defense
  ]


def check_sweep(c: ml_collections.ConfigDict, dim: int | None = None) -> None:
  """Checks config.defense (dim: the feature width once known, for its bounds)."""
  d = c.defense
  for name in d.sweep:
    e = d.sweep[name]
    require(
      isinstance(e.type, str) and e.type != "",
      f"config.defense.sweep.{name}.type must be a non-empty string, got {e.type!r}",
    )
    defense = defenses.get(e.type, e.param, field=f"defense.sweep.{name}.type")
    require(
      isinstance(e.strengths, (list, tuple)) and len(e.strengths) > 0,
      f"config.defense.sweep.{name}.strengths must be a non-empty list "
      f"({defense.about}), got {e.strengths!r}",
    )
    for i, s in enumerate(e.strengths):
      defenses.check_strength(name, defense, i, s, dim)
    require(
      len(set(e.strengths)) == len(e.strengths),
      f"config.defense.sweep.{name}.strengths must not repeat a value, got {tuple(e.strengths)}",
    )
  require(
    isinstance(d.attacks, (list, tuple)),
    f"config.defense.attacks must be a list of names in config.attacks, got {d.attacks!r}",
  )
  require(
    not len(d.sweep) or sweep_attackers(c),
    "config.defense.attacks: no attacker to run at the sweep's points (the whitebox "
    "attacker does not model a defense); name one of config.attacks",
  )
  for name in d.attacks:
    require(
      name in c.attacks and c.attacks[name].type != attacks.OFF,
      f"config.defense.attacks: {name!r} is not a running attacker of config.attacks "
      f"{[n for n in c.attacks if c.attacks[n].type != attacks.OFF]}",
    )
  require(isinstance(d.utility, str), f"config.defense.utility must be a string, got {d.utility!r}")
  if d.utility:
    import_object(d.utility, field="defense.utility")


def for_images(image_shape, config=None, *, whole: bool = False):
  """Returns the defaults, overridden by `config`'s fields, fitted to an image shape.

  `config` may set any subset of `audit_config()`'s fields; unknown fields are a
  ConfigError. Its attackers merge one by one into the default set; with `whole=True`
  (a whole config, as a config file builds from audit_config()) its `attacks` are the
  set that runs, each completed with its type's defaults. The SSIM window is shrunk
  for images smaller than it.
  """
  merged = audit_config().to_dict()
  if config is not None:
    overrides = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    if whole and isinstance(overrides.get("attacks"), dict):
      merged["attacks"] = {}
    _merge(merged, _migrated(overrides))
  c = ml_collections.ConfigDict(merged)
  h, w = int(image_shape[0]), int(image_shape[1])
  c.ssim.filter_size, c.ssim.filter_sigma = ssim_window(
    h, w, int(c.ssim.filter_size), float(c.ssim.filter_sigma)
  )
  return c


def scoring_settings(c: ml_collections.ConfigDict) -> scoring.Settings:
  """The scoring stage's settings from a resolved config (its ssim, reid, metrics groups,
  the bootstrap, the seed and the evaluation batch)."""
  return scoring.Settings(
    filter_size=c.ssim.filter_size,
    filter_sigma=c.ssim.filter_sigma,
    batch_size=c.eval_batch_size,
    bootstrap_samples=c.bootstrap_samples,
    seed=c.seed,
    exact_max_targets=c.reid.exact_max_targets,
    shortlist=c.reid.shortlist,
    baseline_samples=c.reid.baseline_samples,
    metrics=tuple((name, c.metrics[name].type) for name in c.metrics),
  )


def resolve(image_shape, config=None, *, feature_dim: int | None = None, whole: bool = False):
  """The audit's config, once: `for_images`, then `validate` (feature_dim: the features'
  width when known before any work, bounding the sweep's strengths), then each metric
  traced on the image shape (scoring.check_metrics)."""
  c = for_images(image_shape, config, whole=whole)
  validate(c, feature_dim=feature_dim)
  scoring.check_metrics(scoring_settings(c).metrics, image_shape)
  return c


def validate(c: ml_collections.ConfigDict, *, feature_dim: int | None = None) -> None:
  """Checks every field the audit reads; raises ConfigError naming the first bad one.

  Each group has its checks (an attacker's are its type's own, registered with it);
  `feature_dim`, when known, bounds the defense sweep's strengths.
  """
  _check_general(c)
  _check_attacks(c)
  _check_scoring(c)
  _check_metrics(c)
  _check_risk(c)
  check_sweep(c, dim=feature_dim)


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


def _check_attacks(c) -> None:
  require(
    isinstance(c.attacks, ml_collections.ConfigDict) and len(c.attacks) > 0,
    f"config.attacks must be a non-empty group of attackers, got {c.attacks!r}",
  )
  fractions = c.attack_strength.aux_fractions
  require(
    isinstance(fractions, (list, tuple)),
    f"config.attack_strength.aux_fractions must be a list of numbers, got {fractions!r}",
  )
  for i, f in enumerate(fractions):
    number(f"attack_strength.aux_fractions[{i}]", f, 1e-9, 1.0)
  names = list(c.attacks)
  require(
    not {"recognition", "evaluator"} & set(names),
    "config.attacks: 'recognition' and 'evaluator' name the builtin models' workdir stages; "
    f"give the attacker another name, got {names}",
  )
  running = [n for n in names if c.attacks[n].type != attacks.OFF]
  for name in names:  # each type's own checks (whitebox's init: another running attacker)
    attacks.check(name, c.attacks[name], running)
  require(
    any(c.attacks[n].type != attacks.OFF for n in names),
    "config.attacks: every attacker is 'off'; at least one must run",
  )


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


def _check_metrics(c) -> None:
  for name in c.metrics:
    m = c.metrics[name]
    scoring.METRICS.get(m.type, field=f"metrics.{name}.type")
    number(f"metrics.{name}.high", m.high, 0.0)
    number(f"metrics.{name}.medium", m.medium, 0.0)
    require(
      not (m.high and m.medium) or m.medium <= m.high,
      f"config.metrics.{name}.medium {m.medium} must not exceed its high {m.high}",
    )


def _check_risk(c) -> None:
  risk_rates = ("ssim_gain", "image_reid", "identity_sar")
  for name in (f"{level}_{r}" for level in ("high", "medium") for r in risk_rates):
    number(f"risk.{name}", c.risk[name], 0.0, 1.0)
  number("risk.medium_reid_over_chance", c.risk.medium_reid_over_chance, 1.0)
  require(
    c.risk.medium_ssim_gain <= c.risk.high_ssim_gain
    and c.risk.medium_image_reid <= c.risk.high_image_reid,
    "config.risk medium thresholds must not exceed the high ones, got "
    f"ssim_gain {c.risk.medium_ssim_gain} > {c.risk.high_ssim_gain} or image_reid "
    f"{c.risk.medium_image_reid} > {c.risk.high_image_reid}",
  )
  require(
    c.risk.medium_identity_sar <= c.risk.high_identity_sar,
    f"config.risk.medium_identity_sar {c.risk.medium_identity_sar} must not exceed "
    f"high_identity_sar {c.risk.high_identity_sar}",
  )
  numbers("identity.fmrs", c.identity.fmrs, 0.0, 0.5)
  require(
    all(f > 0 for f in c.identity.fmrs),
    f"config.identity.fmrs must be false match rates in (0, 0.5], got {c.identity.fmrs!r}",
  )
  require(
    any(c.risk.identity_fmr == f for f in c.identity.fmrs),
    f"config.risk.identity_fmr must be one of config.identity.fmrs {tuple(c.identity.fmrs)}, "
    f"got {c.risk.identity_fmr!r}",
  )


def _comments_in(path: str) -> tuple[dict, dict]:
  """({dotted field: comment on its line}, {dotted field: comment block just above it}) of
  a config source's assignments `c.a.b = ...` and `"key": value` entries of a DEFAULTS
  dict (as "*.key")."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  lines = text.splitlines()
  trailing = {}
  for tok in tokenize.generate_tokens(io.StringIO(text).readline):
    if tok.type == tokenize.COMMENT and lines[tok.start[0] - 1][: tok.start[1]].strip():
      trailing[tok.start[0]] = tok.string.lstrip("#").strip()

  def above(line):
    block, i = [], line - 2
    while i >= 0 and lines[i].strip().startswith("#"):
      block.insert(0, lines[i].strip().lstrip("#").strip())
      i -= 1
    return " ".join(block)

  def on_line(node):
    lines_of = range(node.lineno, node.end_lineno + 1)
    return next((trailing[line] for line in lines_of if line in trailing), "")

  def dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
      parts.insert(0, node.attr)
      node = node.value
    return ".".join(parts) if isinstance(node, ast.Name) and parts else None

  same, before = {}, {}

  def note(name, node):
    if on_line(node):
      same.setdefault(name, on_line(node))
    if above(node.lineno):
      before.setdefault(name, above(node.lineno))

  for node in ast.walk(ast.parse(text)):
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
      target = node.targets[0]
      if dotted(target):
        note(dotted(target), node)
      if (
        isinstance(target, ast.Name)
        and target.id == "DEFAULTS"
        and isinstance(node.value, ast.Dict)
      ):
        for key in node.value.keys:
          if isinstance(key, ast.Constant):
            note(f"*.{key.value}", key)
  return same, before


_SWEEP_COMMENTS = {
  "type": f"the defense: one of {defenses.builtin_names()} or 'package.module:function'",
  "strengths": "the values of its strength parameter to sweep",
  "param": "the keyword its strengths go to (the built-ins' own: sigma, bits, k)",
}


def describe(config: ml_collections.ConfigDict, sources=()) -> str:
  """Every field of `config`, its value and its comment from the config sources.

  `sources` are the config files that built it (the most specific first); the comments of
  privjax's own defaults (this module) and of each attacker type's DEFAULTS follow.
  """
  # A comment on a field's own line wins (the most specific source first); else the
  # block above its definition here, where each field's meaning is, then in the sources.
  parsed = {path: _comments_in(path) for path in [*sources, __file__]}
  comments = {}
  for pick, order in ((0, [*sources, __file__]), (1, [__file__, *sources])):
    for path in order:
      for key, text in parsed[path][pick].items():
        comments.setdefault(key, text)
  attack_comments = {}
  for kind in attacks.builtin_names():
    same, before = _comments_in(sys.modules[attacks.get(kind).__module__].__file__)
    attack_comments[kind] = {k[2:]: v for k, v in {**before, **same}.items() if k[:2] == "*."}
  flat = []

  def walk(node, prefix):
    for key in node:
      value, path = node[key], f"{prefix}{key}"
      if isinstance(value, (ml_collections.ConfigDict, dict)) and len(value):
        walk(value, f"{path}.")
      else:
        flat.append((path, value))

  walk(config, "")
  out = []
  for path, value in flat:
    text = comments.get(path)
    parts = path.split(".")
    if text is None and parts[0] == "attacks" and len(parts) == 3:
      kind = config.attacks[parts[1]].get("type", parts[1])
      text = attack_comments.get(kind, {}).get(parts[2])
      if parts[2] == "type":
        text = "the attacker: a built-in name, 'package.module:function', or 'off'"
    if text is None and parts[:2] == ["defense", "sweep"] and len(parts) == 4:
      text = _SWEEP_COMMENTS.get(parts[3])
    shown = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
    out.append(f"{path} = {shown!r}" + (f"  # {text}" if text else ""))
  return "\n".join(out)
