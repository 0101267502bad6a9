# `make test` and `make demo` set up everything they need from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HYPOTHESIS_PROFILE ?= ci

# MindSpore and mindone need NumPy 1.x: they get an environment of their own
MS_VENV  := .venv-mindspore
MS_BIN   := $(MS_VENV)/bin
MS_STAMP := $(MS_VENV)/.installed

.PHONY: venv demo test lint typecheck pytest clean venv-mindspore test-mindspore

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/test.in requirements/nodeps.txt requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements/test.in -c requirements/constraints.txt
	$(BIN)/pip install --quiet --no-deps -r requirements/nodeps.txt -c requirements/constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

demo: venv
	$(BIN)/ddim-core demo

lint: venv
	$(BIN)/ruff check ddim_core adapters tests benchmarks
	$(BIN)/ruff format --check ddim_core adapters tests benchmarks

typecheck: venv
	$(BIN)/mypy

pytest: venv
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

venv-mindspore: $(MS_STAMP)

$(MS_STAMP): pyproject.toml requirements/mindspore.txt
	$(PYTHON) -m venv $(MS_VENV)
	$(MS_BIN)/pip install --quiet --no-deps -r requirements/mindspore.txt
	$(MS_BIN)/pip install --quiet --no-deps -e .
	touch $@

# The backend-matrix tests on MindSpore tensors and parity with mindone.diffusers' schedulers
test-mindspore: venv-mindspore
	$(MS_BIN)/python -m pytest -q --confcutdir=tests/mindspore -p no:cacheprovider tests/mindspore

clean:
	rm -rf $(VENV) $(MS_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
