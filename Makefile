# The two commands: `make run` (the embedded platform, no services) and `make test`.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PG_VERSION_DIR := $(firstword $(wildcard /etc/postgresql/*))

LOCK := requirements.lock

.PHONY: run test install lock lint format services bench clean chromium docs

# Every dependency (base, dev, ops, mcp, docs, otel) comes pinned and hashed from the lock;
# Clarion itself is installed on top without resolving anything. `pip check` fails when pyproject.toml
# asks for something the lock lacks: then run `make lock`.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e '.[dev,ops,mcp,docs,otel]'
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

# Re-resolve the lock from pyproject.toml (newest releases within its ranges), for every
# platform and Python >= 3.11, with hashes. Review the diff, then commit it.
lock:
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet uv
	.lock-venv/bin/uv pip compile pyproject.toml --extra dev --extra ops --extra mcp --extra docs --extra otel \
	  --universal --python-version 3.11 --generate-hashes --no-header --quiet -o $(LOCK)
	rm -rf .lock-venv

run: install
	$(BIN)/clarion dev

# Tests run against the real PostgreSQL (127.0.0.1:5432, database test) and Redis
# (127.0.0.1:6379). Start them if this machine has them installed but stopped; if one is
# still missing, the suite fails (never skips).
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || \
	  { [ -n "$(PG_VERSION_DIR)" ] && pg_ctlcluster --skip-systemctl-redirect \
	      $(notdir $(PG_VERSION_DIR)) main start; } || true
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || \
	  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
	    --appendonly no || true

# The docs site builds strictly: a broken link, a missing page or a stale reference fails lint.
# The layers hold (import-linter's contracts) and clarion/ type-checks (mypy): both
# configured in pyproject.toml, described in docs/development/layers.md.
# NO_MKDOCS_2_WARNING: Material prints a banner about its successor on every build.
lint: install
	$(BIN)/ruff check clarion tests bench migrations docs/hooks
	$(BIN)/ruff format --check clarion tests bench migrations docs/hooks
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	$(BIN)/lint-imports
	$(BIN)/mypy

format: install
	$(BIN)/ruff format clarion tests bench migrations docs/hooks
	$(BIN)/ruff check --fix clarion tests bench migrations docs/hooks

# The documentation site (docs/, mkdocs.yml), rebuilt on every change; `make lint` builds it
# once into site/.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

# The notification centre's client logic runs under node --test; its elements run in
# Debian's Chromium (tests/browser), installed here when missing, as is promtool (Debian's
# prometheus package), which checks the alert rules in deploy/prometheus. pytest runs on
# TEST_WORKERS xdist workers, a test file per worker at a time (docs/development/testing.md).
TEST_WORKERS ?= 2

test: install services lint chromium
	node --test tests/js/
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

chromium:
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; }
	@command -v promtool >/dev/null || { apt-get update -q && apt-get install -y -q --no-install-recommends prometheus; }

# wrk drives the pipeline benchmark's saturation phase (a Python client would be the
# bottleneck on two cores); installed from Debian's packages when missing.
bench: install services
	@command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/inbox.py
	$(BIN)/python -m bench.stream
	$(BIN)/python -m bench.channels
	$(BIN)/python -m bench.lifecycle
	$(BIN)/python -m bench.fanout

clean:
	rm -rf $(VENV) .lock-venv .clarion .pytest_cache .ruff_cache site build/docs
