"""Summarise a document: pick its most telling sentences, with pointers back to the source.

Scores come from the trained scorer (training/summarizer/), TextRank over
e5 sentence embeddings, or plain lead order. Policy texts are structured, so
on top of any score a small structural prior prefers run-in measure titles,
section openings and target statements and avoids boilerplate; selection then
applies MMR + character-trigram blocking under a length budget and returns the
sentences in document order (the selection rules are in summary_select.py).
Long documents are summarised per top-level section first, then overall.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.summary_select import (
    Budget,
    SelectConfig,
    domain_coverage,
    minmax,
    select,
    structure_prior,
)
from policylens.document import Document
from policylens.encoders.e5 import SentenceEncoder
from policylens.paths import SUMMARIZER_DIR as DEFAULT_MODEL_DIR
from policylens.segment import segment
from policylens.summarizer.features import hand_features, textrank_scores
from policylens.summarizer.model_dir import SummarizerModel, exists
from policylens.summarizer.units import SentenceUnit, sentence_units

# Budget, SelectConfig, domain_coverage, select and structure_prior live in
# inference/summary_select.py; they stay importable from here for existing callers.
__all__ = [
    "METHODS",
    "Budget",
    "SectionSummary",
    "SelectConfig",
    "Summarizer",
    "Summary",
    "SummarySentence",
    "check_domain",
    "domain_coverage",
    "known_domains",
    "select",
    "structure_prior",
    "summarize",
]

METHODS = ("auto", "trained", "textrank", "lead")


def known_domains(tagger_dir: str | Path | None = None) -> list[str]:
    """The domain ids a `domain=` may name: the tagger's taxonomy (it labels the paragraphs) when
    one is given, else the project taxonomy (data/taxonomy.json). Never a hard-coded list."""
    if tagger_dir is not None:
        from policylens.tagger.model_dir import TaggerMeta, resolve_model_dir

        return list(TaggerMeta.load(resolve_model_dir(tagger_dir)).taxonomy.ids)
    from policylens.taxonomy import Taxonomy

    return list(Taxonomy.load().ids)


def check_domain(domain: str, known: Sequence[str]) -> None:
    """ValueError "unknown domain 'x'; known: 5g, sme, ..." unless `domain` is one of `known`."""
    if domain not in known:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(known)}")


@dataclass(frozen=True)
class SummarySentence:
    """One extracted sentence; document.text[start:end] is it as written in the source."""

    text: str  # normalised, Simplified Chinese
    paragraph_id: str
    start: int
    end: int
    score: float
    section: str = ""  # outermost heading it sits under ("" when none)


@dataclass
class SectionSummary:
    heading: str
    sentences: list[SummarySentence]
    share: float  # the section's share of the document's body characters


@dataclass
class Summary:
    doc_id: str
    sentences: list[SummarySentence]
    method: str  # "trained" | "textrank" | "lead" (what actually ran)
    domain: str | None = None
    domains: dict[str, float] = field(default_factory=dict)  # label -> share of body characters
    domain_paragraphs: dict[str, int] = field(default_factory=dict)  # label -> number of body paragraphs
    title: str | None = None
    sections: list[SectionSummary] = field(default_factory=list)  # set for long, sectioned documents
    abstract: str | None = None  # generated text (abstractive mode), Simplified
    generator: str | None = None
    notes: list[str] = field(default_factory=list)  # fallbacks and empty results, in words

    @property
    def text(self) -> str:
        """The generated abstract when there is one, else the extracted sentences joined."""
        return self.abstract if self.abstract else "".join(s.text for s in self.sentences)

    @property
    def extract(self) -> str:
        return "".join(s.text for s in self.sentences)

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["text"] = self.text
        return row


# ----------------------------------------------------------------------------
# the summariser
# ----------------------------------------------------------------------------


class Summarizer:
    """Loads the encoder, the trained scorer and (optionally) a tagger once; summarises many documents."""

    def __init__(self, encoder: SentenceEncoder | None = None, scorer: SummarizerModel | None = None,
                 tagger: Any = None, config: SelectConfig | None = None, load_notes: Sequence[str] = ()) -> None:
        self.encoder = encoder
        self.scorer = scorer
        self.tagger = tagger
        self.config = config or SelectConfig()
        self.load_notes = list(load_notes)
        self._taxonomy: Any = None  # loaded on the first domain summary

    @classmethod
    def load(cls, model_dir: str | Path | None = None, *, backbone: str | None = None,
             tagger_dir: str | Path | None = None, config: SelectConfig | None = None,
             num_threads: int | None = None) -> "Summarizer":
        """Scorer from `model_dir` (default models/summarizer/) when present; the encoder it was trained
        with (or `backbone`); a paragraph tagger when `tagger_dir` is given. Missing parts degrade:
        no scorer -> TextRank, no encoder -> lead, each with a note."""
        notes: list[str] = []
        scorer = None
        directory = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
        if exists(directory):
            scorer = SummarizerModel.load(directory)
        elif model_dir:
            notes.append(f"{directory}: no trained summarizer there; using TextRank")
        encoder = None
        try:
            wanted = backbone or (scorer.meta.get("backbone") if scorer else None)
            try:
                encoder = SentenceEncoder(wanted, num_threads=num_threads)
            except Exception:
                if wanted is None:
                    raise
                encoder = SentenceEncoder(None, num_threads=num_threads)  # the trained-with path moved
        except Exception as err:  # backbone not built: still useful with lead order
            notes.append(f"no sentence encoder ({err}); falling back to lead sentences")
            scorer = None
        if scorer is not None and encoder is not None and encoder.dim != scorer.config.embedding_dim:
            notes.append(f"scorer expects {scorer.config.embedding_dim}-d embeddings, encoder gives {encoder.dim}; "
                         "using TextRank")
            scorer = None
        tagger = None
        if tagger_dir:
            from inference.predictor import Predictor

            tagger = Predictor(tagger_dir, num_threads=num_threads)
        return cls(encoder, scorer, tagger, config, notes)

    # -- scoring -----------------------------------------------------------

    def _method(self, method: str) -> tuple[str, list[str]]:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        notes = []
        if method in ("auto", "trained") and self.scorer is None:
            if method == "trained":
                notes.append("no trained summarizer loaded; using TextRank")
            method = "textrank"
        elif method == "auto":
            method = "trained"
        if method in ("trained", "textrank") and self.encoder is None:
            notes.append(f"{method} needs the sentence encoder; using lead sentences")
            method = "lead"
        return method, notes

    def _score(self, units: Sequence[SentenceUnit], embeddings: np.ndarray | None, method: str,
               extra: np.ndarray | None = None) -> np.ndarray:
        """Method score min-max scaled to [0, 1] plus the structural prior (plus `extra`, the domain term)."""
        n = len(units)
        if method == "lead":
            return np.asarray([1.0 / (1 + i) for i in range(n)], dtype=np.float32)
        assert embeddings is not None
        if method == "trained":
            assert self.scorer is not None
            raw = self.scorer.scores(embeddings, hand_features(units, embeddings))
        else:
            raw = textrank_scores(embeddings, position_bias=self.config.textrank_position_bias)
        prior = np.asarray([structure_prior(u) for u in units], dtype=np.float32)
        score = minmax(raw.astype(np.float32)) + self.config.structure * prior
        return score + extra if extra is not None else score

    def domain_relevance(self, units: Sequence[SentenceUnit], embeddings: np.ndarray, domain: str) -> np.ndarray:
        """[0, 1] per sentence: does the sentence itself speak about the domain? A paragraph tagged
        `sme` still has sentences about other things. Half keyword hit (the taxonomy's keywords),
        half e5 similarity to a "query: <domain name>：<keywords>" embedding, min-max scaled."""
        label = self._label(domain)
        if label is None or self.encoder is None:
            return np.zeros(len(units), dtype=np.float32)
        keywords = [k.lower() for k in label.keywords]
        hits = np.asarray([any(k in u.text.lower() for k in keywords) for u in units], dtype=np.float32)
        query = self.encoder.encode_query(f"{label.name_zh}：{'、'.join(label.keywords)}")
        return 0.5 * hits + 0.5 * minmax((embeddings @ query).astype(np.float32))

    def _label(self, domain: str) -> Any:
        taxonomy = self._load_taxonomy()
        if not taxonomy or domain not in taxonomy:
            return None
        return taxonomy.labels[taxonomy.index(domain)]

    def _load_taxonomy(self) -> Any:
        if self._taxonomy is None:
            from policylens.taxonomy import Taxonomy

            try:
                self._taxonomy = Taxonomy.load()
            except Exception:  # no taxonomy file: domain summaries fall back to paragraph labels alone
                self._taxonomy = False
        return self._taxonomy

    def known_domains(self) -> list[str] | None:
        """Domain ids this summariser can summarise for: the loaded tagger's labels, else the
        project taxonomy's; None when neither is available (nothing to check against)."""
        labels = getattr(self.tagger, "labels", None)
        if labels:
            return list(labels)
        taxonomy = self._load_taxonomy()
        return list(taxonomy.ids) if taxonomy else None

    def _labels(self, document: Document, paragraph_labels: Mapping[str, Sequence[str]] | None,
                need: bool) -> Mapping[str, Sequence[str]] | None:
        if paragraph_labels is not None:
            return paragraph_labels
        if self.tagger is None or not need:
            return None
        body = [p for p in document.paragraphs if p.kind == "body"]
        tags = self.tagger.predict([p.text for p in body])
        return {p.id: t.labels for p, t in zip(body, tags)}

    # -- public ------------------------------------------------------------

    def summarize(self, document: Document, *, method: str = "auto", max_chars: int | None = None,
                  max_sentences: int | None = None, domain: str | None = None,
                  paragraph_labels: Mapping[str, Sequence[str]] | None = None,
                  generator: Any = None) -> Summary:
        """Summary of `document` (or of what it says about `domain`) under the length budget.

        paragraph_labels: paragraph id -> domain labels; computed by the tagger when
        one was loaded and labels are needed. generator: a local dir / hub id /
        loaded AbstractiveGenerator for abstractive mode (extractive on failure).
        An unknown `domain` (not in the tagger's or the project's taxonomy) raises ValueError."""
        if domain is not None and paragraph_labels is None:
            known = self.known_domains()
            if known is not None:
                check_domain(domain, known)
        if not document.paragraphs:
            segment(document)
        method, notes = self._method(method)
        notes = self.load_notes + notes
        labels = self._labels(document, paragraph_labels, need=True)
        domains, domain_paragraphs = domain_coverage(document, labels) if labels is not None else ({}, {})
        units = sentence_units(document)
        if domain is not None:
            if labels is None:
                notes.append(f"domain {domain!r} asked for but no paragraph labels and no tagger (--model) given")
                units = []
            else:
                units = [u for u in units if domain in labels.get(u.paragraph_id, ())]
                if not units:
                    notes.append(f"the document has no paragraphs tagged {domain!r}")
        summary = Summary(doc_id=document.id, sentences=[], method=method, domain=domain, domains=domains,
                          domain_paragraphs=domain_paragraphs, title=document.title, notes=notes)
        if not units:
            return summary
        body_chars = sum(len(u.text) for u in units)
        budget = Budget(max_chars, max_sentences) if (max_chars or max_sentences) else Budget.auto(body_chars)
        embeddings = self.encoder.encode([u.text for u in units]) if method != "lead" else None
        extra = None
        if domain is not None and embeddings is not None and self.config.domain_weight:
            extra = self.config.domain_weight * self.domain_relevance(units, embeddings, domain)
        sections = _sections(units)
        if body_chars > self.config.long_doc_chars and len(sections) >= 2 and method != "lead":
            picked, scores, summary.sections = self._hierarchical(units, embeddings, sections, method, budget, extra)
        else:
            scores = self._score(units, embeddings, method, extra)
            picked = select(units, scores, embeddings, budget, self.config, use_mmr=method != "lead")
        summary.sentences = [_sentence(units[i], scores[i]) for i in picked]
        if generator is not None:
            from inference.abstractive import add_abstract

            add_abstract(document, summary, generator)
        return summary

    def _hierarchical(self, units: Sequence[SentenceUnit], embeddings: np.ndarray, sections: list[list[int]],
                      method: str, budget: Budget,
                      extra: np.ndarray | None = None) -> tuple[list[int], np.ndarray, list[SectionSummary]]:
        """Score and pick within each top-level section (the scorer's context stays one section),
        then choose the overall summary among the section picks: the best pick of every
        substantial section first (coverage), then the rest by score."""
        total = sum(len(u.text) for u in units)
        scores = np.zeros(len(units), dtype=np.float32)
        overall = np.zeros(len(units), dtype=np.float32)
        doc_centroid = embeddings.mean(0)
        doc_centroid /= max(float(np.linalg.norm(doc_centroid)), 1e-6)
        pool: list[int] = []
        section_summaries = []
        for members in sections:
            local = [units[i] for i in members]
            share = sum(len(u.text) for u in local) / total
            local_scores = self._score(local, embeddings[members], method, None if extra is None else extra[members])
            scores[members] = local_scores
            if share < self.config.min_section_share:
                continue  # a signature block or a stray line between headings
            centroid = embeddings[members].mean(0)
            weight = float(centroid @ doc_centroid / max(float(np.linalg.norm(centroid)), 1e-6))
            n_local = max(1, min(self.config.section_sentences + int(share * 4), len(members)))
            chosen = select(local, local_scores, embeddings[members], Budget(max_sentences=n_local), self.config)
            ranked = sorted(chosen, key=lambda i: -local_scores[i])
            for rank, i in enumerate(ranked):
                # sections central to the document count more; each section's best pick comes first
                overall[members[i]] = local_scores[i] + 0.5 * weight + (1.0 if rank == 0 else 0.0)
            pool.extend(members[i] for i in chosen)
            section_summaries.append(SectionSummary(
                heading=local[0].section, share=round(share, 4),
                sentences=[_sentence(local[i], local_scores[i]) for i in chosen]))
        pool_units = [units[i] for i in pool]
        chosen = select(pool_units, overall[pool], embeddings[pool], budget, self.config)
        return sorted((pool[i] for i in chosen), key=lambda i: units[i].start), scores, section_summaries


def _sections(units: Sequence[SentenceUnit]) -> list[list[int]]:
    """Runs of consecutive sentences under the same outermost heading."""
    groups: list[list[int]] = []
    for i, unit in enumerate(units):
        if groups and units[groups[-1][-1]].section == unit.section:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _sentence(unit: SentenceUnit, score: float) -> SummarySentence:
    return SummarySentence(unit.text, unit.paragraph_id, unit.start, unit.end, round(float(score), 4), unit.section)


_DEFAULT: dict[str, Summarizer] = {}


def summarize(document: Document, *, method: str = "auto", max_chars: int | None = None,
              max_sentences: int | None = None, domain: str | None = None,
              paragraph_labels: Mapping[str, Sequence[str]] | None = None, model_dir: str | Path | None = None,
              tagger_dir: str | Path | None = None, generator: Any = None) -> Summary:
    """One-call API over a process-wide Summarizer (loaded on first use, per model/tagger dir)."""
    key = f"{model_dir}|{tagger_dir}"
    if key not in _DEFAULT:
        _DEFAULT[key] = Summarizer.load(model_dir, tagger_dir=tagger_dir)
    return _DEFAULT[key].summarize(document, method=method, max_chars=max_chars, max_sentences=max_sentences,
                                   domain=domain, paragraph_labels=paragraph_labels, generator=generator)
