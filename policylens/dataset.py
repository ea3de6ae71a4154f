"""Labelled paragraphs -> a `datasets.DatasetDict` split by document.

Paragraphs of one document are near-duplicates in topic and wording, so a
paragraph-level split leaks; every split here is by document, deterministic,
and stratified over labels as far as whole documents allow.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from policylens.chinese import normalize
from policylens.hashing import seeded_int
from policylens.io import InputError, read_jsonl
from policylens.paths import (
    SEED_ANNOTATIONS_PATH,
    SILVER_CORRECTIONS_PATH,
    SILVER_PATH,
)
from policylens.taxonomy import Taxonomy

SPLITS = ("train", "dev", "test")


@dataclass
class SplitConfig:
    """Fractions of documents (by paragraph count) per split."""

    dev: float = 0.1
    test: float = 0.15
    seed: int = 13

    def __post_init__(self) -> None:
        if not (0 <= self.dev < 1 and 0 <= self.test < 1 and self.dev + self.test < 1):
            raise ValueError(f"dev ({self.dev}) and test ({self.test}) must be in [0,1) and sum below 1")

    @property
    def fractions(self) -> dict[str, float]:
        return {"train": 1 - self.dev - self.test, "dev": self.dev, "test": self.test}


def load_labelled(paths: Iterable[str | Path], taxonomy: Taxonomy, drop_unknown_labels: bool = False) -> list[dict]:
    """Read labelled JSON Lines files (`id`, `text`, `labels`, optional `doc_id`, `source`, `unsure`).

    Rejects unknown labels, empty texts and duplicate ids with the file and line. With
    `drop_unknown_labels` (scoring a model on data labelled with a larger taxonomy),
    labels outside the taxonomy are dropped instead. A correction row (`"correction": true`,
    `id`, `labels`, optional `was`) replaces the labels of a paragraph read from an earlier
    file; see `_apply_correction`.
    """
    rows: list[dict] = []
    seen: dict[str, str] = {}
    position: dict[str, int] = {}
    for path in paths:
        for lineno, obj in read_jsonl(path):
            where = f"{path}:{lineno}"
            row_id = obj.get("id")
            if not isinstance(row_id, str) or not row_id.strip():
                raise InputError(f"{where}: missing or empty 'id'")
            labels = _labels(obj, where, taxonomy, drop_unknown_labels)
            if obj.get("correction") is True:
                _apply_correction(rows, position, obj, labels, where, taxonomy, drop_unknown_labels)
                continue
            if row_id in seen:
                raise InputError(f"{where}: duplicate id {row_id!r} (first seen at {seen[row_id]})")
            seen[row_id] = where
            text = obj.get("text")
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"{where}: empty text for id {row_id!r}")
            position[row_id] = len(rows)
            rows.append(
                {
                    "id": row_id,
                    "doc_id": str(obj.get("doc_id") or row_id.split("#")[0]),
                    "source": str(obj.get("source") or Path(path).stem),
                    "text": normalize(text),
                    "labels": sorted(set(labels), key=taxonomy.index),
                }
            )
            if "unsure" in obj:  # the annotator hesitated on a tag: CV reports such rows apart
                rows[-1]["unsure"] = bool(obj["unsure"])
    return rows


def _labels(obj: dict, where: str, taxonomy: Taxonomy, drop_unknown: bool) -> list[str]:
    labels = obj.get("labels")
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise InputError(f"{where}: 'labels' must be a list of label ids (may be empty)")
    unknown = sorted(set(labels) - set(taxonomy.ids))
    if unknown and drop_unknown:
        return [label for label in labels if label in taxonomy.ids]
    if unknown:
        raise InputError(f"{where}: unknown label(s) {unknown}; the taxonomy has {taxonomy.ids}")
    return labels


def _apply_correction(rows: list[dict], position: dict[str, int], obj: dict, labels: list[str], where: str,
                      taxonomy: Taxonomy, drop_unknown: bool) -> None:
    """Replace an earlier paragraph's labels, keeping its first annotator's labels as `labels_before`.

    `was` records the labels the correction was made against. When the source has changed them
    since (a new release of the silver set), the source wins and the correction is skipped with a
    warning: a correction must not silently undo someone else's later fix.
    """
    import warnings

    row_id = obj["id"]
    if row_id not in position:
        raise InputError(f"{where}: correction for unknown paragraph id {row_id!r} (it must come after the file that holds it)")
    row = rows[position[row_id]]
    if "was" in obj:
        was = _labels({"labels": obj["was"]}, where, taxonomy, drop_unknown)
        if set(was) != set(row.get("labels_before", row["labels"])):
            warnings.warn(f"{where}: correction of {row_id!r} skipped: made against {sorted(was)}, "
                          f"but the source now labels it {row['labels']}", stacklevel=3)
            return
    row.setdefault("labels_before", row["labels"])
    row["labels"] = sorted(set(labels), key=taxonomy.index)


def first_labels(row: dict) -> list[str]:
    """A row's labels as first read, before any correction file changed them.

    Splits and cross-validation folds are drawn on these: a correction changes what a row teaches and how it
    is scored, not where its document falls, so results before and after a correction compare row by row."""
    return row.get("labels_before", row["labels"])


def disputed_labels(rows: Sequence[dict], readings: str | Path | None = None) -> dict[str, list[str]]:
    """Row id -> the labels on which a second, independent reading (`readings`, default the silver set's:
    `id`, `labels`; `control` rows skipped) and the row's first annotator disagreed: the tags two careful
    readers could not agree on, whichever way the adjudication went. Empty when the readings file is absent."""
    from policylens import paths

    readings = Path(readings or paths.SILVER_SECOND_READING_PATH)
    if not readings.exists():
        return {}
    first = {r["id"]: set(first_labels(r)) for r in rows}
    out: dict[str, list[str]] = {}
    for _, obj in read_jsonl(readings):
        if obj.get("control") or obj.get("id") not in first:
            continue
        second = set(obj.get("labels") or [])
        disputed = sorted(first[obj["id"]] ^ second)
        if disputed:
            out[obj["id"]] = disputed
    return out


def split_by_document(rows: Sequence[dict], config: SplitConfig | None = None) -> dict[str, list[dict]]:
    """Assign whole documents to splits (iterative stratification over documents).

    Documents are visited rarest-label first; each goes to the split that still
    needs the most of that label (then the most paragraphs). Deterministic for a
    given seed and input, whatever the input order. Stratified on the labels as
    first read (`first_labels`), so that a correction file does not move documents.
    """
    config = config or SplitConfig()
    fractions = config.fractions
    docs: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        docs[row["doc_id"]].append(row)

    label_totals: dict[str, int] = defaultdict(int)
    for row in rows:
        for label in first_labels(row):
            label_totals[label] += 1
    need = {split: {label: fractions[split] * n for label, n in label_totals.items()} for split in SPLITS}
    need_size = {split: fractions[split] * len(rows) for split in SPLITS}

    def doc_labels(doc_rows: list[dict]) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for row in doc_rows:
            for label in first_labels(row):
                counts[label] += 1
        return counts

    def rarity(doc_id: str) -> tuple:
        counts = doc_labels(docs[doc_id])
        rarest = min((label_totals[label] for label in counts), default=float("inf"))
        return (rarest, seeded_int(config.seed, doc_id))

    assignment: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for doc_id in sorted(docs, key=rarity):
        doc_rows = docs[doc_id]
        counts = doc_labels(doc_rows)
        candidates = [split for split in SPLITS if fractions[split] > 0]
        if counts:
            rarest = min(sorted(counts), key=lambda label: label_totals[label])
            key = lambda s: (need[s][rarest], need_size[s], -SPLITS.index(s))  # noqa: E731
        else:
            key = lambda s: (need_size[s], -SPLITS.index(s))  # noqa: E731
        split = max(candidates, key=key)
        assignment[split].extend(doc_rows)
        need_size[split] -= len(doc_rows)
        for label, n in counts.items():
            need[split][label] -= n
    return assignment


def default_sources(include_silver: bool = True) -> list[Path]:
    """The seed annotations, plus the shared silver set when it is present beside the repo,
    with the project's corrections of it."""
    sources = [SEED_ANNOTATIONS_PATH]
    if include_silver and SILVER_PATH.exists():
        sources.append(SILVER_PATH)
        if SILVER_CORRECTIONS_PATH.exists():
            sources.append(SILVER_CORRECTIONS_PATH)
    return sources


def build_dataset(
    paths: Iterable[str | Path] | None = None,
    taxonomy: Taxonomy | None = None,
    config: SplitConfig | None = None,
):
    """A `datasets.DatasetDict` (train/dev/test) with a multi-hot `targets` column."""
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets import Sequence as HFSequence

    taxonomy = taxonomy or Taxonomy.load()
    rows = load_labelled(paths if paths is not None else default_sources(), taxonomy)
    if not rows:
        raise InputError("no labelled paragraphs found in the given files")
    features = Features(
        {
            "id": Value("string"),
            "doc_id": Value("string"),
            "source": Value("string"),
            "text": Value("string"),
            "labels": HFSequence(Value("string")),
            "targets": HFSequence(Value("float32")),
        }
    )
    splits = split_by_document(rows, config)
    return DatasetDict(
        {
            split: Dataset.from_list(
                [{**row, "targets": taxonomy.multi_hot(row["labels"])} for row in split_rows], features=features
            )
            for split, split_rows in splits.items()
        }
    )


def labelled_splits(
    extra: Iterable[str | Path] = (), include_silver: bool = True, config: SplitConfig | None = None
) -> tuple[Taxonomy, list[Path], dict[str, list[dict]]]:
    """The default sources plus `extra`, split by document, each row with its multi-hot `targets`."""
    taxonomy = Taxonomy.load()
    sources = default_sources(include_silver) + [Path(p) for p in extra]
    splits = split_by_document(load_labelled(sources, taxonomy), config)
    for row in (r for rows in splits.values() for r in rows):
        row["targets"] = taxonomy.multi_hot(row["labels"])
    return taxonomy, sources, splits
