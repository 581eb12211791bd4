# perennial — developer entry points. Everything runs inside ./.venv, created on first use.
#   make demo    install, then run the main job (compare 5 strategies on split-mnist, 3 seeds)
#   make test    install, then run the test suite
#   make lint    ruff check + format check
#   make bench   speed benchmarks (bench/overhead.py, continual_eval_overhead.py, lm_throughput.py, ema_overhead.py, tta_overhead.py)
#   make reproduce  the strategy table of docs/results.md (bench/reproduce.py, about an hour on 2 cores)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint format bench reproduce lock clean

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e ".[dev,all]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/perennial compare --benchmark split-mnist --strategies naive,ewc,lwf,replay,joint --seeds 3

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

format: $(STAMP)
	$(BIN)/ruff format src tests bench examples
	$(BIN)/ruff check --fix src tests bench examples

bench: $(STAMP)
	$(BIN)/python bench/overhead.py --json bench/results/overhead.json
	$(BIN)/python bench/continual_eval_overhead.py --json bench/results/continual_eval_overhead.json
	$(BIN)/python bench/lm_throughput.py --json bench/results/lm_throughput.json
	$(BIN)/python bench/ema_overhead.py --json bench/results/ema_overhead.json
	$(BIN)/python bench/tta_overhead.py --json bench/results/tta_overhead.json

reproduce: $(STAMP)
	$(BIN)/python bench/reproduce.py

lock: $(STAMP)
	{ grep '^#' requirements/constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > requirements/constraints.tmp
	mv requirements/constraints.tmp requirements/constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
