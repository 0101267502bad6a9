# `make test`, `make demo` and `make docs` set up everything they need from nothing, each in
# its own virtual environment: .venv (the full test environment), .venv-demo (ddim-core, its
# runtime dependencies and matplotlib: no torch), .venv-docs (pinned MkDocs toolchain).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_VENV  := .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed
DOCS_VENV  := .venv-docs
DOCS_STAMP := $(DOCS_VENV)/.installed
export HYPOTHESIS_PROFILE ?= ci

# MindSpore and mindone need NumPy 1.x: they get an environment of their own
MS_VENV  := .venv-mindspore
MS_BIN   := $(MS_VENV)/bin
MS_STAMP := $(MS_VENV)/.installed

.PHONY: venv demo docs docs-serve test lint typecheck pytest clean venv-mindspore test-mindspore gpu-wheels test-gpu

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/test.in requirements/nodeps.txt requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements/test.in -c requirements/constraints.txt
	$(BIN)/pip install --quiet --no-deps -r requirements/nodeps.txt -c requirements/constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(DEMO_STAMP): pyproject.toml requirements/constraints.txt
	@echo "make demo: installing ddim-core with numpy, array-api-compat, pluggy and matplotlib into $(DEMO_VENV) (no torch)"
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install --quiet -c requirements/constraints.txt -e '.[plot]'
	touch $@

demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/ddim-core demo --plot demo.png

$(DOCS_STAMP): requirements/docs.txt
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/pip install --quiet -r requirements/docs.txt
	touch $@

# Strict: any warning (a broken link, a docstring that does not match its signature, a public
# name missing from the API reference) fails the build. Figures are drawn by docs/hooks.py.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: $(DOCS_STAMP)
	$(DOCS_VENV)/bin/mkdocs serve

lint: venv
	$(BIN)/ruff check ddim_core adapters tests benchmarks docs
	$(BIN)/ruff format --check ddim_core adapters tests benchmarks docs

typecheck: venv
	$(BIN)/mypy

pytest: venv
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

# GPU checks (CuPy, torch CUDA, benchmark) on a machine with an NVIDIA GPU, offline: fetch the
# wheels here, carry .gpu-wheels/ along, run `make test-gpu` there (see benchmarks/gpu/run.sh).
GPU_PYVER ?= 312
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version $(GPU_PYVER) \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 --platform any \
		-d .gpu-wheels -r requirements/gpu.txt
	rm -f .gpu-wheels/ddim_core-*.whl  # one wheel of the project (two: pip cannot choose)
	rm -rf build  # an older in-tree build's modules would reach the wheel
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
	rm -rf $(VENV) $(DEMO_VENV) $(DOCS_VENV) $(MS_VENV) site .pytest_cache .mypy_cache .ruff_cache .hypothesis
