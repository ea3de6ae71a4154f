"""Where the project's data, models and the shared third-party data live.

Everything can be moved with environment variables so an installed copy works
outside the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("POLICYLENS_DATA", REPO_ROOT / "data"))
MODELS_DIR = Path(os.environ.get("POLICYLENS_MODELS", REPO_ROOT / "models"))
SEEDS_DIR = REPO_ROOT / "seeds"
# Third-party texts beside the repo: read at run time, never copied in.
SHARED_DIR = Path(os.environ.get("POLICYLENS_SHARED", REPO_ROOT.parent / "shared"))
SILVER_PATH = SHARED_DIR / "data" / "train_silver.jsonl"
CORPUS_PATH = SHARED_DIR / "data" / "corpus_docs.jsonl"
HEADLINES_PATH = SHARED_DIR / "data" / "summarization" / "news_headlines.jsonl"
SEED_ANNOTATIONS_PATH = DATA_DIR / "seed_annotations.jsonl"
