# Everything runs from a project-local virtualenv that the first target creates.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test lint demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

venv: $(STAMP)

## test: the whole suite (unit, integration against real local servers, end to end with real processes)
test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest

## lint: ruff, ruff format check, mypy --strict, hadolint on the Dockerfile
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@if [ -f Dockerfile ]; then $(BIN)/hadolint Dockerfile; fi

## demo: the whole system on an embedded stack (nothing to install but Python)
demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m backfill_doubles.demo

## bench: the benchmark suite (own nats-server and upstreams; table on stdout, JSON in bench/results/)
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,demo,bench]'
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
