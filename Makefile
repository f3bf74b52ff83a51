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

.PHONY: help install test lint format demo bench mlproject lock clean

help:
	@echo "make demo       install, then demo footage -> clip store -> train 2 models -> evaluate -> promote -> segment"
	@echo "make test       install, then lint (ruff) and run the test suite (pytest)"
	@echo "make bench      install, then run the benchmark suite (table + benchmarks/results.json)"
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
# tests stay in one process): the suite waits on servers, jobs and subprocesses a lot
PYTEST_ARGS ?= -n 2 --dist loadfile

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/recseg footage demo/footage --videos 6 --seconds 6
	$(BIN)/recseg preprocess --videos demo/footage/videos --backgrounds demo/footage/backgrounds \
	    --out demo/store --experiment demo
	@echo "demo: clip store in demo/store (samples: demo/store/samples.png); run in ./mlflow.db"
	$(BIN)/recseg models --details
	$(BIN)/recseg describe --model Deep_mobile_gruV3 --size 270x512 --seq-len 4
	for model in Deep+_mobile Deep_mobile_gruV3; do \
	    $(BIN)/recseg train --data demo/store --model $$model --loss CrossDice --epochs 2 \
	        --size 135x256 --batch-size 2 --checkpoint-dir demo/checkpoints --experiment demo \
	        || exit $$?; \
	done
	$(BIN)/recseg runs --experiment demo
	$(BIN)/recseg evaluate --data demo/store --experiment demo
	$(BIN)/recseg promote --experiment demo
	$(BIN)/recseg segment demo/footage/videos/person-05.mp4 -o demo/segmented.mp4 \
	    --model models:/recseg-demo@champion \
	    --background "$$(ls demo/footage/backgrounds/*.jpg | head -n 1)"
	@echo "demo: done; demo/segmented.mp4 is a footage video composited by the champion model"
	@echo "demo: see the runs with: .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db"

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

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
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info demo
