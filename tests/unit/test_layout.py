"""The package's folders carry rules a reader can check (docs/layout.md): each folder
imports only the folders below it, read from the code's own imports, lazy ones included."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "privjax"
LEAVES = {"errors", "registry", "checks", "levels"}  # the spine's leaves: anyone may import them
# What each folder may import besides itself and the leaves.
MAY_IMPORT = {
  "runtime": set(),
  "data": {"runtime"},
  "models": {"runtime", "data"},
  "scoring": {"runtime"},
  "attacks": {"runtime", "data", "scoring"},
  "defenses": {"runtime", "scoring", "report.readings"},
  "report": {"runtime"},
  "stages": {"runtime", "data", "models", "scoring", "attacks", "defenses", "report"},
}
# The one-line modules at old paths, kept for one release, and what each points at.
OLD_PATHS = {
  "faces": "models.faces",
  "embedding": "models.kinds",
  "sources": "data.sources",
  "utility": "defenses.utility",
  "risk": "levels",
}


def _name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> list[tuple[str, bool]]:
  """(privjax module imported, whether at module level) for every import in `path`."""
  tree = ast.parse(path.read_text())
  top = {id(n) for n in tree.body}
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("privjax"):
      base = node.module.removeprefix("privjax").lstrip(".")
      for alias in node.names:
        sub = f"{base}.{alias.name}" if base else alias.name
        mod = sub if _exists(sub) else base
        found.append((mod, id(node) in top))
    elif isinstance(node, ast.Import):
      found += [
        (a.name.removeprefix("privjax").lstrip("."), id(node) in top)
        for a in node.names
        if a.name.startswith("privjax")
      ]
  return [(m, t) for m, t in found if m]


def _exists(dotted: str) -> bool:
  p = PACKAGE.joinpath(*dotted.split("."))
  return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _allowed(importer: str, imported: str) -> bool:
  folder = importer.split(".")[0]
  target = imported.split(".")[0]
  if imported in LEAVES or target == folder:
    return True
  rules = MAY_IMPORT[folder]
  return target in rules or any(imported == r or imported.startswith(r + ".") for r in rules)


@pytest.mark.parametrize("folder", sorted(MAY_IMPORT))
def test_each_folder_imports_only_the_folders_below_it(folder):
  wrong = [
    f"privjax.{name} imports privjax.{imported}"
    for name, imports in GRAPH.items()
    if name.split(".")[0] == folder and "." in name or name == folder
    for imported, _ in imports
    if not _allowed(name, imported)
  ]
  assert not wrong, "\n".join(wrong)


def test_the_spine_leaves_import_only_leaves():
  for leaf in LEAVES:
    assert {m for m, _ in GRAPH[leaf]} <= LEAVES, leaf


def test_only_the_command_line_and_the_package_import_the_composer():
  for name, imports in GRAPH.items():
    for imported, _ in imports:
      if imported == "audit":
        assert name in {"", "cli"}, f"privjax.{name} imports privjax.audit"
      if imported == "cli":
        assert name == "__main__", f"privjax.{name} imports privjax.cli"


def test_no_import_cycles_at_module_level():
  graph = {n: {m for m, top in imports if top and m in MODULES} for n, imports in GRAPH.items()}
  done, path = set(), []

  def visit(n):
    if n in path:
      raise AssertionError("import cycle: " + " -> ".join(path[path.index(n) :] + [n]))
    if n in done:
      return
    path.append(n)
    for m in sorted(graph[n]):
      if m != n:
        visit(m)
    path.pop()
    done.add(n)

  for n in sorted(graph):
    visit(n)


@pytest.mark.parametrize("old,new", sorted(OLD_PATHS.items()))
def test_an_old_plugin_path_is_one_import_of_its_new_module(old, new):
  import importlib

  assert [m for m, _ in GRAPH[old]] == [new]
  was, now = importlib.import_module(f"privjax.{old}"), importlib.import_module(f"privjax.{new}")
  public = [n for n in vars(now) if not n.startswith("_") and callable(getattr(now, n))]
  assert public and all(getattr(was, n) is getattr(now, n) for n in public)


def test_every_module_is_in_a_folder_or_named_on_the_spine():
  spine = {"", "__main__", "audit", "cli", "config", "settings", "describe"} | LEAVES
  loose = {n for n in MODULES if "." not in n and n not in MAY_IMPORT}
  assert loose - spine - set(OLD_PATHS) == set(), "add it to a folder or to docs/layout.md"
