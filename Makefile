# edgebench: `make bench` sets everything up and measures the demo suite on this machine;
# `make test` sets up, installs the system tools the tests use, and runs the test suite.
PYTHON  ?= python3
VENV    ?= .venv
DEVICE  ?= local
SUITE   ?= models/demo.yaml
DB      ?= results/edgebench.db
BIN      = $(VENV)/bin
EDGEBENCH = $(BIN)/edgebench

.PHONY: setup bench build report test test-fast lint system-deps clean

setup: $(VENV)/.installed

# Reinstall when the dependency pins change.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

build: setup
	$(EDGEBENCH) build $(SUITE)

bench: setup
	$(EDGEBENCH) bench --device $(DEVICE) --suite $(SUITE) --db $(DB)
	$(EDGEBENCH) report --run latest --db $(DB)

report: setup
	$(EDGEBENCH) report --run latest --db $(DB)

# OpenSSH's server (SSH transport tests) and Chromium (HTML report test), from Debian.
system-deps:
	bash scripts/install-system-deps.sh

test: setup system-deps
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow"

lint: setup
	$(BIN)/ruff check harness tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf models/build reports/*/ .pytest_cache
