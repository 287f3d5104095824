# The two commands of the README:
#   make up     run a local cluster on the embedded SQLite default
#               (options of imctl up in ARGS: make up ARGS="--base-port 9000 --gateways 3")
#   make test   lint, type-check and run every test (needs MariaDB and Redis, see README)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

ARGS ?=

.PHONY: up test lint proto bench clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

up: $(BIN)/.installed
	$(BIN)/imctl up $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# Two workers for most tests (their time is mostly spent waiting on server
# processes), then the serial ones alone (tests/conftest.py says which).
test: lint
	$(BIN)/pytest -n 2 --dist loadgroup -m "not serial"
	$(BIN)/pytest -m serial

proto: $(BIN)/.installed
	$(BIN)/python scripts/gen_proto.py

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/load.py

clean:
	rm -rf $(VENV) var build *.egg-info
