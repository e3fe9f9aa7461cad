# Fresh clone: `make demo` or `make test` set everything up in .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-slow test-all lint format clean web dist

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

# pytest-xdist workers, one a core of the 2-core CI machine; each test file
# runs whole in one worker (`--dist loadfile`), so its module fixtures are
# made once. `make test TEST_WORKERS=0` runs in this process, one at a time.
# The slowest tests are listed at the end (`--durations`).
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

# The two selections are complementary: together they run every test.
test: $(STAMP)
	$(PYTEST) -m "not slow and not parity and not jax"

# Exit code 5 (nothing selected) is fine here: the marked set may be empty.
test-slow: $(STAMP)
	$(PYTEST) -m "slow or parity or jax" || [ $$? -eq 5 ]

test-all: $(STAMP)
	$(PYTEST)

# The in-browser page (web/, LiteRT.js) into keras_solov2/app/web_page/, package
# data that `keras-solov2 web` serves; needs Node.js and npm. Its tests skip
# without it (not in CI).
web:
	cd web && npm ci && npm run build

# The wheel and the sdist in dist/, with the page: tests/test_packaging.py
# installs such a wheel in a fresh venv (make test-slow).
dist: $(STAMP) web
	$(PY) -m build

lint: $(STAMP)
	$(PY) -m ruff check keras_solov2 tests examples benchmarks
	$(PY) -m ruff format --check keras_solov2 tests examples benchmarks

format: $(STAMP)
	$(PY) -m ruff format keras_solov2 tests examples benchmarks
	$(PY) -m ruff check --fix keras_solov2 tests examples benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache demo_output
