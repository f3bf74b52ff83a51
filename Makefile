# recseg: `make demo` runs the main job on embedded data, `make test` runs the test suite.
# Both create .venv (Python 3.11) and install the pinned versions in constraints.txt first.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.recseg-installed
PIP_FLAGS ?= --progress-bar off --disable-pip-version-check

export MLFLOW_DISABLE_TELEMETRY := true
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help install test lint format demo thesis bench bench-quick scale mlproject lock clean

help:
	@echo "make demo       install, then demo footage -> clip store -> train 2 models -> evaluate -> promote -> segment"
	@echo "make thesis     install, then the thesis's comparison (5 variants x 3 seeds, ~90 min on 2 cores) and its report"
	@echo "make test       install, then lint (ruff) and run the test suite (pytest)"
	@echo "make bench      install, then every benchmark part (~18 min on 2 cores, install included): benchmarks/results.json + README table"
	@echo "make bench-quick  install, then every benchmark part in a reduced form (~3 min): benchmarks/results-quick.json"
	@echo "make scale      install, then the cluster tracking server (PostgreSQL + S3) under 16 concurrent jobs, audited: benchmarks/scale.json"
	@echo "make lint       ruff check + format check"
	@echo "make mlproject  regenerate MLproject from the typed configs"
	@echo "make lock       regenerate constraints.txt from the current .venv"

$(STAMP): pyproject.toml constraints.txt
	bash scripts/bootstrap-venv.sh "$(PYTHON)" "$(VENV)"
	bash scripts/system-packages.sh
	$(BIN)/python -m pip install $(PIP_FLAGS) -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# two workers, a test file per worker at a time (module fixtures built once; the Grid Engine
# tests stay in one process), the longest files first (tests/conftest.py orders them); the
# 20 slowest tests are listed at the end
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder --durations=20

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# every step is a recseg command (shown as it runs); DEMO_ARGS=--quick runs the reduced demo
demo: $(STAMP)
	$(BIN)/recseg demo $(DEMO_ARGS)

# base vs GRU/LSTM at the decoder and output, 3 seeds each, on hard footage; prints the table
thesis: $(STAMP)
	$(BIN)/recseg thesis $(THESIS_ARGS)

# every part (~18 min on 2 cores, install included); a run of every part replaces benchmarks/results.json, then the
# README's performance block (between <!-- bench:start --> and <!-- bench:end -->) is rewritten
# from it (also after --check found a missed target; the exit status is the benchmark's)
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS); status=$$?; \
	  $(BIN)/python -m benchmarks.report --readme && exit $$status

# every part in a reduced form (~3 min): a first look, into benchmarks/results-quick.json
bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick $(BENCH_ARGS)

# PostgreSQL + an S3 store (moto_server) + mlflow server with basic-auth, 16 concurrent tiny
# `recseg train` jobs (some stopped or killed and resumed), an audit of everything they logged,
# the jobs' logging latency and the data-parallel comparison: a table and benchmarks/scale.json
scale: $(STAMP)
	$(BIN)/python -m benchmarks.scale $(SCALE_ARGS)

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

mlproject: $(STAMP)
	$(BIN)/python -m recseg.mlproject

lock: $(STAMP)
	{ echo "# Exact versions every machine installs (make install / make test use: pip install -c constraints.txt)."; \
	  echo "# Regenerate with: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^recseg'; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info demo thesis test-artifacts
