# One entry point per task; see README.md.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup run test test-slow bench clean

# 1. install everything (CPU torch from the pinned wheel, then the project)
setup:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[serve,dev]"

# 2. the main job
run:
	$(BIN)/policylens segment seeds/ --table

# 3. the tests (what CI runs)
test:
	$(BIN)/python -m pytest -q

test-slow:
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) models/backbones models/taggers .pytest_cache
