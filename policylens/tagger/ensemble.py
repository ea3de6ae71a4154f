"""How the encoder's and the lexical model's logits become one probability per label.

Two combiners, stored in policylens.json under "stack":
- `ProbabilityMean` (the default): p = (sigmoid(z_encoder) + sigmoid(z_lexical)) / 2. Nothing is
  fitted, so nothing is fitted to noise, and a user's new domain needs no data to combine.
  In 5-fold CV it matched or beat the fitted stack (docs/tagger.md).
- `Stack`: a logistic stack per label, p = sigmoid(a·z_encoder + b·z_lexical + c), its weights
  chosen on out-of-fold predictions (training/stack.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from policylens.calibration import sigmoid

INPUTS = ("encoder", "lexical")
COMBINES = ("mean", "logistic")


@dataclass
class Stack:
    """Per-label weights of each input's logit, and a bias."""

    encoder: list[float]
    lexical: list[float]
    bias: list[float]

    def __post_init__(self) -> None:
        if not len(self.encoder) == len(self.lexical) == len(self.bias):
            raise ValueError(
                f"stack weights need one value per label: encoder {len(self.encoder)}, "
                f"lexical {len(self.lexical)}, bias {len(self.bias)}"
            )
        values = np.asarray([self.encoder, self.lexical, self.bias], dtype=float)
        if not np.isfinite(values).all():
            raise ValueError("stack weights must be finite numbers")

    def __len__(self) -> int:
        return len(self.bias)

    def probs(self, encoder_logits: np.ndarray, lexical_logits: np.ndarray) -> np.ndarray:
        z = (np.asarray(encoder_logits, dtype=np.float64) * np.asarray(self.encoder)
             + np.asarray(lexical_logits, dtype=np.float64) * np.asarray(self.lexical) + np.asarray(self.bias))
        return sigmoid(z).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [round(float(x), 6) for x in v] for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, obj: dict) -> "Stack":
        if not isinstance(obj, dict):
            raise ValueError(f"stack must be an object, got {type(obj).__name__}")
        missing = [k for k in (*INPUTS, "bias") if k not in obj]
        if missing:
            raise ValueError(f"stack lacks {missing}")
        return cls(**{k: [float(x) for x in obj[k]] for k in (*INPUTS, "bias")})


@dataclass
class ProbabilityMean:
    """The mean of the two models' probabilities, per label."""

    n_labels: int

    def __post_init__(self) -> None:
        if self.n_labels < 1:
            raise ValueError(f"a probability mean needs at least one label, got {self.n_labels}")

    def __len__(self) -> int:
        return self.n_labels

    def probs(self, encoder_logits: np.ndarray, lexical_logits: np.ndarray) -> np.ndarray:
        encoder, lexical = np.asarray(encoder_logits, dtype=np.float64), np.asarray(lexical_logits, dtype=np.float64)
        return ((sigmoid(encoder) + sigmoid(lexical)) / 2).astype(np.float32)

    def to_dict(self) -> dict:
        return {"combine": "mean", "labels": self.n_labels}


Combiner = Stack | ProbabilityMean


def combiner_from_dict(obj: dict) -> Combiner:
    """The combiner policylens.json describes; a dict without "combine" is a logistic stack (older models)."""
    if not isinstance(obj, dict):
        raise ValueError(f"stack must be an object, got {type(obj).__name__}")
    combine = obj.get("combine", "logistic")
    if combine == "mean":
        try:
            return ProbabilityMean(int(obj["labels"]))
        except (KeyError, TypeError, ValueError):
            raise ValueError("a mean combiner needs its number of labels") from None
    if combine != "logistic":
        raise ValueError(f"unknown combine {combine!r}; choose from {list(COMBINES)}")
    return Stack.from_dict(obj)
