# The README's two commands: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages the test suite drives for real: prometheus/promtool, chromium, systemd-analyze,
# and debootstrap + systemd-nspawn (systemd-container) for the tests under a real systemd.
APT_PACKAGES := prometheus chromium systemd fonts-wqy-microhei wrk prometheus-node-exporter \
  debootstrap systemd-container
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

PREFIX ?= /opt/pqd
# The one place the version is written; the image is tagged with it (deploy/kubernetes/generate.py).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

# Extra pip options for `make install`, e.g. an offline install from a wheelhouse:
#   make install PIP_ARGS='--no-index --find-links /path/to/wheelhouse'
PIP_ARGS ?=
# Wheels of pqd's dependencies and build requirements, for installing pqd where there is no
# package index (the tests under a real systemd install it that way into a container).
WHEELHOUSE := $(VENV)/wheelhouse

.DEFAULT_GOAL := help
.PHONY: help run test test-pythons test-daemon-pythons unit lint typecheck system-deps wheelhouse install image clean

## help: list the targets
help:
	@awk '/^## / { sub(/^## /, ""); i = index($$0, ": "); \
	  printf "  make %-12s %s\n", substr($$0, 1, i - 1), substr($$0, i + 2) }' $(MAKEFILE_LIST)

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

## wheelhouse: wheels of pqd's dependencies and build requirements (not of pqd itself)
wheelhouse: $(WHEELHOUSE)/.built

$(WHEELHOUSE)/.built: pyproject.toml $(VENV)/.test-installed
	rm -rf $(WHEELHOUSE)
	$(BIN)/pip wheel --quiet --wheel-dir $(WHEELHOUSE) . $$($(BIN)/python -c \
	  "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires'])")
	rm -f $(WHEELHOUSE)/pqd-*.whl
	touch $@

## system-deps: the Debian packages the tests need (skipped when already installed)
system-deps:
	@missing=$$(for package in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$package 2>/dev/null | grep -q '^install ok installed' \
	    || echo $$package; \
	done); \
	if [ -n "$$missing" ]; then \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(APT_PACKAGES) >/dev/null; \
	fi
	@# Debian's package may start its own Prometheus; the tests start theirs on free ports.
	@-$(SUDO) systemctl stop prometheus >/dev/null 2>&1 || true
	@-$(SUDO) systemctl stop prometheus-node-exporter >/dev/null 2>&1 || true

## lint: ruff check and ruff format --check, as make test runs them
lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests benchmarks grafana deploy
	$(BIN)/ruff format --check src tests benchmarks grafana deploy

## typecheck: mypy --strict src, as make test runs it
typecheck: $(VENV)/.test-installed
	$(BIN)/mypy --strict src

## test: install everything the tests need, then lint, type-check, run the whole suite, then the per_python tests under each other CPython, then pqd itself under each other CPython >= 3.11
test: system-deps lint typecheck wheelhouse
	$(BIN)/pytest
	$(BIN)/python -m tests.helpers.interpreters
	$(BIN)/python -m tests.helpers.daemon_pythons

## test-daemon-pythons: pqd itself under each other CPython >= 3.11 (unit tests, a pqd run); older ones refused by pip
test-daemon-pythons: $(VENV)/.test-installed
	$(BIN)/python -m tests.helpers.daemon_pythons

## test-pythons: the per_python tests again with each other CPython >= 3.9 found as the probes' python
test-pythons: $(VENV)/.test-installed
	$(BIN)/python -m tests.helpers.interpreters

## unit: the unit tests alone (plain data and a few real pools; seconds)
unit: $(VENV)/.test-installed
	$(BIN)/pytest -q tests/unit

## install: pqd in $(PREFIX), /usr/local/bin/pqd, the systemd unit and (if absent) the config
install:
	$(PYTHON) -m venv $(PREFIX)
	$(PREFIX)/bin/pip install --quiet $(PIP_ARGS) --upgrade pip
	$(PREFIX)/bin/pip install --quiet $(PIP_ARGS) .
	ln -sf $(PREFIX)/bin/pqd /usr/local/bin/pqd
	install -m 0644 systemd/pqd.service /etc/systemd/system/pqd.service
	install -d -m 0755 /etc/pqd
	[ -e /etc/pqd/pqd.toml ] || install -m 0644 systemd/pqd.toml /etc/pqd/pqd.toml
	/usr/local/bin/pqd check-config /etc/pqd/pqd.toml
	-systemctl daemon-reload

## image: build the container image pqd:$(VERSION) (deploy/Dockerfile; needs a Docker engine)
image:
	docker build -f deploy/Dockerfile -t pqd:$(VERSION) .

## clean: remove the virtualenv and the tools' caches
clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
