"""Fine-tuning the BERT paragraph tagger, split by concern.

config: TaggerConfig, TrainResult; data: fingerprint, windows, batch order;
cache: frozen lower layers computed once; model: loading, loss, optimiser;
loop: train_tagger and its checkpoints.
"""

from __future__ import annotations

from training.tagger.cache import LowerLayerCache
from training.tagger.config import TaggerConfig, TrainResult
from training.tagger.data import data_fingerprint
from training.tagger.loop import CHECKPOINT_DIR, train_tagger
from training.tagger.model import load_for_training

__all__ = [
    "CHECKPOINT_DIR",
    "LowerLayerCache",
    "TaggerConfig",
    "TrainResult",
    "data_fingerprint",
    "load_for_training",
    "train_tagger",
]
