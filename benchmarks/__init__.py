def require_test_extras() -> None:
  """Exits with one line naming the install when scikit-image (a test extra, the SSIM
  reference and the 64x64 pictures) is missing: `make audit` installs only the package."""
  import importlib.util
  import sys

  if importlib.util.find_spec("skimage") is None:
    sys.exit(
      "benchmarks need the test extras (scikit-image): run `make test-fast` once, or "
      "`.venv/bin/python -m pip install -e '.[test]'`"
    )
