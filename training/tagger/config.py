"""What decides a tagger training run, and what a run hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TaggerConfig:
    """Everything that decides a training run; stored with the model."""

    backbone: str | None = None  # local dir or hub id; None = the converted multilingual-e5-small
    max_length: int = 256
    stride: int = 64
    prefix: str = "passage: "
    epochs: int = 2  # 5-fold CV of the default (docs/tagger.md); 4 cost twice the time
    batch_size: int = 16
    # 5-fold CV: 2e-4 beats 1e-4 by +0.013 ± 0.014 in the ensemble (5/5 folds) at the same cost; 3e-4 overshoots
    # (docs/tagger.md)
    learning_rate: float = 2e-4
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    freeze_embeddings: bool = True  # most of e5's 118M parameters; 3-4x less optimiser work on CPU
    # Freeze the lowest N transformer layers; with BERT their outputs are computed once and
    # cached, so each epoch only runs the top layers (about 3x faster on CPU for 8 of 12).
    freeze_layers: int = 8
    pos_weight: bool = True  # sqrt(neg/pos) per label against class imbalance
    patience: int = 2  # epochs without dev macro-F1 improvement before stopping
    evals_per_epoch: int = 2
    seed: int = 13
    num_threads: int | None = None
    max_steps: int | None = None  # cap for smoke tests
    # the encoder + TF-IDF ensemble (policylens/tagger/ensemble.py); its combiner (mean or logistic stack) and
    # thresholds come from a recipe chosen on out-of-fold predictions (default: data/tagger_stack.json)
    ensemble: bool = True
    stack_recipe: str | None = None  # None: data/tagger_stack.json when present; "": none, a logistic stack fitted on dev
    # the lexical model also learns from the noisier batch 4 (../shared/data/train_silver_b4.jsonl) when it is there:
    # +0.006 TF-IDF macro-F1 in 5-fold CV, supply_chain +0.018 (docs/tagger.md)
    lexical_with_b4: bool = True
    # the lexical model reads jieba word 1-2-grams beside its character 1-3-grams: +0.005 ± 0.004 macro-F1 for the
    # ensemble in 5-fold CV (5/5 folds; docs/tagger.md); None: characters only, as the TF-IDF baseline
    lexical_word_ngrams: tuple[int, int] | None = (1, 2)
    # the encoder too: +0.009 ± 0.005 macro-F1 for the ensemble in 5-fold CV (5/5 folds), at ~1.4x the training time
    # (docs/tagger.md)
    encoder_with_b4: bool = True
    # the encoder trains at 0.5 on the tags a second reading of the silver set disputed with its first annotator
    # (data/silver_second_reading.jsonl); dev and test keep the adjudicated labels. Measured, no gain: −0.002 ± 0.008
    # against the corrected labels (benchmarks.tagger_variants soft-disputes, docs/tagger.md)
    soft_disputes: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not 0 < self.learning_rate < 1 or not 0 < self.head_learning_rate < 1:
            raise ValueError("learning rates must be in (0, 1)")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0,1), got {self.warmup_ratio}")
        if self.lexical_word_ngrams is not None:
            self.lexical_word_ngrams = tuple(self.lexical_word_ngrams)
            if len(self.lexical_word_ngrams) != 2 or not 1 <= self.lexical_word_ngrams[0] <= self.lexical_word_ngrams[1]:
                raise ValueError(f"lexical_word_ngrams must be (low, high) with 1 <= low <= high, got {self.lexical_word_ngrams}")
        if self.freeze_layers < 0 or self.patience < 0 or self.evals_per_epoch < 1:
            raise ValueError("freeze_layers, patience must be >= 0 and evals_per_epoch >= 1")


@dataclass
class TrainResult:
    """Where the model went, its dev/test metrics and the per-evaluation history."""

    model_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    test_logits: Any = None  # raw pooled logits of the test rows (np.ndarray), when there was a test split
    test_probs: Any = None  # the saved model's probabilities of the test rows, computed in memory
