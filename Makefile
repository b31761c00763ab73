# The README's two commands: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages the test suite drives for real: prometheus/promtool, chromium, systemd-analyze.
APT_PACKAGES := prometheus chromium systemd fonts-wqy-microhei wrk prometheus-node-exporter
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

PREFIX ?= /opt/pqd

.PHONY: run test lint typecheck system-deps install clean

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

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests benchmarks grafana deploy
	$(BIN)/ruff format --check src tests benchmarks grafana deploy

typecheck: $(VENV)/.test-installed
	$(BIN)/mypy --strict src

## test: install everything the tests need, then lint, type-check and run the whole suite
test: system-deps lint typecheck
	$(BIN)/pytest

## install: pqd in $(PREFIX), /usr/local/bin/pqd, the systemd unit and (if absent) the config
install:
	$(PYTHON) -m venv $(PREFIX)
	$(PREFIX)/bin/pip install --quiet --upgrade pip
	$(PREFIX)/bin/pip install --quiet .
	ln -sf $(PREFIX)/bin/pqd /usr/local/bin/pqd
	install -m 0644 systemd/pqd.service /etc/systemd/system/pqd.service
	install -d -m 0755 /etc/pqd
	[ -e /etc/pqd/pqd.toml ] || install -m 0644 systemd/pqd.toml /etc/pqd/pqd.toml
	/usr/local/bin/pqd check-config /etc/pqd/pqd.toml
	-systemctl daemon-reload

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
