import json

import pytest

from policylens.dataset import (
    SplitConfig,
    build_dataset,
    disputed_labels,
    load_labelled,
    split_by_document,
)
from policylens.io import InputError
from policylens.paths import SEED_ANNOTATIONS_PATH
from policylens.taxonomy import Taxonomy

LABELS = ["5g", "sme", "carbon", "supply_chain"]


def write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def synthetic_rows(n_docs=60, per_doc=5):
    rows = []
    for d in range(n_docs):
        for i in range(per_doc):
            labels = [LABELS[(d + i) % 4]] if (d * per_doc + i) % 3 else []
            rows.append({"id": f"doc{d}#{i}", "doc_id": f"doc{d}", "text": f"第{d}号文件第{i}段。", "labels": labels})
    return rows


@pytest.fixture
def taxonomy():
    return Taxonomy.load()


def test_splits_never_share_a_document_and_are_deterministic(tmp_path, taxonomy):
    path = write(tmp_path / "a.jsonl", synthetic_rows())
    rows = load_labelled([path], taxonomy)
    first = split_by_document(rows, SplitConfig(seed=1))
    docs = {name: {r["doc_id"] for r in split} for name, split in first.items()}
    assert not (docs["train"] & docs["dev"] or docs["train"] & docs["test"] or docs["dev"] & docs["test"])
    assert sum(len(s) for s in first.values()) == len(rows)
    again = split_by_document(list(reversed(rows)), SplitConfig(seed=1))
    assert {k: sorted(r["id"] for r in v) for k, v in first.items()} == {
        k: sorted(r["id"] for r in v) for k, v in again.items()
    }
    for name in ("dev", "test"):  # every label reaches the small splits
        assert {l for r in first[name] for l in r["labels"]} == set(LABELS)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"id": "x#0", "text": "中小企业", "labels": ["smes"]}, "unknown label"),
        ({"id": "x#0", "text": "  ", "labels": []}, "empty text"),
        ({"id": "", "text": "文本", "labels": []}, "missing or empty 'id'"),
        ({"id": "x#0", "text": "文本", "labels": "sme"}, "must be a list"),
    ],
)
def test_bad_rows_are_rejected_with_file_and_line(tmp_path, taxonomy, row, message):
    path = write(tmp_path / "bad.jsonl", [{"id": "ok#0", "text": "好的段落。", "labels": []}, row])
    with pytest.raises(InputError, match=message) as err:
        load_labelled([path], taxonomy)
    assert f"{path}:2" in str(err.value)


def test_duplicate_ids_across_files_name_both_places(tmp_path, taxonomy):
    a = write(tmp_path / "a.jsonl", [{"id": "d#0", "text": "一", "labels": []}])
    b = write(tmp_path / "b.jsonl", [{"id": "d#0", "text": "二", "labels": []}])
    with pytest.raises(InputError, match="duplicate id") as err:
        load_labelled([a, b], taxonomy)
    assert f"{b}:1" in str(err.value) and f"{a}:1" in str(err.value)


def test_labels_of_a_larger_taxonomy_can_be_dropped_for_scoring(tmp_path, taxonomy):
    """Data labelled with an added domain still scores a four-label model, but only when asked."""
    path = write(tmp_path / "five.jsonl", [{"id": "m#0", "text": "建设智能工厂，支持中小企业数字化转型。", "labels": ["smart_mfg", "sme"]}])
    with pytest.raises(InputError, match="unknown label"):
        load_labelled([path], taxonomy)
    assert load_labelled([path], taxonomy, drop_unknown_labels=True)[0]["labels"] == ["sme"]


def test_the_annotators_hesitation_is_kept_where_the_data_record_it(tmp_path, taxonomy):
    path = write(tmp_path / "u.jsonl", [{"id": "a#0", "text": "加快5G基站建设。", "labels": ["5g"], "unsure": True},
                                        {"id": "a#1", "text": "支持中小企业发展。", "labels": ["sme"]}])
    first, second = load_labelled([path], taxonomy)
    assert first["unsure"] is True and "unsure" not in second


def test_a_correction_row_relabels_a_paragraph_of_an_earlier_file(tmp_path, taxonomy):
    source = write(tmp_path / "silver.jsonl", [
        {"id": "r#0", "text": "推动绿色低碳高质量发展。", "labels": ["carbon"], "unsure": True},
        {"id": "r#1", "text": "加快5G基站建设。", "labels": ["5g"]}])
    fixes = write(tmp_path / "fixes.jsonl", [{"id": "r#0", "labels": [], "was": ["carbon"], "correction": True}])
    first, second = load_labelled([source, fixes], taxonomy)
    assert first["labels"] == [] and first["labels_before"] == ["carbon"] and first["unsure"] is True
    assert first["text"] == "推动绿色低碳高质量发展。" and second["labels"] == ["5g"] and "labels_before" not in second


def test_a_correction_file_does_not_move_documents_between_splits(tmp_path, taxonomy):
    source = write(tmp_path / "silver.jsonl", synthetic_rows())
    fixes = write(tmp_path / "fixes.jsonl", [{"id": f"doc{d}#1", "labels": ["carbon"], "correction": True} for d in range(0, 60, 2)])
    before = split_by_document(load_labelled([source], taxonomy))
    after = split_by_document(load_labelled([source, fixes], taxonomy))
    assert {k: [r["id"] for r in v] for k, v in after.items()} == {k: [r["id"] for r in v] for k, v in before.items()}
    assert sum(r["labels"] == ["carbon"] for r in after["train"]) > sum(r["labels"] == ["carbon"] for r in before["train"])


def test_a_correction_made_against_labels_the_source_no_longer_has_is_skipped_with_a_warning(tmp_path, taxonomy):
    """A newer release of the source wins over an older correction instead of being silently undone."""
    source = write(tmp_path / "silver.jsonl", [{"id": "r#0", "text": "保障能源供应。", "labels": ["supply_chain"]}])
    fixes = write(tmp_path / "fixes.jsonl", [{"id": "r#0", "labels": ["carbon"], "was": [], "correction": True}])
    with pytest.warns(UserWarning, match=r"fixes.jsonl:1: correction of 'r#0' skipped"):
        (row,) = load_labelled([source, fixes], taxonomy)
    assert row["labels"] == ["supply_chain"] and "labels_before" not in row


@pytest.mark.parametrize("fix, message", [
    ({"id": "nowhere#9", "labels": [], "correction": True}, "correction for unknown paragraph id 'nowhere#9'"),
    ({"id": "r#0", "labels": ["smes"], "correction": True}, "unknown label"),
])
def test_bad_corrections_are_rejected_with_file_and_line(tmp_path, taxonomy, fix, message):
    source = write(tmp_path / "silver.jsonl", [{"id": "r#0", "text": "文本。", "labels": []}])
    fixes = write(tmp_path / "fixes.jsonl", [fix])
    with pytest.raises(InputError, match=message) as err:
        load_labelled([source, fixes], taxonomy)
    assert f"{fixes}:1" in str(err.value)


def test_disputed_labels_are_where_a_second_reading_and_the_first_annotator_differ(tmp_path, taxonomy):
    source = write(tmp_path / "silver.jsonl", [
        {"id": "r#0", "text": "推动绿色低碳高质量发展。", "labels": ["carbon"], "unsure": True},
        {"id": "r#1", "text": "保障能源供应，支持中小企业。", "labels": ["sme"], "unsure": True},
        {"id": "r#2", "text": "加快5G基站建设。", "labels": ["5g"]}])
    fixes = write(tmp_path / "fixes.jsonl", [{"id": "r#0", "labels": [], "was": ["carbon"], "correction": True}])
    readings = write(tmp_path / "second.jsonl", [
        {"id": "r#0", "labels": []},  # the correction followed it: still disputed against the first annotator
        {"id": "r#1", "labels": ["sme", "supply_chain"]},  # the adjudication kept the first label
        {"id": "r#2", "labels": [], "control": True},  # a hidden control, not a dispute
        {"id": "elsewhere#9", "labels": ["5g"]}])  # a row not loaded
    rows = load_labelled([source, fixes], taxonomy)
    assert disputed_labels(rows, readings) == {"r#0": ["carbon"], "r#1": ["supply_chain"]}
    assert disputed_labels(rows, tmp_path / "absent.jsonl") == {}


def test_build_dataset_gives_multi_hot_targets(tmp_path, taxonomy):
    path = write(tmp_path / "a.jsonl", synthetic_rows())
    ds = build_dataset([path], taxonomy)
    assert set(ds) == {"train", "dev", "test"}
    row = next(r for r in ds["train"] if r["labels"])
    assert row["targets"][taxonomy.index(row["labels"][0])] == 1.0 and sum(row["targets"]) == len(row["labels"])


def test_seed_annotations_cover_every_seed_paragraph(taxonomy):
    from pathlib import Path

    from policylens.document import Document
    from policylens.segment import segment

    rows = load_labelled([SEED_ANNOTATIONS_PATH], taxonomy)
    by_id = {r["id"]: r for r in rows}
    seeds = sorted((Path(__file__).resolve().parents[2] / "seeds").glob("*.txt"))
    assert len(seeds) == 5
    n = 0
    for path in seeds:
        for p in segment(Document(id=path.stem, text=path.read_text(encoding="utf-8"))):
            assert p.id in by_id, f"{p.id} is not annotated"
            assert by_id[p.id]["text"] == p.text, f"{p.id}: annotation text differs from segmentation"
            n += 1
    assert n == len(rows)
