"""How the encoder's and the lexical model's logits become one probability per label.

A logistic stack per label, p = sigmoid(a·z_encoder + b·z_lexical + c): it both
weights the two models and calibrates the result. Its weights are chosen on
out-of-fold predictions (training/stack.py) and stored in policylens.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from policylens.calibration import sigmoid

INPUTS = ("encoder", "lexical")


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
