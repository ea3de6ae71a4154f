"""Where the project's data, models and the shared third-party data live: the one source of paths.

Everything can be moved with environment variables so an installed copy works
outside the repository: POLICYLENS_DATA, POLICYLENS_MODELS (every model default
below follows it), POLICYLENS_BACKBONE, POLICYLENS_SHARED.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("POLICYLENS_DATA", REPO_ROOT / "data"))
MODELS_DIR = Path(os.environ.get("POLICYLENS_MODELS", REPO_ROOT / "models"))
SEEDS_DIR = REPO_ROOT / "seeds"

BACKBONE_DIR = MODELS_DIR / "backbones" / "multilingual-e5-small"  # POLICYLENS_BACKBONE overrides it at run time
TAGGER_DIR = MODELS_DIR / "taggers" / "default"
SUMMARIZER_DIR = MODELS_DIR / "summarizer"
SUMMARIZER_CACHE_DIR = MODELS_DIR / "cache" / "summarizer"
REGISTRY_DIR = MODELS_DIR / "registry"
CV_DIR = MODELS_DIR / "cv"  # cross-validation experiments: OOF scores and reports
STORE_DIR = DATA_DIR / "store"

# Third-party texts beside the repo: read at run time, never copied in.
SHARED_DIR = Path(os.environ.get("POLICYLENS_SHARED", REPO_ROOT.parent / "shared"))
SILVER_PATH = SHARED_DIR / "data" / "train_silver.jsonl"
SILVER_B4_PATH = SHARED_DIR / "data" / "train_silver_b4.jsonl"  # noisier, opt-in: extra training rows only
CORPUS_PATH = SHARED_DIR / "data" / "corpus_docs.jsonl"
HEADLINES_PATH = SHARED_DIR / "data" / "summarization" / "news_headlines.jsonl"
SEED_ANNOTATIONS_PATH = DATA_DIR / "seed_annotations.jsonl"
# the project's second, adjudicated reading of silver rows: correction rows (id + labels, no text)
SILVER_CORRECTIONS_PATH = DATA_DIR / "silver_corrections.jsonl"
# the independent second reading those corrections adjudicated (id, labels; `control` rows were sure rows)
SILVER_SECOND_READING_PATH = DATA_DIR / "silver_second_reading.jsonl"
