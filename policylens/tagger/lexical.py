"""The lexical half of the tagger: character (and word) n-gram TF-IDF + one linear model per label.

It catches what the encoder misses on exact domain terms (碳达峰, 产业链, 专精特新)
and costs almost nothing to run. Its state is a vocabulary (JSON) and three
arrays (safetensors): loading never runs code, and a loaded model scores exactly
as the one that was fitted, since the TF-IDF weighting is applied here from the
stored idf instead of by a refitted vectoriser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from policylens.chinese import normalize, word_ngrams
from policylens.io import InputError, atomic_write, write_json

FORMAT = "policylens-lexical/2"
FORMATS = ("policylens-lexical/1", FORMAT)  # /1: character n-grams only
CONFIG_FILE = "lexical.json"
WEIGHTS_FILE = "lexical.safetensors"


@dataclass
class LexicalModel:
    """sublinear tf (1 + log tf) × idf, L2-normalised rows (sklearn's TfidfVectorizer formula), then `X @ coef.T + intercept`.

    With a word vocabulary the features are two blocks, each L2-normalised on its own: the
    character n-grams, then the word n-grams (jieba words, `policylens.chinese.word_ngrams`).
    """

    labels: list[str]
    vocabulary: list[str]  # character n-gram i of the feature space
    idf: np.ndarray  # [terms]: the character n-grams', then the word n-grams'
    coef: np.ndarray  # [labels, terms]
    intercept: np.ndarray  # [labels]
    ngram_range: tuple[int, int] = (1, 3)
    word_vocabulary: list[str] = field(default_factory=list)  # word n-gram i, after the character n-grams
    word_ngram_range: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if bool(self.word_vocabulary) != (self.word_ngram_range is not None):
            raise ValueError("a lexical model needs both a word vocabulary and a word n-gram range, or neither")
        n_terms, n_labels = len(self.vocabulary) + len(self.word_vocabulary), len(self.labels)
        if self.idf.shape != (n_terms,) or self.coef.shape != (n_labels, n_terms) or self.intercept.shape != (n_labels,):
            raise ValueError(
                f"lexical model shapes do not fit: {n_terms} terms, {n_labels} labels, idf {self.idf.shape}, "
                f"coef {self.coef.shape}, intercept {self.intercept.shape}"
            )
        self._counters = None

    def _make_counters(self) -> list:
        from sklearn.feature_extraction.text import CountVectorizer

        counters = [CountVectorizer(analyzer="char", ngram_range=tuple(self.ngram_range), dtype=np.float64,
                                    vocabulary={term: i for i, term in enumerate(self.vocabulary)})]
        if self.word_vocabulary:
            word_range = tuple(self.word_ngram_range)
            counters.append(CountVectorizer(analyzer=lambda text: word_ngrams(text, word_range), dtype=np.float64,
                                            vocabulary={term: i for i, term in enumerate(self.word_vocabulary)}))
        return counters

    def features(self, texts: Sequence[str]):
        from scipy.sparse import hstack
        from sklearn.preprocessing import normalize as l2_normalize

        if self._counters is None:
            self._counters = self._make_counters()
        texts = [normalize(t) for t in texts]
        blocks, start = [], 0
        for counter in self._counters:
            X = counter.transform(texts).tocsr()
            X.data = np.log(X.data) + 1.0
            idf = self.idf[start : start + X.shape[1]]
            start += X.shape[1]
            blocks.append(l2_normalize(X.multiply(idf[None, :]).tocsr()))
        return blocks[0] if len(blocks) == 1 else hstack(blocks).tocsr()

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits [len(texts), labels]."""
        if not len(texts):
            return np.zeros((0, len(self.labels)))
        return np.asarray(self.features(texts) @ self.coef.T) + self.intercept

    def save(self, directory: str | Path) -> None:
        from safetensors.numpy import save

        directory = Path(directory)
        config = {"format": FORMAT, "labels": self.labels, "ngram_range": list(self.ngram_range), "vocabulary": self.vocabulary}
        if self.word_vocabulary:
            config.update(word_ngram_range=list(self.word_ngram_range), word_vocabulary=self.word_vocabulary)
        write_json(directory / CONFIG_FILE, config)
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
        if not isinstance(config, dict) or config.get("format") not in FORMATS:
            raise InputError(f"{config_path}: not a {FORMAT} file")
        try:
            arrays = load_file(str(weights_path))
            return cls(
                labels=list(config["labels"]), vocabulary=list(config["vocabulary"]), idf=arrays["idf"],
                coef=arrays["coef"], intercept=arrays["intercept"], ngram_range=tuple(config["ngram_range"]),
                word_vocabulary=list(config.get("word_vocabulary", [])),
                word_ngram_range=tuple(config["word_ngram_range"]) if config.get("word_ngram_range") else None,
            )
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error type on a bad file
            raise InputError(f"{weights_path}: unreadable lexical model ({type(err).__name__}: {err})") from None
