# Set-up is part of every target: a fresh clone needs only Python 3.11 or 3.12 and make.
# The first of these that runs and is 3.11 or 3.12 (pyenv shims may exist and still fail).
PYTHON ?= $(shell for p in python3.12 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' 2>/dev/null \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
SAMPLE := tests/data/BTCUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl,tests/data/ETHUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl

.PHONY: up demo test lint replay-sample bench clean

$(BIN)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "binance-metrics needs Python 3.11 or 3.12 (bytewax 0.21.1)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

up: $(BIN)/.installed  ## the live pipeline on Binance, embedded broker and store
	$(BIN)/binance-metrics up

demo: $(BIN)/.installed  ## the same pipeline, offline, against a local exchange replaying a capture
	$(BIN)/binance-metrics up --exchange replay:$(SAMPLE) --symbols BTCUSDT,ETHUSDT

test: $(BIN)/.installed  ## the whole test suite (real Tansu broker, real chDB)
	$(BIN)/pytest

lint: $(BIN)/.installed  ## ruff (lint and format) and mypy --strict on src, tests, benchmarks, dataflows
	$(BIN)/ruff check src tests dataflows benchmarks
	$(BIN)/ruff format --check src tests dataflows benchmarks
	$(BIN)/mypy

replay-sample: $(BIN)/.installed  ## 48 h of real XRPETH trades -> bars equal to Binance's klines
	$(BIN)/binance-metrics replay tests/data/XRPETH-aggTrades-2019-10-11_2019-10-12.csv
	$(BIN)/binance-metrics bars --symbol XRPETH --format table --limit 10

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/dataflow_bench.py

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
