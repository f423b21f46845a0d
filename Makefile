# Phaseguard developer entry points. Every target is idempotent and installs what it needs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: install test lint typecheck unit run bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@deploy/ensure-redis.sh
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict worker contracts

test: lint typecheck
	$(BIN)/pytest --benchmark-disable

unit: $(STAMP)
	$(BIN)/pytest tests/unit --benchmark-disable -q

bench: $(STAMP)
	$(BIN)/pytest tests/bench --benchmark-only --benchmark-min-rounds=5 --benchmark-columns=min,median,max,rounds

run: $(STAMP)
	@deploy/run-stack.sh

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
