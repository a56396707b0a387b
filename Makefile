# maskgen + distill — set-up, demo and tests.
#   make demo   set up a virtual environment and mask the built-in synthetic faces
#   make test   set up and run lint, the test suite and the wheel-asset check
# TORCH_SPEC pins torch so that pip does not pull a different build (see README).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= out/demo

.PHONY: setup demo distill-demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/maskgen demo $(DEMO_OUT)
	$(BIN)/maskgen preview $(DEMO_OUT)/contact_sheet_full.png
	@echo "masked images, occlusion maps, manifest and contact sheets are in $(DEMO_OUT)/"

distill-demo: setup
	$(BIN)/distill train

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check maskgen distill tests benchmarks scripts examples

test: lint
	$(BIN)/python scripts/check_wheel.py
	$(BIN)/pytest -q -p no:cacheprovider

bench: setup
	$(BIN)/python benchmarks/bench_renderer.py

clean:
	rm -rf $(VENV) build dist out *.egg-info
