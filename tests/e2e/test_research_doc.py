"""docs/research.md runs as written: its python blocks, in order, in one namespace."""

import pathlib
import re

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "research.md"


def test_every_example_in_docs_research_runs():
  blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
  assert len(blocks) >= 6
  namespace = {"__name__": "research_doc"}
  for i, block in enumerate(blocks):
    code = compile(block, f"docs/research.md block {i + 1}", "exec")
    exec(code, namespace)  # noqa: S102 (the documentation's own examples)
