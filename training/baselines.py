"""Two baselines the neural tagger must beat, with the scikit-learn API.

- TfidfBaseline: character n-gram TF-IDF + one logistic regression per label,
  per-label thresholds tuned on dev. Saved as JSON + `.npz` (no pickle), so
  loading a model directory never executes code.
- KeywordBaseline: a label applies when the text contains one of its
  taxonomy keywords; the floor any learned model has to clear.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from policylens.calibration import sigmoid
from policylens.chinese import normalize
from policylens.io import atomic_write, write_json
from policylens.taxonomy import Taxonomy
from training.thresholds import apply_thresholds, tune_thresholds

FORMAT = "policylens-tfidf-baseline/1"


class TfidfBaseline:
    """Char 1-3-gram TF-IDF + one-vs-rest LogisticRegression (balanced classes).

    Characters need no word segmenter, and 2-3-grams already catch the
    domain terms (碳达峰, 产业链, 中小企业). TF-IDF weighting is applied here from
    the stored vocabulary and idf, so a saved model reproduces exactly.
    """

    def __init__(
        self,
        C: float = 4.0,
        ngram_range: tuple[int, int] = (1, 3),
        min_df: int = 2,
        label_names: Sequence[str] | None = None,
    ) -> None:
        self.C = C
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.label_names = label_names

    # -- features ---------------------------------------------------------
    def _counter(self):
        from sklearn.feature_extraction.text import CountVectorizer

        if getattr(self, "_counter_cache", None) is None:
            self._counter_cache = CountVectorizer(
                analyzer="char", ngram_range=tuple(self.ngram_range), vocabulary=self.vocabulary_, dtype=np.float64
            )
        return self._counter_cache

    def _features(self, texts: Sequence[str]):
        """sublinear tf (1 + log tf) * idf, then L2-normalised rows: sklearn's TfidfVectorizer formula."""
        from sklearn.preprocessing import normalize as l2_normalize

        X = self._counter().transform([normalize(t) for t in texts]).tocsr()
        X.data = np.log(X.data) + 1.0
        X = X.multiply(self.idf_[None, :]).tocsr()
        return l2_normalize(X)

    # -- sklearn API --------------------------------------------------------
    def fit(self, texts: Sequence[str], Y, dev_texts: Sequence[str] | None = None, dev_Y=None) -> "TfidfBaseline":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        Y = np.asarray(Y) > 0
        n_labels = Y.shape[1]
        self.label_names_ = list(self.label_names) if self.label_names else [f"label_{j}" for j in range(n_labels)]
        vectorizer = TfidfVectorizer(
            analyzer="char", ngram_range=tuple(self.ngram_range), min_df=self.min_df, sublinear_tf=True
        ).fit([normalize(t) for t in texts])
        self.vocabulary_ = {term: int(i) for term, i in vectorizer.vocabulary_.items()}
        self.idf_ = vectorizer.idf_.astype(np.float64)
        self._counter_cache = None
        X = self._features(texts)
        self.coef_ = np.zeros((n_labels, X.shape[1]))
        self.intercept_ = np.zeros(n_labels)
        for j in range(n_labels):
            y = Y[:, j]
            if y.all() or not y.any():  # one class only: a constant at the smoothed prior
                prior = (y.sum() + 0.5) / (len(y) + 1.0)
                self.intercept_[j] = np.log(prior / (1 - prior))
                continue
            model = LogisticRegression(C=self.C, class_weight="balanced", solver="liblinear", max_iter=1000)
            model.fit(X, y)
            self.coef_[j] = model.coef_[0]
            self.intercept_[j] = model.intercept_[0]
        self.thresholds_ = np.full(n_labels, 0.5)
        if dev_texts is not None and dev_Y is not None and len(dev_texts):
            self.thresholds_ = tune_thresholds(np.asarray(dev_Y), self.predict_proba(dev_texts))
        return self

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._features(texts) @ self.coef_.T) + self.intercept_

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return sigmoid(self.decision_function(texts))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return apply_thresholds(self.predict_proba(texts), self.thresholds_)

    # -- persistence (no pickle) ------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        terms = [""] * len(self.vocabulary_)
        for term, i in self.vocabulary_.items():
            terms[i] = term
        write_json(
            directory / "config.json",
            {
                "format": FORMAT,
                "C": self.C,
                "ngram_range": list(self.ngram_range),
                "min_df": self.min_df,
                "label_names": self.label_names_,
                "vocabulary": terms,
            },
        )
        with atomic_write(directory / "weights.npz", "wb") as handle:
            np.savez(handle, idf=self.idf_, coef=self.coef_, intercept=self.intercept_, thresholds=self.thresholds_)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "TfidfBaseline":
        directory = Path(directory)
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        if config.get("format") != FORMAT:
            raise ValueError(f"{directory}: not a {FORMAT} model directory")
        model = cls(C=config["C"], ngram_range=tuple(config["ngram_range"]), min_df=config["min_df"], label_names=config["label_names"])
        with np.load(directory / "weights.npz", allow_pickle=False) as weights:
            model.idf_, model.coef_ = weights["idf"], weights["coef"]
            model.intercept_, model.thresholds_ = weights["intercept"], weights["thresholds"]
        model.label_names_ = list(config["label_names"])
        model.vocabulary_ = {term: i for i, term in enumerate(config["vocabulary"])}
        model._counter_cache = None
        return model


class KeywordBaseline:
    """A label applies when the (normalised, case-folded) text contains any of its keywords."""

    def __init__(self, taxonomy: Taxonomy | None = None) -> None:
        self.taxonomy = taxonomy

    def fit(self, texts=None, Y=None, dev_texts=None, dev_Y=None) -> "KeywordBaseline":
        """Nothing to learn: the keywords are data in the taxonomy."""
        return self

    def _taxonomy(self) -> Taxonomy:
        return self.taxonomy if self.taxonomy is not None else Taxonomy.load()

    @property
    def label_names_(self) -> list[str]:
        return self._taxonomy().ids

    def _keywords(self) -> list[tuple[str, ...]]:
        taxonomy = self._taxonomy()
        return [tuple(normalize(k).casefold() for k in label.keywords) for label in taxonomy.labels]

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        keywords = self._keywords()
        out = np.zeros((len(texts), len(keywords)), dtype=int)
        for i, text in enumerate(texts):
            text = normalize(text).casefold()
            for j, words in enumerate(keywords):
                out[i, j] = any(word in text for word in words)
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.predict(texts).astype(float)
