"""Policy documents with written reference summaries: the genre the users read.

Each row of policy_summaries.jsonl names a corpus document (`doc_id`, text in
corpus_docs.jsonl) and gives a 180-250 character reference summary plus, for each
domain the document substantively addresses, a 40-120 character reference sentence.
120 documents is small, so everything measured on them is cross-validated with
folds grouped by document (cv_folds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from policylens.chinese import normalize
from policylens.document import Document
from policylens.hashing import seeded_int
from policylens.io import InputError, read_jsonl
from policylens.paths import CORPUS_PATH, HEADLINES_PATH

POLICY_SUMMARIES_PATH = HEADLINES_PATH.parent / "policy_summaries.jsonl"
SUMMARY_CHARS = 250  # the written summaries are 180-250 characters: systems get the same budget
DOMAIN_CHARS = 120  # the per-domain reference sentences are 40-120 characters


@dataclass(frozen=True)
class PolicyItem:
    """One policy document and its references (all normalised to Simplified)."""

    doc_id: str
    text: str
    summary: str
    domains: Mapping[str, str] = field(default_factory=dict)  # domain id -> reference sentence
    title: str = ""
    source: str = "policy"

    def document(self) -> Document:
        return Document(id=self.doc_id, text=self.text, source="policy_summaries", meta={"source": self.source})


def _corpus_texts(path: Path, wanted: set[str]) -> dict[str, tuple[str, str]]:
    """doc_id -> (text, source) for the wanted ids only (the corpus is read once, line by line)."""
    found: dict[str, tuple[str, str]] = {}
    for _, row in read_jsonl(path):
        doc_id = row.get("doc_id")
        if doc_id in wanted and isinstance(row.get("text"), str):
            found[doc_id] = (row["text"], str(row.get("source") or "policy"))
    return found


def load_policy_items(path: str | Path = POLICY_SUMMARIES_PATH, corpus: str | Path = CORPUS_PATH,
                      labels: Sequence[str] | None = None) -> list[PolicyItem]:
    """The reference rows joined with their corpus text; a row that cannot be used is an InputError
    naming the file, the line and the reason. `labels`: the domain ids a row may name (None: any)."""
    path, corpus = Path(path), Path(corpus)
    rows = list(read_jsonl(path))
    wanted = {row.get("doc_id") for _, row in rows if isinstance(row.get("doc_id"), str)}
    texts = _corpus_texts(corpus, wanted)
    items, seen = [], set()
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        doc_id, summary, domains = row.get("doc_id"), row.get("summary"), row.get("domains") or {}
        if not isinstance(doc_id, str) or not doc_id:
            raise InputError(f"{where}: 'doc_id' must be a non-empty string")
        if doc_id in seen:
            raise InputError(f"{where}: doc_id {doc_id!r} appears twice")
        if not isinstance(summary, str) or not summary.strip():
            raise InputError(f"{where}: 'summary' must be a non-empty string")
        if not isinstance(domains, dict) or not all(isinstance(v, str) and v.strip() for v in domains.values()):
            raise InputError(f"{where}: 'domains' must map domain ids to non-empty sentences")
        unknown = sorted(set(domains) - set(labels)) if labels is not None else []
        if unknown:
            raise InputError(f"{where}: unknown domain(s) {', '.join(unknown)}; known: {', '.join(labels or [])}")
        if doc_id not in texts:
            raise InputError(f"{where}: doc_id {doc_id!r} is not in {corpus}")
        seen.add(doc_id)
        text, source = texts[doc_id]
        items.append(PolicyItem(doc_id, text, normalize(summary.strip()),
                                {k: normalize(v.strip()) for k, v in domains.items()},
                                str(row.get("title") or ""), source))
    return items


def cv_folds(items: Sequence[PolicyItem], k: int = 5, seed: int = 13) -> list[int]:
    """Fold index (0..k-1) of each item, grouped by document: every row of one doc_id lands in the
    same fold. Documents are ordered by a seeded hash of their id and dealt round-robin, so the
    folds do not depend on file order and differ in size by at most one document."""
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    doc_ids = sorted({item.doc_id for item in items}, key=lambda d: (seeded_int(seed, d), d))
    if len(doc_ids) < k:
        raise ValueError(f"{len(doc_ids)} documents cannot fill {k} folds")
    fold_of = {doc_id: i % k for i, doc_id in enumerate(doc_ids)}
    return [fold_of[item.doc_id] for item in items]
