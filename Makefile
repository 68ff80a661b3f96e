# `make run` and `make test` set up everything themselves (venv, installs).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.forgesyte-installed

.PHONY: run test test-all bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/forgesyte run

# The slow crash soak (~1 min) is left out locally and run in CI (CI=true).
SLOW := $(if $(CI),,-m "not slow")

test: $(STAMP)
	$(BIN)/python -m pytest -q $(SLOW) $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/e2e.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/plugins.py
	$(BIN)/python bench/store.py

clean:
	rm -rf $(VENV) build *.egg-info
