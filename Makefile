# The two commands (see README): `make demo` runs the main job on the embedded defaults,
# `make test` runs the whole suite. Both create .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DATA   ?= ../shared/data
EXTRAS ?= local,inference,train,gcp,dev
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench venv clean-db help

help:
	@echo "make demo   - embedded Postgres + import + backtest/train/paper-trade demo"
	@echo "make test   - lint + the whole test suite"
	@echo "make bench  - benchmarks (print their figures)"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first, so stable-baselines3 does not pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/stocktrade demo --data $(DATA)

lint: $(STAMP)
	$(VENV)/bin/ruff check shared functions jobs ingester gpu_service tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy shared/stocktrade

test: $(STAMP) lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

bench: $(STAMP)
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-db: $(STAMP)
	$(VENV)/bin/stocktrade db stop
