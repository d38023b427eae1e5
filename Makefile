# The README's two commands: `make demo` (set up + main job) and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
DEMO_HOME ?= $(CURDIR)/.demo

.PHONY: setup demo test test-quick lint lab bench system-deps clean

$(BIN)/sysmail-ops: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'setuptools>=69' wheel
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

## setup: create .venv and install the toolkit with its test tools
setup: $(BIN)/sysmail-ops

## demo: the main job on the embedded defaults (DuckDB file + local capture server)
demo: setup
	$(BIN)/sysmail-ops --home $(DEMO_HOME) demo

## lint: ruff (lint + format check), mypy and the import contracts (import-linter)
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## test: lint, type-check and the whole test suite (in 2 processes: most tests wait on servers)
test: lint
	$(BIN)/pytest -n 2

## test-quick: the suite without the slow tests (browser, crash loops, many kernels)
test-quick: setup
	$(BIN)/pytest -n 2 -m "not slow" -x -q

## lab: JupyterLab on notebooks/ with the demo workspace
lab: setup
	SYSMAIL_HOME=$(DEMO_HOME) $(BIN)/jupyter lab notebooks/

## bench: the sending and subscription benchmarks (need Postfix's smtp-sink: apt-get install postfix)
bench: setup
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/bench_send.py
	$(BIN)/python bench/bench_subscriptions.py
	$(BIN)/python bench/bench_cli.py
	$(BIN)/python bench/bench_analytics.py

## system-deps: the Debian packages the tests need (run as root)
system-deps:
	.ci/system-deps

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache .mypy_cache .ruff_cache
