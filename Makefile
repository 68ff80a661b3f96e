# `make run` and `make test` set up everything themselves (venv, installs, and as
# root on Debian the few system packages some tests drive: rsync, faketime, espeak-ng).
# bash with pipefail: pip's exit status survives the filter that quiets its notes.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.forgesyte-installed
TEST_STAMP := $(VENV)/.forgesyte-test-installed
PIP    := $(BIN)/python -m pip --quiet --disable-pip-version-check
# pip's notes about unreachable extra indexes and setuptools' editable-install banner are noise.
QUIET  := 2>&1 | sed -e '/^WARNING: Location/d' -e '/BuildBackendWarning/,/with strategy/d'
# Extras the test suite exercises (cluster tests start a real Dask scheduler and workers).
TEST_EXTRAS ?= test,cluster,all
# Debian packages tests use for real (each test skips, saying why, when one is missing).
TEST_DEBS ?= rsync faketime espeak-ng
# Wait for another apt/dpkg (unattended upgrades, a parallel install) instead of failing on its lock.
APT_WAIT := -o DPkg::Lock::Timeout=300

.PHONY: run test test-slow test-all test-systemd bench clean debs

# One line per step instead of the commands themselves (pip's own errors still show).
$(BIN)/python:
	@echo "creating $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) install --upgrade pip $(QUIET)

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	@echo "installing forgesyte into $(VENV)"
	@$(PIP) install -e . $(QUIET)
	@$(BIN)/python -c "import forgesyte"
	@touch $(STAMP)

$(TEST_STAMP): $(STAMP) setup.cfg
	@echo "installing the test extras ($(TEST_EXTRAS)) into $(VENV)"
	@$(PIP) install -e '.[$(TEST_EXTRAS)]' $(QUIET)
	@$(BIN)/python -c "import pytest, forgesyte"
	@touch $(TEST_STAMP)

# Best effort: only as root with apt; a test whose tool is missing skips with the reason.
debs:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "installing Debian packages for tests:$$missing"; \
	        (apt-get $(APT_WAIT) update -qq && DEBIAN_FRONTEND=noninteractive apt-get $(APT_WAIT) install -y -qq --no-install-recommends $$missing) >/dev/null 2>&1 \
	            || echo "could not install$$missing; the tests that need them will be skipped"; \
	    else echo "not root or no apt: not installing$$missing; the tests that need them will be skipped"; fi; \
	fi

run: $(STAMP)
	$(BIN)/forgesyte run

# Most tests wait on real daemons (settle windows, workers), not on the CPU, so they run
# four at a time even on two cores. The long soaks and the full corruption matrix are
# marked slow: `make test-slow` runs them (.ci/run does, after `make test`).
JOBS ?= 4

test: $(TEST_STAMP) debs
	$(BIN)/python -m pytest -q -n $(JOBS) -m "not slow" $(PYTEST_ARGS)

test-slow: $(TEST_STAMP) debs
	$(BIN)/python -m pytest -q -n $(JOBS) -m slow $(PYTEST_ARGS)

test-all: $(TEST_STAMP) debs
	$(BIN)/python -m pytest -q -n $(JOBS) $(PYTEST_ARGS)

# ForgeSyte under a real systemd: boots Debian bookworm in systemd-nspawn (root only; the
# rootfs and wheels are cached in /var/cache/forgesyte-systemd). tests/systemd/run.sh says more.
test-systemd: $(STAMP)
	PYTHON=$(abspath $(BIN)/python) tests/systemd/run.sh

bench: $(TEST_STAMP)
	$(BIN)/python bench/e2e.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/plugins.py
	$(BIN)/python bench/store.py

clean:
	rm -rf $(VENV) build *.egg-info
