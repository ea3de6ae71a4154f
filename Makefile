# One entry point per task; see README.md.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup run test test-slow clean

# 1. install everything (CPU torch from the pinned wheel, then the project)
setup:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[serve,dev]"

# 2. the main job: tag and summarise the seeds plus a folder of new documents
BACKBONE := models/backbones/multilingual-e5-small
TAGGER   := models/taggers/default
CORPUS   ?= ../shared/data/corpus_docs.jsonl
INBOX    ?= out/inbox

SUMMARIZER := models/summarizer

run: $(TAGGER)/policylens.json $(SUMMARIZER)/summarizer.json $(INBOX)
	$(BIN)/policylens tag seeds/ $(INBOX) --model $(TAGGER) --format html --out out/report.html

$(BACKBONE)/config.json:
	$(BIN)/policylens backbone build

# about 13 minutes on 2 quiet CPU cores (python -m training.bench_tagger: 767 s)
$(TAGGER)/policylens.json: $(BACKBONE)/config.json
	$(BIN)/policylens train --out $(TAGGER) --epochs 4 --learning-rate 1e-4

# trains the sentence scorer on the shared news->headline pairs (cached embeddings; ~20 min the first time)
$(SUMMARIZER)/summarizer.json: $(BACKBONE)/config.json
	$(BIN)/policylens evaluate-summaries --out out/summaries.md

# new documents to read this week: by default a sample of the shared corpus
$(INBOX):
	$(BIN)/policylens export $(CORPUS) --out $(INBOX) --source policy --source gov_work_report --source news --limit 2

# 3. the tests (what CI runs)
test:
	$(BIN)/python -m pytest -q

test-slow:
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) models/backbones models/taggers out .pytest_cache
