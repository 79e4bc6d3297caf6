# NEXUS Edge: `make demo` runs the whole pipeline locally, `make test` runs the tests.
# Both install what they need: apt packages (mosquitto, PostgreSQL server) and a virtualenv.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DURATION ?= 0
PYTEST_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help deps venv test lint demo bench clean k8s console

help:
	@echo "make demo [DURATION=30]   run simulated PLCs -> gateway -> mosquitto -> ingestion -> PostgreSQL"
	@echo "make test                 run the test suite (real mosquitto and PostgreSQL on loopback)"
	@echo "make lint                 ruff over the tree, mypy --strict over the packages"
	@echo "make bench                run the benchmarks and print ratios to the raw limits"
	@echo "make deps                 install system packages (mosquitto, PostgreSQL server, Node.js, chromium)"
	@echo "make console              build the web console (console/ -> console/dist, served by gateway_core at /)"
	@echo "make k8s                  render helm/nexus-edge into k8s/dev and k8s/prod (the one source: the chart)"

deps:
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing="$$missing postgresql"; \
	command -v setpriv >/dev/null || missing="$$missing util-linux"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromedriver ] || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# TimescaleDB for the historian tests, from ../shared/timescaledb when it is there (built for PostgreSQL
	@# 15.20: an older 15.x cannot load it, "undefined symbol: heap_datum_check"); elsewhere they are skipped
	@ts=$${NEXUS_TIMESCALEDB_BUILD:-../shared/timescaledb}; \
	if [ -x "$$ts/install.sh" ] && [ -d /usr/lib/postgresql/15/lib ]; then \
	  v=$$(dpkg-query -W -f='$${Version}' postgresql-15 2>/dev/null || echo 0); \
	  if dpkg --compare-versions "$$v" lt 15.20; then \
	    echo "upgrading postgresql-15 $$v for TimescaleDB"; \
	    { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --only-upgrade postgresql-15 >/dev/null; } \
	      || echo "postgresql-15 not upgraded: the TimescaleDB tests will be skipped, saying why"; \
	  fi; \
	  [ -e /usr/lib/postgresql/15/lib/timescaledb.so ] || $(SUDO) "$$ts/install.sh" \
	    || echo "TimescaleDB not installed: its tests will be skipped, saying why"; \
	fi

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

# The console (console/, Vite): npm ci from the lock file, then the build into console/dist, which gateway_core
# serves at /. Rebuilt only when its sources changed. Vite 8 needs Node.js 20.19 or newer.
CONSOLE_SRC := console/package.json console/package-lock.json console/index.html console/vite.config.ts \
	console/tsconfig.json $(shell find console/src console/public -type f 2>/dev/null)

console: console/dist/index.html

console/dist/index.html: $(CONSOLE_SRC)
	@node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=19)?0:1)' \
	  || { echo "the console needs Node.js 20.19 or newer (found $$(node --version)); the daemons run without it"; exit 1; }
	cd console && npm ci --no-audit --no-fund --loglevel=error && npm run build
	@touch $@

test: deps venv console
	cd console && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error; } && npm test --silent
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check . && $(BIN)/mypy

demo: deps venv console
	$(BIN)/nexus demo --duration $(DURATION)

bench: deps venv
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/gateway.py --interval-ms 500
	$(BIN)/python bench/reload.py --interval-ms 1000 100

k8s: venv
	$(BIN)/python -m devtools.render_k8s

clean:
	rm -rf .nexus $(VENV) *.egg-info .pytest_cache console/node_modules console/dist
