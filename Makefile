# asterfleet: the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: deps test unit lint typecheck demo bench clean

deps:
	@scripts/ensure-deps.sh

# The whole suite: lint, types, unit tests, then the integration tests with
# real etcd, Kamailio and SIPp. Every service a test needs is started by the
# test itself on free loopback ports and stopped after it, also on failure.
test: deps
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	scripts/run-pytest.sh $(PYTEST_ARGS)

unit: deps
	scripts/run-pytest.sh tests/unit $(PYTEST_ARGS)

lint: deps
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: deps
	$(VENV)/bin/mypy

demo: deps
	$(VENV)/bin/asterfleet lab up --calls-per-second 5

bench: deps
	$(PY) bench/convergence.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
