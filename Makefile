# Every target creates the virtual environment it needs; `make all` is what CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all test lint typecheck unit demo bench clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check worker tests bench
	$(BIN)/ruff format --check worker tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

## The README's test command: lint, strict type check, the whole test suite.
test: lint typecheck unit

## The README's demo command: the main job on an embedded moto server.
demo: $(STAMP)
	$(BIN)/worker demo

## Figures, not tests: throughput against concurrency, next to the broker's ceiling.
bench: $(STAMP)
	$(BIN)/python -m bench.concurrency

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
