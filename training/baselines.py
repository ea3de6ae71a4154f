"""Two baselines the neural tagger must beat, with the scikit-learn API.

- TfidfBaseline: character n-gram TF-IDF (optionally + word n-grams) + one logistic regression per label,
  per-label thresholds tuned on dev. Saved as JSON + safetensors (no pickle),
  so loading a model directory never executes code.
- KeywordBaseline: a label applies when the text contains one of its
  taxonomy keywords; the floor any learned model has to clear.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from policylens.calibration import sigmoid
from policylens.chinese import normalize, word_ngrams
from policylens.io import write_json
from policylens.tagger.lexical import LexicalModel
from policylens.taxonomy import Taxonomy
from training.thresholds import apply_thresholds, tune_thresholds

FORMAT = "policylens-tfidf-baseline/2"


class TfidfBaseline:
    """Char 1-3-gram TF-IDF + one-vs-rest LogisticRegression (balanced classes).

    Characters need no word segmenter, and 2-3-grams already catch the
    domain terms (碳达峰, 产业链, 中小企业): that is the baseline. With
    `word_ngram_range`, jieba word n-grams join them as a second block: the
    default tagger's lexical half. What it learns is a core `LexicalModel`
    (`model_`), the same object an ensemble tagger scores with.
    """

    def __init__(
        self,
        C: float = 16.0,  # 5-fold CV: C 2 → 32 gave −0.005 … +0.010 alone, 16 +0.006 in the ensemble (docs/tagger.md)
        ngram_range: tuple[int, int] = (1, 3),
        min_df: int = 2,
        label_names: Sequence[str] | None = None,
        word_ngram_range: tuple[int, int] | None = None,  # also jieba word n-grams: the default tagger's lexical half
    ) -> None:
        self.C = C
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.label_names = label_names
        self.word_ngram_range = word_ngram_range

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's settings, as scikit-learn estimators give them."""
        return {"C": self.C, "ngram_range": tuple(self.ngram_range), "min_df": self.min_df, "label_names": self.label_names,
                "word_ngram_range": None if self.word_ngram_range is None else tuple(self.word_ngram_range)}

    def fit(self, texts: Sequence[str], Y, dev_texts: Sequence[str] | None = None, dev_Y=None) -> "TfidfBaseline":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        Y = np.asarray(Y) > 0
        n_labels = Y.shape[1]
        self.label_names_ = list(self.label_names) if self.label_names else [f"label_{j}" for j in range(n_labels)]
        normalized = [normalize(t) for t in texts]
        vectorizer = TfidfVectorizer(
            analyzer="char", ngram_range=tuple(self.ngram_range), min_df=self.min_df, sublinear_tf=True
        ).fit(normalized)
        terms, idf = vectorizer.get_feature_names_out().tolist(), [vectorizer.idf_]
        word_terms: list[str] = []
        word_range = None if self.word_ngram_range is None else tuple(self.word_ngram_range)
        if word_range is not None:
            word_vectorizer = TfidfVectorizer(
                analyzer=lambda text: word_ngrams(text, word_range), min_df=self.min_df, sublinear_tf=True
            )
            try:
                word_vectorizer.fit(normalized)
                word_terms = word_vectorizer.get_feature_names_out().tolist()
                idf.append(word_vectorizer.idf_)
            except ValueError:  # no word in min_df texts (a handful of rows): characters only
                word_range = None
        self.model_ = LexicalModel(
            labels=self.label_names_, vocabulary=terms, idf=np.concatenate(idf).astype(np.float64),
            coef=np.zeros((n_labels, len(terms) + len(word_terms))), intercept=np.zeros(n_labels),
            ngram_range=tuple(self.ngram_range), word_vocabulary=word_terms, word_ngram_range=word_range,
        )
        X = self.model_.features(texts)
        for j in range(n_labels):
            y = Y[:, j]
            if y.all() or not y.any():  # one class only: a constant at the smoothed prior
                prior = (y.sum() + 0.5) / (len(y) + 1.0)
                self.model_.intercept[j] = np.log(prior / (1 - prior))
                continue
            model = LogisticRegression(C=self.C, class_weight="balanced", solver="liblinear", max_iter=1000)
            model.fit(X, y)
            self.model_.coef[j] = model.coef_[0]
            self.model_.intercept[j] = model.intercept_[0]
        self.thresholds_ = np.full(n_labels, 0.5)
        if dev_texts is not None and dev_Y is not None and len(dev_texts):
            self.thresholds_ = tune_thresholds(np.asarray(dev_Y), self.predict_proba(dev_texts))
        return self

    @property
    def vocabulary_(self) -> dict[str, int]:
        return {term: i for i, term in enumerate(self.model_.vocabulary)}

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        return self.model_.decision_function(texts)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return sigmoid(self.decision_function(texts))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return apply_thresholds(self.predict_proba(texts), self.thresholds_)

    # -- persistence (no pickle) ------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self.model_.save(directory)
        write_json(directory / "config.json", {
            "format": FORMAT, "C": self.C, "min_df": self.min_df, "thresholds": self.thresholds_.tolist(),
        })
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "TfidfBaseline":
        directory = Path(directory)
        config_path = directory / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        if config.get("format") != FORMAT:
            raise ValueError(f"{directory}: not a {FORMAT} model directory")
        lexical = LexicalModel.load(directory)
        model = cls(C=config["C"], ngram_range=lexical.ngram_range, min_df=config["min_df"], label_names=lexical.labels,
                    word_ngram_range=lexical.word_ngram_range)
        model.model_, model.label_names_ = lexical, list(lexical.labels)
        model.thresholds_ = np.asarray(config["thresholds"], dtype=np.float64)
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
