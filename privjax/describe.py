"""--print_config: every field of a config, its value and what it means.

A field's meaning is the comment its definition carries: in the config files that built
it, in privjax/config.py's defaults, in each attacker type's DEFAULTS (a user's module's
too, for the attacker it declares with `privjax.attacks.register`), and the defense
sweep's entries' (privjax/defenses/entries.py).
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize

import ml_collections

from privjax import attacks
from privjax import config as config_lib
from privjax.attacks import base as attack_base
from privjax.defenses import entries as sweep_entries
from privjax.defenses import transforms as defense_transforms
from privjax.errors import ConfigError

__all__ = ["ATTACK_TYPE", "comments_in", "describe", "trailing_comments"]

# What an attacker entry's `type` means, as --print_config says it.
ATTACK_TYPE = "the attacker: a built-in name, 'package.module:function', or 'off'"


def trailing_comments(text: str) -> dict[int, str]:
  """{line number: its comment} of the comments that follow code on their line in `text`."""
  lines = text.splitlines()
  found = {}
  for tok in tokenize.generate_tokens(io.StringIO(text).readline):
    if tok.type == tokenize.COMMENT and lines[tok.start[0] - 1][: tok.start[1]].strip():
      found.setdefault(tok.start[0], tok.string.lstrip("#").strip())
  return found


def comments_in(path: str) -> tuple[dict, dict]:
  """({dotted field: comment on its line}, {dotted field: comment block just above it}) of
  a config source's assignments `c.a.b = ...` and `"key": value` entries of a DEFAULTS
  dict (as "*.key")."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  lines = text.splitlines()
  trailing = trailing_comments(text)

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


def describe(config: ml_collections.ConfigDict, sources=()) -> str:
  """Every field of `config`, its value and its comment from the config sources.

  `sources` are the config files that built it (the most specific first); the comments of
  privjax's own defaults (privjax/config.py) and of each attacker type's DEFAULTS follow.
  """
  # A comment on a field's own line wins (the most specific source first); else the
  # block above its definition in the defaults, where each field's meaning is, then in
  # the sources.
  defaults = config_lib.__file__
  parsed = {path: comments_in(path) for path in [*sources, defaults]}
  comments = {}
  for pick, order in ((0, [*sources, defaults]), (1, [defaults, *sources])):
    for path in order:
      for key, text in parsed[path][pick].items():
        comments.setdefault(key, text)
  attack_comments = {}
  kinds = [*attacks.builtin_names(), *_declared_kinds(config)]
  for kind in kinds:
    path = getattr(sys.modules.get(attacks.get(kind).__module__), "__file__", None)
    if path:
      same, before = comments_in(path)
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
        text = ATTACK_TYPE
    if text is None and parts[:2] == ["defense", "sweep"] and len(parts) == 4:
      text = sweep_entries.ABOUT.get(parts[3]) or _defense_comment(config, parts[2], parts[3])
    shown = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
    out.append(f"{path} = {shown!r}" + (f"  # {text}" if text else ""))
  return "\n".join(out)


def _defense_comment(config, name: str, key: str) -> str | None:
  """The comment on `key` in the DEFAULTS of the learning defense config.defense.sweep.`name`
  names (privjax/defenses/learned.py's for `learned`), or None."""
  kind = config.defense.sweep[name].get("type", name)
  try:
    fn = defense_transforms.get(kind).fn
  except ConfigError:
    return None
  path = getattr(sys.modules.get(fn.__module__), "__file__", None)
  return comments_in(path)[0].get(f"*.{key}") if path else None


def _declared_kinds(config) -> list[str]:
  """The types of config.attacks' entries that a user's module declared by import path
  (its DEFAULTS' comments describe its settings, as a built-in's do)."""
  group = config.get("attacks") or {}
  kinds = {
    group[n].get("type", n) for n in group if isinstance(group[n], ml_collections.ConfigDict)
  }
  return sorted(k for k in kinds if isinstance(k, str) and ":" in k and k in attack_base.ATTACKS)
