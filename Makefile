# Every target installs what it needs: `make test` and `make demo` work on a
# fresh machine with Python 3.11+ and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SRC    := tracker projections tests bench

.DEFAULT_GOAL := help
.PHONY: help install test check lint typecheck fmt bench demo stress clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,http]'
	@touch $@

install: $(STAMP) ## create .venv and install the project with its dev extra

test: $(STAMP) ## run the test suite, on every core (pytest-xdist)
	$(BIN)/python -m pytest -q -n auto --dist worksteal

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)

typecheck: $(STAMP) ## mypy --strict on code, tests and benchmarks
	$(BIN)/mypy

check: lint typecheck test ## everything CI checks: lint, types, tests

fmt: $(STAMP) ## fix formatting and autofixable lint
	$(BIN)/ruff format $(SRC)
	$(BIN)/ruff check --fix $(SRC)

bench: $(STAMP) ## run the benchmarks (prints figures and ratios to the SQLite ceilings)
	$(BIN)/python -m bench $(ARGS)

demo: $(STAMP) ## a simulated orchestrator drives many agents; shows what the tracker saw
	$(BIN)/python -m tracker.demo --db demo.db

stress: $(STAMP) ## the crash, chaos, multi-process and packaging tests, long (200 crash trials, 60 s of chaos)
	TRACKER_CRASH_TRIALS=$${TRACKER_CRASH_TRIALS:-200} TRACKER_CHAOS_SECONDS=$${TRACKER_CHAOS_SECONDS:-60} \
		$(BIN)/python -m pytest -q -m slow

clean: ## remove the virtualenv, caches and demo database
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo.db demo.db-wal demo.db-shm build *.egg-info
