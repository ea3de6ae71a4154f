"""Summarise a document: pick its most telling sentences, with pointers back to the source.

Scores come from the trained scorer (training/summarizer/), TextRank over
e5 sentence embeddings, or plain lead order. Policy texts are structured, so
on top of any score a small structural prior prefers run-in measure titles,
section openings and target statements and avoids boilerplate; selection then
applies MMR + character-trigram blocking under a length budget and returns the
sentences in document order (the selection rules are in summary_select.py).
Long documents also get a few sentences per top-level section (`sections`).

Short texts get their lead: below a body length learnt from held-out news (stored
with the trained scorer, `short_text.chars`) nothing beat the first sentence, so
the summary is the lead and its `method` says "lead-short-text".

Per-domain summaries read sentence evidence (policylens/summarizer/domains.py): a
trained head picks the domain's sentences, a second one decides whether the
document addresses the domain at all ("not-addressed" otherwise).

Encoding: every sentence goes through one CachedEncoder (sentence-hash cache for
the run) around the int8 ONNX sentence encoder the scorer was trained with;
`prepare(documents)` encodes the sentences of many documents in one batched pass.
"""

from __future__ import annotations

import sys
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
from policylens.summarizer.domains import (
    DomainHeads,
    document_features,
    domain_query,
    pick_domain_sentences,
    sentence_features,
    untrained_heads,
)
from policylens.summarizer.embedding_cache import CachedEncoder
from policylens.summarizer.features import hand_features, textrank_scores
from policylens.summarizer.model_dir import SummarizerModel, exists
from policylens.summarizer.structure import genre_of
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
SHORT_TEXT = "lead-short-text"  # Summary.method when the short-text rule returned the lead
NOT_ADDRESSED = "not-addressed"  # Summary.method of a domain summary for a domain the document does not address


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
    method: str  # "trained" | "textrank" | "lead" | "lead-short-text" | "not-addressed" (what actually ran)
    domain: str | None = None
    addressed: bool | None = None  # domain summaries: does the document address the domain at all?
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

    def __init__(self, encoder: Any = None, scorer: SummarizerModel | None = None,
                 tagger: Any = None, config: SelectConfig | None = None, load_notes: Sequence[str] = (),
                 domain_heads: DomainHeads | None = None) -> None:
        if encoder is not None and not isinstance(encoder, CachedEncoder):
            encoder = CachedEncoder(encoder)
        self.encoder = encoder
        self.scorer = scorer
        self.tagger = tagger
        self.config = config or SelectConfig()
        self.load_notes = list(load_notes)
        heads = domain_heads or (scorer.domain_heads() if scorer is not None else None)
        self.domain_heads = heads or untrained_heads()
        self.domain_heads_trained = heads is not None
        self._taxonomy: Any = None  # loaded on the first domain summary

    @classmethod
    def load(cls, model_dir: str | Path | None = None, *, backbone: str | None = None,
             tagger_dir: str | Path | None = None, config: SelectConfig | None = None,
             num_threads: int | None = None) -> "Summarizer":
        """Scorer from `model_dir` (default models/summarizer/) when present; the sentence encoder it was
        trained with (the int8 ONNX export, re-exported if missing; or `backbone`); a paragraph tagger
        when `tagger_dir` is given. Missing parts degrade: no scorer -> TextRank, no encoder -> lead,
        each with a note."""
        notes: list[str] = []
        scorer = None
        directory = Path(model_dir) if model_dir else DEFAULT_MODEL_DIR
        if exists(directory):
            scorer = SummarizerModel.load(directory)
        elif model_dir:
            notes.append(f"{directory}: no trained summarizer there; using TextRank")
        encoder = None
        try:
            encoder = load_encoder(scorer, backbone, num_threads, notes)
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

    def short_text_chars(self) -> int:
        """Body length below which the trained summariser returns the lead (0: no rule)."""
        if self.scorer is None or not self.config.short_text_rule:
            return 0
        return self.scorer.short_text_chars

    def _score(self, units: Sequence[SentenceUnit], embeddings: np.ndarray | None, method: str,
               genre: float = 0.0) -> np.ndarray:
        """Method score min-max scaled to [0, 1] plus the structural prior (genre: structure.genre_of)."""
        n = len(units)
        if method == "lead":
            return np.asarray([1.0 / (1 + i) for i in range(n)], dtype=np.float32)
        assert embeddings is not None
        if method == "trained":
            assert self.scorer is not None
            raw = self.scorer.scores(embeddings, hand_features(units, embeddings, genre))
            weight = self.config.trained_structure
        else:
            raw = textrank_scores(embeddings, position_bias=self.config.textrank_position_bias)
            weight = self.config.structure
        prior = np.asarray([structure_prior(u) for u in units], dtype=np.float32)
        return minmax(raw.astype(np.float32)) + weight * prior

    def domain_relevance(self, units: Sequence[SentenceUnit], embeddings: np.ndarray, domain: str,
                         summary_scores: np.ndarray | None = None) -> np.ndarray:
        """[0, 1] per sentence: does the sentence itself speak about the domain? The domain head's
        probability over keyword hits (the taxonomy's keywords), e5 similarity to a
        "query: <domain name>：<keywords>" embedding, position and the general summary score.
        All zeros for a domain outside the taxonomy."""
        return self._domain_evidence(units, embeddings, domain, summary_scores)[1]

    def _domain_evidence(self, units: Sequence[SentenceUnit], embeddings: np.ndarray | None, domain: str,
                         summary_scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(sentence features, sentence probabilities) for `domain`."""
        label = self._label(domain)
        if label is None:
            zeros = np.zeros(len(units), dtype=np.float32)
            return np.zeros((len(units), 0), dtype=np.float32), zeros
        if embeddings is not None and self.encoder is not None:
            query = self.encoder.encode_query(domain_query(label.name_zh, label.keywords))
            sims = (embeddings @ query).astype(np.float32)
        else:
            sims = np.zeros(len(units), dtype=np.float32)
        feats = sentence_features(units, label.keywords, sims, summary_scores)
        return feats, self.domain_heads.sentence(feats)

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
            except Exception:  # no taxonomy file: no keywords, no domain queries
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

    def prepare(self, documents: Sequence[Document]) -> int:
        """Encode the sentences of many documents in one batched pass, so that summarising them one by
        one afterwards finds every embedding in the cache (the batch engine calls this per chunk).
        Documents under the short-text length are skipped: their summary is the lead. Returns the
        number of sentences encoded now (cache misses)."""
        if self.encoder is None:
            return 0
        threshold = self.short_text_chars()
        texts: list[str] = []
        for document in documents:
            if not document.paragraphs:
                segment(document)
            units = sentence_units(document)
            if units and sum(len(u.text) for u in units) >= threshold:
                texts.extend(u.text for u in units)
        before = self.encoder.misses
        if texts:
            self.encoder.encode(texts)
        return self.encoder.misses - before

    def summarize(self, document: Document, *, method: str = "auto", max_chars: int | None = None,
                  max_sentences: int | None = None, domain: str | None = None,
                  paragraph_labels: Mapping[str, Sequence[str]] | None = None,
                  generator: Any = None) -> Summary:
        """Summary of `document` (or of what it says about `domain`) under the length budget.

        paragraph_labels: paragraph id -> domain labels (the domain coverage line); computed
        by the tagger when one was loaded. generator: a local dir / hub id / loaded
        AbstractiveGenerator for abstractive mode (extractive on failure). An unknown
        `domain` (not in the tagger's or the project's taxonomy) raises ValueError."""
        if domain is not None and paragraph_labels is None:
            known = self.known_domains()
            if known is not None:
                check_domain(domain, known)
        if not document.paragraphs:
            segment(document)
        requested = method
        method, notes = self._method(method)
        notes = self.load_notes + notes
        labels = self._labels(document, paragraph_labels, need=True)
        domains, domain_paragraphs = domain_coverage(document, labels) if labels is not None else ({}, {})
        units = sentence_units(document)
        summary = Summary(doc_id=document.id, sentences=[], method=method, domain=domain, domains=domains,
                          domain_paragraphs=domain_paragraphs, title=document.title, notes=notes)
        if not units:
            return summary
        if domain is not None:
            genre = genre_of(units, document.meta.get("source"))
            self._domain_summary(summary, units, domain, method, max_chars, max_sentences, genre)
            return summary
        body_chars = sum(len(u.text) for u in units)
        budget = Budget(max_chars, max_sentences) if (max_chars or max_sentences) else Budget.auto(body_chars)
        if requested in ("auto", "trained") and method == "trained" and body_chars < self.short_text_chars():
            method = summary.method = SHORT_TEXT
            notes.append(f"short text ({body_chars} < {self.short_text_chars()} characters): the lead is the summary")
        scoring = "lead" if method == SHORT_TEXT else method
        embeddings = self.encoder.encode([u.text for u in units]) if scoring != "lead" else None
        genre = genre_of(units, document.meta.get("source")) if scoring == "trained" else 0.0
        scores = self._score(units, embeddings, scoring, genre)
        picked = select(units, scores, embeddings, budget, self.config, use_mmr=scoring != "lead")
        sections = _sections(units)
        if body_chars > self.config.long_doc_chars and len(sections) >= 2 and scoring != "lead":
            summary.sections = self._section_summaries(units, embeddings, sections, scores)
        summary.sentences = [_sentence(units[i], scores[i]) for i in picked]
        if generator is not None:
            from inference.abstractive import add_abstract

            add_abstract(document, summary, generator)
        return summary

    def _domain_summary(self, summary: Summary, units: Sequence[SentenceUnit], domain: str, method: str,
                        max_chars: int | None, max_sentences: int | None, genre: float) -> None:
        """Fill `summary` with the domain's sentences, or mark the domain not addressed."""
        label = self._label(domain)
        if label is None:
            summary.notes.append(f"domain {domain!r} is not in the taxonomy (data/taxonomy.json): no keywords to "
                                 "find its sentences by")
            return
        embeddings = self.encoder.encode([u.text for u in units]) if method != "lead" else None
        general = None
        if method == "trained" and embeddings is not None and self.scorer is not None and self.domain_heads_trained:
            general = self.scorer.scores(embeddings, hand_features(units, embeddings, genre))
        feats, probs = self._domain_evidence(units, embeddings, domain, general)
        p_doc = float(self.domain_heads.document(document_features(feats, probs)[None])[0])
        hits = int(feats[:, 0].sum())
        summary.addressed = p_doc >= self.domain_heads.threshold
        if not summary.addressed:
            summary.method = NOT_ADDRESSED
            summary.notes.append(f"not addressed: the document does not address {domain!r} "
                                 f"({hits} sentences with its keywords, p={p_doc:.2f})")
            return
        if not self.domain_heads_trained:
            summary.notes.append("no trained domain heads; domain sentences by keyword hits and similarity")
        if not (max_chars or max_sentences):
            max_chars = self.config.domain_chars
        picked = pick_domain_sentences(units, probs, max_chars, self.domain_heads.min_relative, max_sentences)
        summary.sentences = [_sentence(units[i], probs[i]) for i in picked]

    def _section_summaries(self, units: Sequence[SentenceUnit], embeddings: np.ndarray, sections: list[list[int]],
                           scores: np.ndarray) -> list[SectionSummary]:
        """A few sentences per substantial top-level section, picked by the whole-document scores.

        The overall summary is chosen over the whole document, not from these: scored in one
        context (the scorer's features are the document's) and picked under one budget, it beat
        picking within sections first on the cross-validated policy set (ROUGE-L 32.5 vs 31.6,
        TextRank 28.8 vs 28.1)."""
        total = sum(len(u.text) for u in units)
        out = []
        for members in sections:
            local = [units[i] for i in members]
            share = sum(len(u.text) for u in local) / total
            if share < self.config.min_section_share:
                continue  # a signature block or a stray line between headings
            n_local = max(1, min(self.config.section_sentences + int(share * 4), len(members)))
            chosen = select(local, scores[members], embeddings[members], Budget(max_sentences=n_local), self.config)
            out.append(SectionSummary(heading=local[0].section, share=round(share, 4),
                                      sentences=[_sentence(local[i], scores[members][i]) for i in chosen]))
        return out


def load_encoder(scorer: SummarizerModel | None, backbone: str | None, num_threads: int | None,
                 notes: list[str]) -> Any:
    """The sentence encoder the scorer was trained on: the int8 ONNX export it names (exported again,
    once, when missing), or the PyTorch e5 of `backbone`. Without a scorer: the ONNX export when one
    exists, else PyTorch e5. Embeddings that differ from training's are said in a note."""
    trained = (scorer.meta.get("encoder") or {}) if scorer is not None else {}
    if backbone is None and (trained.get("kind") == "onnx-int8" or (scorer is None and _export_of_default_backbone())):
        try:
            return _onnx_encoder(trained, num_threads, notes)
        except ImportError as err:  # onnxruntime / onnx not installed (the `serve` extra)
            notes.append(f"no ONNX Runtime ({err}); PyTorch e5 embeddings, not the int8 ones the scorer was "
                         "trained on")
    wanted = backbone or (scorer.meta.get("backbone") if scorer else None)
    try:
        encoder = SentenceEncoder(wanted, num_threads=num_threads)
    except Exception:
        if wanted is None:
            raise
        encoder = SentenceEncoder(None, num_threads=num_threads)  # the trained-with path moved
    if trained.get("fingerprint") and trained["fingerprint"] != encoder.fingerprint:
        notes.append(f"the scorer was trained on other sentence embeddings ({trained['fingerprint']}, now "
                     f"{encoder.fingerprint}); retrain with `policylens train-summarizer`")
    return encoder


def _onnx_encoder(trained: Mapping[str, Any], num_threads: int | None, notes: list[str]) -> Any:
    """The exported encoder `trained` names; where it is gone (models moved, cleaned), the one of the
    same depth under today's models directory, exported with the recorded settings if need be."""
    from policylens.summarizer.encoder import (
        DEFAULT_LAYERS,
        OnnxSentenceEncoder,
        encoder_dir,
        is_exported,
    )

    export = dict(trained.get("export") or {})
    directory = Path(trained["name"]) if trained.get("name") else encoder_dir(DEFAULT_LAYERS)
    if not is_exported(directory):
        directory = encoder_dir(int(export.get("layers", DEFAULT_LAYERS)))
        if not is_exported(directory):
            from inference.sentence_onnx import (
                SentenceExportConfig,
                ensure_sentence_encoder,
            )

            ensure_sentence_encoder(directory, config=SentenceExportConfig(**export),
                                    log=lambda m: print(f"policylens: {m}", file=sys.stderr))
    encoder = OnnxSentenceEncoder(directory, num_threads=num_threads)
    if trained.get("fingerprint") and trained["fingerprint"] != encoder.fingerprint:
        notes.append(f"the scorer was trained on other sentence embeddings ({trained['fingerprint']}, now "
                     f"{encoder.fingerprint}); retrain with `policylens train-summarizer`")
    return encoder


def _export_of_default_backbone() -> bool:
    """Whether the default ONNX sentence encoder was exported from the backbone in use now
    (POLICYLENS_BACKBONE may point elsewhere): only then may an untrained summariser use it."""
    from policylens.encoders.backbone import resolve_backbone
    from policylens.summarizer.encoder import (
        SENTENCE_ENCODER_DIR,
        is_exported,
        read_export_info,
    )

    if not is_exported(SENTENCE_ENCODER_DIR):
        return False
    try:
        current = Path(resolve_backbone(None)).resolve()
    except Exception:  # no backbone built: the export alone still encodes
        return True
    return Path(read_export_info(SENTENCE_ENCODER_DIR).get("backbone", "")).resolve() == current


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
