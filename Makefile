# Two commands do everything on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLAUDE := .tools/node_modules/.bin/claude

.PHONY: setup demo test lint unit bench clean

setup: .stamp-system $(BIN)/voice-assistant $(CLAUDE)
	$(BIN)/python scripts/fetch_smart_turn.py

.stamp-system: scripts/setup-system.sh
	bash scripts/setup-system.sh
	touch $@

$(BIN)/voice-assistant: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(CLAUDE):
	npm install --silent --no-audit --no-fund --prefix .tools @anthropic-ai/claude-code

demo: setup
	$(BIN)/voice-assistant demo

lint: setup
	$(BIN)/ruff check core voice tests bench
	$(BIN)/ruff format --check core voice tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python scripts/check_aarch64.py
	$(BIN)/pytest

bench: setup
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .tools .stamp-system
