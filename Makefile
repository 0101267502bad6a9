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

.PHONY: venv demo test lint typecheck pytest clean venv-mindspore test-mindspore gpu-wheels test-gpu

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
