# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap uv and .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3
UV_HOME := .cryptoflow/tools
UV := $(UV_HOME)/bin/uv
VENV := .venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export RUNTIME__DLTHUB_TELEMETRY := false
export SQLMESH__DISABLE_ANONYMIZED_ANALYTICS := true

.PHONY: install install-runtime tools demo test test-fast typecheck stack-test lint format bench docs clean

$(UV):
	@mkdir -p $(UV_HOME)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(UV_HOME) uv==0.13.9

# --no-build: wheels only, nothing compiles. --reinstall-package psycopg2-binary: a .venv made before the lock
# dropped the sdist psycopg2 (sqlmesh[postgres]) loses the shared psycopg2/ folder when uv removes it.
# The runtime only (make demo): no test tools in the environment a user runs. --inexact keeps what a test
# install added, so `make demo` after `make test` removes nothing. --compile-bytecode writes every module's
# .pyc once, at install (as pip does): without it a process with PYTHONDONTWRITEBYTECODE set (CI, containers)
# compiles pandas, SQLMesh, Airflow ... from source at every start, seconds per CLI run and Airflow task.
$(VENV)/.installed-runtime: $(UV) pyproject.toml uv.lock
	UV_PYTHON_DOWNLOADS=never $(UV) sync --frozen --no-build --compile-bytecode --no-dev --inexact --reinstall-package psycopg2-binary --python $(PYTHON)
	@touch $@

# The runtime and the dev group (pytest, moto, ruff, playwright ...): make test, lint, format.
$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	UV_PYTHON_DOWNLOADS=never $(UV) sync --frozen --no-build --compile-bytecode --reinstall-package psycopg2-binary --python $(PYTHON)
	@touch $@ $(VENV)/.installed-runtime

install: $(VENV)/.installed

install-runtime: $(VENV)/.installed-runtime

demo: install-runtime
	$(VENV)/bin/cryptoflow demo

# Test-only system tools from Debian's packages: promtool/amtool check monitoring/ (tests/test_monitoring.py),
# a headless Chromium loads the dashboard (tests/test_dashboard_browser.py), a PostgreSQL server (Debian 12's is
# 15), Redis, Prometheus and Alertmanager run the compose topology as processes (tests/test_stack.py).
# Installed only when missing.
TOOL_PACKAGES := $(if $(shell command -v promtool),,prometheus) $(if $(shell command -v amtool),,prometheus-alertmanager) \
  $(if $(shell command -v chromium),,chromium) $(if $(wildcard /usr/lib/postgresql/*/bin/postgres),,postgresql) \
  $(if $(shell command -v redis-server),,redis-server)
tools:
	@if [ -n "$(strip $(TOOL_PACKAGES))" ]; then \
	  command -v apt-get >/dev/null || { echo "missing: $(TOOL_PACKAGES) (install them: the tests need them)" >&2; exit 1; }; \
	  echo "installing Debian's $(strip $(TOOL_PACKAGES)) for the tests"; \
	  $(SUDO) apt-get install -y --no-install-recommends $(TOOL_PACKAGES) >/dev/null \
	  || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y --no-install-recommends $(TOOL_PACKAGES) >/dev/null; }; \
	fi

# the compose topology as native processes (also part of `make test`)
stack-test: install tools
	$(VENV)/bin/python -m pytest -p no:cacheprovider tests/test_stack.py

# pytest exits 5 when it collected no tests: a failure here, never a pass
PYTEST = rc=0; $(VENV)/bin/pytest $(1) $(PYTEST_ARGS) || rc=$$?; \
  if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): failing" >&2; exit 1; fi; exit $$rc

# Everything: lint, types, every test (the end-to-end ones marked slow included). CI's command (.ci/run).
test: install tools lint typecheck
	@$(call PYTEST,)

# The inner loop: lint, types, and the tests not marked slow (unit, model and single-process ones; a few
# minutes on 2 cores). CI runs it first, in its own job.
test-fast: install tools lint typecheck
	@$(call PYTEST,-m "not slow")

# mypy over pipelines/ and app/, strict on pipelines/ingest/ and pipelines/runtime/ (pyproject [tool.mypy])
typecheck: install
	$(VENV)/bin/mypy

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install-runtime
	$(VENV)/bin/cryptoflow bench --json bench.json

docs: install-runtime
	$(VENV)/bin/cryptoflow docs

clean:
	-$(VENV)/bin/cryptoflow db stop
	rm -rf $(VENV) .cryptoflow
