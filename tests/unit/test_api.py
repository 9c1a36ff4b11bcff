"""The declared public surface: lazy package names, cheap imports, `__all__` in every public
module, the API reference's check (docs/api.py), py.typed, and no process-wide JAX setting
changed by the library."""

import importlib
import importlib.util
import json
import pathlib
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest

import privjax

REPO = pathlib.Path(__file__).resolve().parents[2]
# What the audit needs and a leaf module does not: none loads with `import privjax`.
HEAVY = ("flax", "optax", "orbax", "matplotlib", "PIL", "tensorflow_datasets", "sklearn")


def _api_tool():
  spec = importlib.util.spec_from_file_location("privjax_api_reference", REPO / "docs" / "api.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _loaded_by(statement: str) -> set:
  """The top-level packages a fresh interpreter has loaded after `statement`."""
  code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
  out = subprocess.run(
    [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
  )
  return {name.split(".")[0] for name in json.loads(out.stdout.splitlines()[-1])}


def test_importing_privjax_or_a_leaf_module_loads_nothing_heavy():
  loaded = _loaded_by("import privjax")
  assert not loaded & {"jax", *HEAVY}, loaded & {"jax", *HEAVY}
  loaded = _loaded_by("import privjax.scoring.metrics")
  assert "jax" in loaded and not loaded & set(HEAVY), loaded & set(HEAVY)
  loaded = _loaded_by("import privjax.data.images")
  assert not loaded & {"jax", *HEAVY} - {"PIL"}


def test_the_packages_names_load_on_first_use():
  from privjax import audit, config
  from privjax.report import files
  from privjax.runtime import parallel
  from privjax.scoring import identity

  assert privjax.assess is audit.assess and privjax.run is audit.run
  assert privjax.audit_config is config.audit_config and privjax.Report is files.Report
  assert privjax.Evaluator is identity.Evaluator
  assert privjax.use_cpu_cores is parallel.use_cpu_cores
  assert set(privjax.__all__) <= set(dir(privjax))
  with pytest.raises(AttributeError, match="module 'privjax' has no attribute 'nope'"):
    privjax.nope  # noqa: B018
  from privjax.data import load_digits, to_unit_float  # noqa: F401
  from privjax.scoring import METRICS

  assert "ssim" not in METRICS.names() or METRICS.get("ssim", field="")  # (it resolves)
  with pytest.raises(ImportError):
    from privjax.data import nope  # noqa: F401


def test_every_public_module_declares_its_names_and_they_exist():
  api = _api_tool()
  names, behind_old_paths = api.public_modules()
  assert {"privjax", "privjax.audit", "privjax.data.images"} <= set(names)
  assert "privjax.sources" not in names and "privjax.data.sources" in behind_old_paths
  missing = []
  for name in names:
    module = importlib.import_module(name)
    public = getattr(module, "__all__", None)
    if public is None:
      if name not in behind_old_paths:
        missing.append(f"{name}: no __all__")
      continue
    missing += [f"{name}.{attr}" for attr in public if not hasattr(module, attr)]
  assert not missing, "\n".join(missing)


def test_the_api_check_names_each_undocumented_public_name(tmp_path, monkeypatch):
  (tmp_path / "toy_api.py").write_text(
    textwrap.dedent('''
      """A toy module."""

      __all__ = ["DOCUMENTED", "GROUPED", "UNDOCUMENTED", "Fine", "bare", "fine", "missing"]

      # What a comment above documents, and the run of assignments below it.
      DOCUMENTED = 1
      GROUPED = 2

      UNDOCUMENTED = 3


      class Fine:
        """A class."""


      def fine():
        """A function."""


      def bare():
        pass
      ''')
  )
  (tmp_path / "toy_bare.py").write_text("X = 1\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  docs, faults = _api_tool().documented(["toy_api", "toy_bare"])
  assert faults == [
    "toy_api.missing: in __all__ but not defined",
    "toy_api.UNDOCUMENTED: undocumented (a constant: a docstring below it or a comment on or "
    "above its line)",
    "toy_api.bare: undocumented (a function: a docstring)",
    "toy_bare: no module docstring",
    "toy_bare: no __all__ (the module's public names)",
  ]
  shown = docs["toy_api"].members
  assert shown["GROUPED"].docstring.startswith("What a comment above documents")


def test_the_package_ships_its_types():
  assert (REPO / "privjax" / "py.typed").is_file()
  assert 'privjax = ["py.typed"]' in (REPO / "pyproject.toml").read_text()


def test_assess_changes_no_jax_setting(digits8, monkeypatch):
  """`assess` leaves JAX's device configuration as it found it: the command line's
  one-device-per-core layout is `privjax.use_cpu_cores()`, the caller's to ask for."""
  import jax

  from privjax.runtime import parallel

  updates = []
  monkeypatch.setattr(jax.config, "update", lambda name, value: updates.append(name))
  monkeypatch.setattr(parallel, "use_cpu_cores", lambda *a: updates.append("use_cpu_cores"))
  x = digits8[0]
  f = np.random.default_rng(0).normal(size=(len(x), 4)).astype(np.float32)
  with pytest.raises(privjax.ConfigError, match="config.min_targets must be at least 10"):
    privjax.assess(
      None,
      None,
      x[:100],
      x[100:120],
      aux_features=f[:100],
      target_features=f[100:120],
      config=ml_collections.ConfigDict({"min_targets": 1}),
      progress=False,
    )
  assert updates == []
