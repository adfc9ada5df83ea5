# asterfleet: the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: deps test test-fast unit lint typecheck demo bench images clean

deps:
	@scripts/ensure-deps.sh

# The whole suite: lint, types, unit tests, then the integration tests with
# real etcd, Kamailio and SIPp. Every service a test needs is started by the
# test itself on free loopback ports and stopped after it, also on failure.
test: deps
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	scripts/run-pytest.sh $(PYTEST_ARGS)

# Everything but the tests marked slow (the podman cluster test and its image builds).
test-fast: deps
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	scripts/run-pytest.sh -m "not slow" $(PYTEST_ARGS)

# asterfleet's OCI images (base, asterfleet, etcd, kamailio-lb, testbox) with
# podman; BUILDER=docker builds them with docker instead.
images: deps
	$(PY) -m asterfleet.ship.images --builder $(or $(BUILDER),podman)

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
