"""The lexical half of the tagger: character n-gram TF-IDF + one linear model per label.

It catches what the encoder misses on exact domain terms (碳达峰, 产业链, 专精特新)
and costs almost nothing to run. Its state is a vocabulary (JSON) and three
arrays (safetensors): loading never runs code, and a loaded model scores exactly
as the one that was fitted, since the TF-IDF weighting is applied here from the
stored idf instead of by a refitted vectoriser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policylens.chinese import normalize
from policylens.io import InputError, atomic_write, write_json

FORMAT = "policylens-lexical/1"
CONFIG_FILE = "lexical.json"
WEIGHTS_FILE = "lexical.safetensors"


@dataclass
class LexicalModel:
    """sublinear tf (1 + log tf) × idf, L2-normalised rows (sklearn's TfidfVectorizer formula), then `X @ coef.T + intercept`."""

    labels: list[str]
    vocabulary: list[str]  # term i of the feature space
    idf: np.ndarray  # [terms]
    coef: np.ndarray  # [labels, terms]
    intercept: np.ndarray  # [labels]
    ngram_range: tuple[int, int] = (1, 3)

    def __post_init__(self) -> None:
        n_terms, n_labels = len(self.vocabulary), len(self.labels)
        if self.idf.shape != (n_terms,) or self.coef.shape != (n_labels, n_terms) or self.intercept.shape != (n_labels,):
            raise ValueError(
                f"lexical model shapes do not fit: {n_terms} terms, {n_labels} labels, idf {self.idf.shape}, "
                f"coef {self.coef.shape}, intercept {self.intercept.shape}"
            )
        self._counter = None

    def features(self, texts: Sequence[str]):
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.preprocessing import normalize as l2_normalize

        if self._counter is None:
            vocabulary = {term: i for i, term in enumerate(self.vocabulary)}
            self._counter = CountVectorizer(
                analyzer="char", ngram_range=tuple(self.ngram_range), vocabulary=vocabulary, dtype=np.float64
            )
        X = self._counter.transform([normalize(t) for t in texts]).tocsr()
        X.data = np.log(X.data) + 1.0
        X = X.multiply(self.idf[None, :]).tocsr()
        return l2_normalize(X)

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits [len(texts), labels]."""
        if not len(texts):
            return np.zeros((0, len(self.labels)))
        return np.asarray(self.features(texts) @ self.coef.T) + self.intercept

    def save(self, directory: str | Path) -> None:
        from safetensors.numpy import save

        directory = Path(directory)
        write_json(directory / CONFIG_FILE, {
            "format": FORMAT, "labels": self.labels, "ngram_range": list(self.ngram_range), "vocabulary": self.vocabulary,
        })
        arrays = {"idf": self.idf, "coef": self.coef, "intercept": self.intercept}
        with atomic_write(directory / WEIGHTS_FILE, "wb") as handle:
            handle.write(save({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}))

    @classmethod
    def load(cls, directory: str | Path) -> "LexicalModel":
        """Read lexical.json + lexical.safetensors; any problem is an InputError naming the file."""
        import json

        from safetensors.numpy import load_file

        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise InputError(f"{path}: missing (the tagger's lexical model)")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"{config_path}: not valid JSON ({err})") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise InputError(f"{config_path}: not a {FORMAT} file")
        try:
            arrays = load_file(str(weights_path))
            return cls(
                labels=list(config["labels"]), vocabulary=list(config["vocabulary"]), idf=arrays["idf"],
                coef=arrays["coef"], intercept=arrays["intercept"], ngram_range=tuple(config["ngram_range"]),
            )
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error type on a bad file
            raise InputError(f"{weights_path}: unreadable lexical model ({type(err).__name__}: {err})") from None
