# The README's two commands: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages the test suite drives for real: prometheus/promtool, chromium, systemd-analyze.
APT_PACKAGES := prometheus chromium systemd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint typecheck unit integration system-deps clean

$(VENV)/.run-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.run-installed

## run: create the virtualenv, install pqd and run the daemon on the built-in defaults
run: $(VENV)/.run-installed
	$(BIN)/pqd run

## system-deps: the Debian packages the tests need (skipped when already installed)
system-deps:
	@if ! command -v promtool >/dev/null || ! command -v chromium >/dev/null \
	    || ! command -v systemd-analyze >/dev/null; then \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(APT_PACKAGES) >/dev/null; \
	fi
	@# Debian's package may start its own Prometheus; the tests start theirs on free ports.
	@-$(SUDO) systemctl stop prometheus >/dev/null 2>&1 || true

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(VENV)/.test-installed
	$(BIN)/mypy --strict src

## test: install everything the tests need, then lint, type-check and run the whole suite
test: system-deps lint typecheck
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
