# `make test` and `make demo` set up everything they need from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HYPOTHESIS_PROFILE ?= ci

.PHONY: venv demo test lint typecheck pytest clean gpu-wheels test-gpu

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

# GPU checks (CuPy, torch CUDA, benchmark) on a machine with an NVIDIA GPU, offline: fetch the
# wheels here, carry .gpu-wheels/ along, run `make test-gpu` there (see benchmarks/gpu/run.sh).
GPU_PYVER ?= 311
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version $(GPU_PYVER) \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 --platform any \
		-d .gpu-wheels -r requirements/gpu.txt
	$(PYTHON) -m pip wheel --quiet --no-deps -w .gpu-wheels .

test-gpu:
	bash benchmarks/gpu/run.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
