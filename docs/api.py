"""privjax's API reference, built from its docstrings with pdoc (offline), and its check.

  python docs/api.py                 # build/api/index.html (git-ignored); `make api`
  python docs/api.py --check         # the check alone, nothing written

`make lint` (so `make test`, CI) runs it. The reference has one page per public module of
privjax: a module none of whose dotted name's parts starts with "_", other than an old
path (a module that only star-imports its new one, kept for one release). Each public
module declares its public names in `__all__`, and each of them is documented: a
function or a class by its docstring; a constant by the string below its assignment
(pdoc's variable docstring) or else by the comment on its line or the block just above it
(this codebase's habit, shown in the reference as its docstring), where the module that
assigns it has one. Exits 1 printing one line per undocumented name (or module without a
docstring or `__all__`); a clean run prints where the reference is, or nothing with
--check.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import pkgutil
import sys
import warnings

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(HERE, "build", "api")
PACKAGE = "privjax"


def public_modules() -> tuple[list[str], set[str]]:
  """(the dotted names of privjax's public modules, sorted; those of them an old path
  star-imports)."""
  package = importlib.import_module(PACKAGE)
  names, behind_old_paths = [PACKAGE], set()
  for info in pkgutil.walk_packages(package.__path__, f"{PACKAGE}."):
    if any(part.startswith("_") for part in info.name.split(".")):
      continue
    new = _old_path_of(importlib.util.find_spec(info.name).origin)
    if new is None:
      names.append(info.name)
    else:
      behind_old_paths.add(new)
  return sorted(names), behind_old_paths


def _old_path_of(path: str) -> str | None:
  """The module that the module at `path` stands in for when it is an old path (a
  docstring and one `from NEW import *`), else None."""
  with open(path, encoding="utf-8") as f:
    body = ast.parse(f.read()).body
  if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
    body = body[1:]
  if (
    len(body) == 1
    and isinstance(body[0], ast.ImportFrom)
    and [a.name for a in body[0].names] == ["*"]
  ):
    return body[0].module
  return None


def comments(path: str) -> dict[str, str]:
  """{name: its comment} of `path`'s module-level assignments `NAME = ...`: the comment on
  the assignment's lines, else the block of comment lines just above it."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  from privjax.describe import trailing_comments  # the same reading as --print_config's

  lines = text.splitlines()
  trailing = trailing_comments(text)
  out, block, last = {}, "", None  # block: the comment above a run of assignments
  for node in ast.parse(text).body:
    if isinstance(node, ast.Assign):
      targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
      targets = [node.target.id]
    else:
      last = None
      continue
    on_line = [trailing[n] for n in range(node.lineno, node.end_lineno + 1) if n in trailing]
    above, i = [], node.lineno - 2
    while i >= 0 and lines[i].strip().startswith("#"):
      above.insert(0, lines[i].strip().lstrip("#").strip())
      i -= 1
    if above or last is None or last.end_lineno != node.lineno - 1:
      block = " ".join(above)  # a new run of assignments (the next line after a blank one)
    for name in targets:
      if on_line or block:
        out.setdefault(name, " ".join(on_line) or block)
    last = node
  return out


def _constant_doc(name: str, value, modules) -> str:
  """The comment documenting constant `name` (of value `value`) where it is assigned: in
  the first of `modules` that holds that very object under that name and comments it."""
  for module in modules:
    if getattr(module, name, None) is value and getattr(module, "__file__", None):
      found = comments(module.__file__).get(name)
      if found:
        return found
  return ""


def documented(names: list[str], behind_old_paths: set[str] = frozenset()):
  """(pdoc's doc of each module of `names`, one line per fault): each module's docstring,
  `__all__` and every name in it documented (a constant's comment becomes its doc).

  A module an old path star-imports (`behind_old_paths`) has no `__all__` while the old
  path stands: one would take from the old path the names it promises for its release.
  Its public names are then the functions and classes it defines, each checked the same
  way, and its documented constants.
  """
  import pdoc.doc

  modules = [importlib.import_module(n) for n in names]
  faults, docs = [], {}
  for module in modules:
    name = module.__name__
    if not (module.__doc__ or "").strip():
      faults.append(f"{name}: no module docstring")
    public = getattr(module, "__all__", None)
    if public is None and name not in behind_old_paths:
      faults.append(f"{name}: no __all__ (the module's public names)")
    undefined = [a for a in public or [] if not hasattr(module, a)]  # (lazy names load here)
    faults += [f"{name}.{attr}: in __all__ but not defined" for attr in undefined]
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # pdoc's notes on what it cannot inspect
      doc = pdoc.doc.Module(module)
      members = doc.members
    implicit = public is None
    if implicit:
      public = [attr for attr in members if not attr.startswith("_")]
    for attr in public:
      member = members.get(attr)
      if member is None or attr in undefined:
        continue
      if not member.docstring.strip() and isinstance(member, pdoc.doc.Variable):
        own = [module] + [m for m in modules if m is not module]
        member.docstring = _constant_doc(attr, getattr(module, attr, None), own)
      if not member.docstring.strip() and implicit and isinstance(member, pdoc.doc.Variable):
        del doc.members[attr]  # an undocumented constant of a module without __all__
        continue
      if not member.docstring.strip():
        what = "a constant: a docstring below it or a comment on or above its line"
        if not isinstance(member, pdoc.doc.Variable):
          what = f"a {member.kind}: a docstring"
        faults.append(f"{name}.{attr}: undocumented ({what})")
    docs[name] = doc
  return docs, faults


def build(docs: dict, out: str) -> None:
  """Writes the reference of `docs` (pdoc's module docs) as HTML into `out`."""
  import pdoc.render

  pdoc.render.configure(docformat="google", show_source=False, search=True)
  pages = {os.path.join(*name.split(".")) + ".html": doc for name, doc in docs.items()}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pdoc's notes on annotations it cannot resolve
    pages = {path: pdoc.render.html_module(doc, docs) for path, doc in pages.items()}
    pages["index.html"] = pdoc.render.html_index(docs)
    pages["search.js"] = pdoc.render.search_index(docs)
  for path, text in pages.items():
    os.makedirs(os.path.dirname(os.path.join(out, path)), exist_ok=True)
    with open(os.path.join(out, path), "w", encoding="utf-8") as f:
      f.write(text)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--check", action="store_true", help="check only; write nothing")
  parser.add_argument("--out", default=OUT, help="where the HTML goes")
  args = parser.parse_args()
  sys.path.insert(0, HERE)  # this checkout's privjax, as the tests import it
  docs, faults = documented(*public_modules())
  for line in faults:
    print(f"api: {line}")
  if faults:
    return 1
  if not args.check:
    build(docs, args.out)
    print(f"api: {len(docs)} modules documented: {os.path.join(args.out, 'index.html')}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
