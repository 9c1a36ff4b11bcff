# The two set-up commands of the README:
#   make audit   install privjax into .venv and run the default audit (no network needed
#                beyond the package index)
#   make test    install privjax with its test tools into .venv, lint and run the tests
# and, while developing:
#   make test-fast  the unit tests but the slow ones (tests/unit -m "not slow": no whole
#                   audits, no training loops, no lint): about 70 s on 2 cores
#   make api        the API reference from the docstrings (pdoc, offline) into build/api/,
#                   failing on an undocumented public name (make lint runs it too)
#   make bench      the benchmark's quick run (benchmarks/run.py --quick: about 95 s on 2
#                   CPU cores, JSON to benchmarks/results.json); BENCH= for the full one
#                   (about 35 min)
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
BENCH ?= --quick

.PHONY: audit test test-fast lint api format bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

audit: $(VENV)/.installed
	$(PY) launch.py --config=configs/default.py --workdir=$(WORKDIR)

lint: $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) docs/api.py

api: $(VENV)/.installed-test
	$(PY) docs/api.py

# Tests run in parallel processes, one per core up to 4 (pytest-xdist; each file in one
# process, so a module's fixtures are built once), each test named as it finishes.
PYTEST_PARALLEL := -n auto --maxprocesses=4 --dist loadfile -v

test: lint
	$(PY) -m pytest $(PYTEST_PARALLEL)

test-fast: $(VENV)/.installed-test
	$(PY) -m pytest tests/unit -m "not slow" $(PYTEST_PARALLEL)

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py $(BENCH)

format: $(VENV)/.installed-test
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache build/api
