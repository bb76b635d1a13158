# eventcast: `make run` starts the gateway, `make test` runs the whole suite. Both set up what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Debian packages the tests drive for real: redis-server (broker), prometheus + promtool (observability),
# node + npm (tsc checks the Grafana dashboard against @grafana/schema; clients/js builds and tests the browser
# client), chromium (the console's end-to-end test), podman + runc + debootstrap (tests/image),
# nginx + its nchan module (the peer of `make bench-peers` and tests/bench), a C compiler (the bench's frame counter).
SYSTEM_TOOLS := redis-server:redis-server prometheus:prometheus promtool:prometheus node:nodejs npm:npm chromium:chromium podman:podman runc:runc debootstrap:debootstrap nginx:nginx /usr/lib/nginx/modules/ngx_nchan_module.so:libnginx-mod-nchan cc:gcc
JS := clients/js
JS_DEPS := $(JS)/node_modules/.package-lock.json

.PHONY: run test lint typecheck pytest js-test js-build bench bench-peers bench-deflate system-deps venv clean

run: venv
	$(BIN)/eventcast serve

test: system-deps venv lint typecheck js-test pytest

lint: venv
	$(BIN)/ruff check app tests dashboards
	$(BIN)/ruff format --check app tests dashboards

typecheck: venv
	$(BIN)/mypy
	$(BIN)/mypy dashboards

pytest: venv
	$(BIN)/pytest -q -p no:cacheprovider

# The JavaScript client (clients/js): the committed build is checked, then node --test runs the unit tests on
# fakes, the tests against real gateways and the console in headless Chromium (screenshots: $(JS)/test-results).
js-test: system-deps venv $(JS_DEPS)
	cd $(JS) && npm test

# Rebuild app/static/client.js and console.js (committed: the gateway serves them without Node) and dist/.
js-build: $(JS_DEPS)
	cd $(JS) && npm run build

$(JS_DEPS): $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund

bench: system-deps venv
	$(BIN)/eventcast bench --spawn --baseline --scenarios targets,storm,ramp,sustained,publish,workers \
	  --max-clients 10000 --duration 10 --json docs/bench/results.json --plot docs/bench \
	  --markdown docs/bench/table.md

# eventcast against nginx + nchan and socket.io, one worker each, 10,000 clients, 3 runs pinned and 3 unpinned;
# rewrites the side-by-side section of docs/benchmarks.md (see there for how long it takes).
# permessage-deflate against the same gateway without it: memory per idle connection, CPU per broadcast.
bench-deflate: system-deps venv
	$(BIN)/eventcast bench --deflate --runs 3 --max-clients 10000 --events 10 --json docs/bench/deflate.json \
	  --doc docs/benchmarks.md

bench-peers: system-deps venv
	$(BIN)/eventcast bench --peers nchan,socketio --runs 3 --pinning both --max-clients 10000 --storm-clients 1000 \
	  --events 10 --json docs/bench/peers.json --doc docs/benchmarks.md

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
	  { echo "eventcast needs Python >= 3.11 (found: $$($(PYTHON) --version 2>&1)). Set PYTHON=python3.11." >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
	  { echo "cannot create a venv: install python3-venv (apt-get install python3-venv)" >&2; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  tool=$${pair%%:*}; pkg=$${pair##*:}; \
	  case $$tool in /*) test -e $$tool ;; *) command -v $$tool >/dev/null 2>&1 ;; esac || missing="$$missing $$pkg"; \
	done; \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$${missing// /}" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "missing tools for the tests:$$missing -- install them (sudo apt-get install$$missing) and rerun" >&2; exit 1; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache $(JS)/node_modules $(JS)/dist $(JS)/test-results
