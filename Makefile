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

.PHONY: venv demo docs docs-serve test lint typecheck pytest clean

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

clean:
	rm -rf $(VENV) $(DEMO_VENV) $(DOCS_VENV) site .pytest_cache .mypy_cache .ruff_cache .hypothesis
