# Two commands do everything on a fresh clone: `make run` (the main job) and `make test`.
# Each performs the set-up it needs first; `make setup` is that shared step.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup run test test-slow clean

# install everything once (CPU torch from the pinned wheel, then the project); the stamp
# is rebuilt when pyproject.toml changes
SETUP_STAMP := $(VENV)/.setup-done
setup: $(SETUP_STAMP)
$(SETUP_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[serve,dev]"
	touch $@

# the main job: tag and summarise the seeds plus a folder of new documents.
# Model paths follow POLICYLENS_MODELS (default models/), like every policylens command.
MODELS     ?= $(or $(POLICYLENS_MODELS),models)
BACKBONE   := $(MODELS)/backbones/multilingual-e5-small
TAGGER     := $(MODELS)/taggers/default
SUMMARIZER := $(MODELS)/summarizer
CORPUS     ?= ../shared/data/corpus_docs.jsonl
INBOX      ?= out/inbox

run: setup $(TAGGER)/policylens.json $(SUMMARIZER)/summarizer.json out/summaries.md $(INBOX)
	$(BIN)/policylens tag seeds/ $(INBOX) --model $(TAGGER) --format html --out out/report.html
	@echo "report: out/report.html; review desk: $(BIN)/policylens serve --model $(TAGGER) --registry $(MODELS)/registry/CURRENT, then open http://127.0.0.1:8000/"

$(BACKBONE)/config.json: | setup
	$(BIN)/policylens backbone build

# the encoder + TF-IDF ensemble (data/tagger_stack.json); 13 minutes on 2 CPU cores, ONNX export included
$(TAGGER)/policylens.json: $(BACKBONE)/config.json
	$(BIN)/policylens train --out $(TAGGER)

# the sentence scorer, trained on the shared news->headline pairs and the 120 policy documents with
# written summaries; exports the int8 ONNX sentence encoder first (cached embeddings; ~10 minutes the first time)
$(SUMMARIZER)/summarizer.json: $(BACKBONE)/config.json
	$(BIN)/policylens train-summarizer --out $(SUMMARIZER)

# held-out news, then 5-fold cross-validation on the policy documents (one scorer per fold; ~10 minutes)
out/summaries.md: $(SUMMARIZER)/summarizer.json
	$(BIN)/policylens evaluate-summaries --summarizer $(SUMMARIZER) --folds 5 --out $@

# new documents to read this week: by default a sample of the shared corpus
$(INBOX): | setup
	$(BIN)/policylens export $(CORPUS) --out $(INBOX) --source policy --source gov_work_report --source news --limit 2

# the tests (what CI runs: .ci/run)
test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) models/backbones models/taggers models/summarizer models/encoders models/cache out .pytest_cache
