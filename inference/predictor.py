"""Load a tagger directory once, then score paragraphs and analyse documents fast on CPU.

The paragraph hot path is policylens.tagger.scoring.Tagger; this adds the ONNX
Runtime backend and the document view.

`analyze` adds the document view on top: segment -> tag every paragraph ->
aggregate per document (inference/analysis.py) -> summary when a summariser
is available (its absence or failure is recorded, never fatal).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference.analysis import (
    AggregateConfig,
    DocumentAnalysis,
    SummaryView,
    TaggedParagraph,
    build_analysis,
)
from policylens.document import Document
from policylens.io import InputError
from policylens.segment import SegmentConfig, segment
from policylens.tagger.model_dir import (
    BACKENDS,
    WEIGHTS_FILE,
    follow_pointer,
    model_settings,
)
from policylens.tagger.scoring import Scorer, Tagger


class Predictor(Tagger):
    """Paragraph tagger and document analyser over one model directory.

    backend: "torch" (safetensors weights) or "onnx" (onnx/model.int8.onnx,
    exported on first use when missing); None = the model dir's
    policylens.json `inference.backend`, else "torch".
    summarizer: "auto" loads inference.summarize.Summarizer lazily on the
    first analyze(); None disables summaries; or pass any object with
    `.summarize(document, paragraph_labels=...)`.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        backend: str | None = None,
        batch_size: int = 8,
        num_threads: int | None = None,
        summarizer: Any = "auto",
        aggregate: AggregateConfig | None = None,
        segment_config: SegmentConfig | None = None,
        summary_chars: int | None = None,  # None: the summariser's own budget (~6% of the body)
    ) -> None:
        self.backend = backend or model_settings(follow_pointer(model_dir)).get("backend") or "torch"
        if self.backend not in BACKENDS:
            raise InputError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        super().__init__(model_dir, batch_size=batch_size, num_threads=num_threads)
        self.aggregate = aggregate or AggregateConfig()
        self.segment_config = segment_config or SegmentConfig()
        self.summary_chars = summary_chars
        self._summarizer: Any = None if summarizer == "auto" else summarizer
        self._summarizer_state = "pending" if summarizer == "auto" else ("off" if summarizer is None else "ready")
        self._summarizer_error: str | None = "summaries disabled" if summarizer is None else None

    def _load_scorer(self) -> Scorer:
        if self.backend == "onnx":
            from inference.onnx_backend import load_onnx_scorer

            return load_onnx_scorer(self.model_dir, num_threads=self.num_threads)
        return super()._load_scorer()

    def _files_not_read(self) -> tuple[str, ...]:
        return (WEIGHTS_FILE,) if self.backend == "onnx" else ()  # ONNX never reads the safetensors

    # -- documents ----------------------------------------------------------

    def analyze(self, documents: Sequence[Document], *, summary: bool = True) -> list[DocumentAnalysis]:
        """Segment (unless already segmented), tag every paragraph of every document in one
        batched pass, aggregate per document, summarise. Results are in input order."""
        per_doc = [document.paragraphs or segment(document, self.segment_config) for document in documents]
        flat = [p.text for paragraphs in per_doc for p in paragraphs]
        probs = self._probs_normalized(flat)
        tags = iter(self._tags(probs))
        results = []
        for document, paragraphs in zip(documents, per_doc):
            tagged = []
            for paragraph in paragraphs:
                scores, labels = next(tags)
                tagged.append(TaggedParagraph(paragraph=paragraph, scores=scores, labels=tuple(labels)))
            view, error = self._summarize(document, tagged) if summary else (None, None)
            results.append(
                build_analysis(
                    document, tagged, self.labels, summary=view, summary_error=error,
                    model_version=self.version, config=self.aggregate,
                )
            )
        return results

    def _summarize(self, document: Document, tagged: list[TaggedParagraph]) -> tuple[SummaryView | None, str | None]:
        summarizer = self.summarizer
        if summarizer is None:
            return None, self._summarizer_error
        try:
            result = summarizer.summarize(
                document,
                paragraph_labels={p.paragraph.id: list(p.labels) for p in tagged},
                max_chars=self.summary_chars,
            )
        except Exception as err:  # one document the summariser cannot handle must not lose its tags
            return None, f"summariser failed: {type(err).__name__}: {err}"
        return SummaryView.from_summary(result, document), None

    @property
    def summarizer(self) -> Any:
        """The summariser, loaded once on first use; None (with a reason kept) when unavailable."""
        if self._summarizer_state == "pending":
            try:
                from inference.summarize import Summarizer

                self._summarizer = Summarizer.load(num_threads=self.num_threads)
                self._summarizer_state = "ready"
            except Exception as err:  # missing module or model: analyses still come back, without summary
                self._summarizer_state = "off"
                self._summarizer_error = f"summariser unavailable: {type(err).__name__}: {err}"
                print(f"policylens: {self._summarizer_error}; analysing without summaries", file=sys.stderr)
        return self._summarizer
