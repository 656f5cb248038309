# Everything runs from a project-local virtualenv that the first target creates.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The runtime dependencies, every one pinned: what the image installs, and the dev venv's constraints.
LOCK   := requirements/runtime.lock

.PHONY: venv test lint demo bench lock image-test clean

# Constrained by the lock's versions (its hashes left out: a hash in a constraints file makes pip want one
# for every package), so the tests run against the very versions the image ships.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	sed -e '/^[[:space:]]*--hash=/d' -e 's/[[:space:]]*\\$$//' $(LOCK) > $(VENV)/constraints.txt
	$(BIN)/python -m pip install --quiet -e '.[test,demo]' -c $(VENV)/constraints.txt
	touch $(STAMP)

venv: $(STAMP)

## test: the whole suite (unit, integration against real local servers, end to end with real processes),
## in TEST_JOBS parallel processes (each with its own nats-server and servers; most tests wait on I/O)
TEST_JOBS ?= 4
test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -n $(TEST_JOBS) $(PYTEST_ARGS)

## lint: ruff, ruff format check, mypy --strict, hadolint on the Dockerfile
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@if [ -f Dockerfile ]; then $(BIN)/hadolint Dockerfile; fi

## demo: the whole system on an embedded stack (nothing to install but Python)
demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m backfill_doubles.demo

## image-test: build the image from the Dockerfile and run the container tests (root; Debian's buildah,
## podman, runc and mmdebstrap, installed when missing; deploy/image-ci.sh)
image-test: $(STAMP)
	deploy/image-ci.sh

## bench: the benchmark suite (own nats-server and upstreams; table on stdout, JSON in bench/results/)
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,demo,bench]' -c $(LOCK)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m bench $(BENCH_ARGS)

## lock: re-resolve the runtime dependencies (no extras) in a clean CPython 3.11 venv, pin them all and
## hash every wheel the image may install (requirements/lock.py; the package index's JSON API)
lock: $(STAMP)
	$(BIN)/python requirements/lock.py --python $(PYTHON)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
