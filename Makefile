# Two commands for a newcomer:  `make demo` (the main job) and `make test` (everything).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SERVICES_DIR := .services

.PHONY: demo live-demo test test-tools lint format services stop-services clean compiled pure

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# The demo's chart needs the lab extra (matplotlib); the demo itself runs on the core alone.
$(VENV)/.lab: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[lab]"
	touch $@

## demo: install the package (with the lab's charts) in .venv and run the embedded demo
## (writes out/demo/)
demo: $(VENV)/.lab
	$(BIN)/stockshift demo --out out/demo

## live-demo: the whole loop on real parts (Tansu, Redis, PostgreSQL, run, execute and the
## reference WMS), ending with the WMS's stock compared with stockshift's positions
live-demo: $(VENV)/.dev
	$(BIN)/stockshift demo --live

## test: install test dependencies, start the services the suite needs, run every test
## (the suite's harness starts Tansu and, when none answers, Redis by itself)
test: $(VENV)/.dev test-tools
	$(BIN)/pytest

## test-tools: Prometheus and promtool (Debian package) for the observability tests and
## Chromium (Debian package) for the console's browser tests; where they cannot be installed
## those tests are skipped with the reason
test-tools:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && \
	        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; }; } \
	    && echo "installed prometheus and promtool (Debian package)" \
	    || echo "could not install prometheus: observability tests will be skipped"; \
	  else echo "promtool missing and not root: observability tests will be skipped"; fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && \
	        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; }; } \
	    && echo "installed chromium (Debian package)" \
	    || echo "could not install chromium: browser tests will be skipped"; \
	  else echo "chromium missing and not root: browser tests will be skipped"; fi; }

## compiled: compile the decision core in place with mypyc (setup.py; the image does the same);
## `make pure` removes it again. Tests run the pure core unless you do this; the compiled
## one is checked against it by tests/integration/test_compiled_core.py either way.
compiled: $(VENV)/.dev
	STOCKSHIFT_COMPILE=1 $(BIN)/python setup.py -q build_ext --inplace

pure:
	rm -rf build *__mypyc*.so operators/*.so state/*.so

## lint: ruff (lint + format check) and mypy (strict on operators/ and state/; records
## checked as frozen: tests/support/typecheck.py)
lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m tests.support.typecheck

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## services: a local broker (Tansu, port 9092) and Redis (6379, if none runs) for trying `stockshift run`
services: $(VENV)/.dev
	mkdir -p $(SERVICES_DIR)
	$(BIN)/python -m adapters.lab.devservices start --dir $(SERVICES_DIR)

stop-services:
	$(BIN)/python -m adapters.lab.devservices stop --dir $(SERVICES_DIR)

clean:
	rm -rf $(VENV) out $(SERVICES_DIR) *.egg-info build *__mypyc*.so operators/*.so state/*.so
