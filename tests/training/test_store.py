"""The versioned label store: validation, duplicates/conflicts, corrections, replay, new domains, CLI."""

import json
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from policylens.hashing import text_hash
from policylens.io import InputError
from policylens.paths import DATA_DIR
from policylens.taxonomy import Label, Taxonomy
from training.store import EMPTY_VERSION, LabelStore


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path) -> LabelStore:
    taxonomy = tmp_path / "taxonomy.json"
    shutil.copy(DATA_DIR / "taxonomy.json", taxonomy)
    base = write_jsonl(tmp_path / "base.jsonl", [
        {"id": "b1#0", "text": "加快5G基站建设。", "labels": ["5g"]},
        {"id": "b1#1", "text": "培育专精特新中小企业。", "labels": ["sme"]},
    ])
    return LabelStore(tmp_path / "store", taxonomy_path=taxonomy, base_sources=[base])


def test_add_paragraphs_documents_and_csv_writes_log_and_manifest(store, tmp_path):
    assert store.version == EMPTY_VERSION and len(store.rows()) == 2
    para = write_jsonl(tmp_path / "p.jsonl", [{"id": "n1#0", "text": "推动工业节能降碳。", "labels": ["carbon"], "source": "mine"}])
    doc = write_jsonl(tmp_path / "d.jsonl", [{"doc_id": "n2", "paragraphs": [
        {"text": "提升产业链供应链韧性。", "labels": ["supply_chain"]}, {"text": "会议由主任主持。", "labels": []}]}])
    csv = tmp_path / "c.csv"
    csv.write_text("id,text,labels\nn3#0,支持中小企业数字化和5G应用。,sme;5g\nn3#1,实施碳达峰行动。,carbon|supply_chain\n", encoding="utf-8")
    report = store.add([para, doc, csv])
    assert sorted(report.added) == ["n1#0", "n2#0", "n2#1", "n3#0", "n3#1"] and not report.conflicts
    rows = {r["id"]: r for r in store.rows()}
    assert rows["n3#0"]["labels"] == ["5g", "sme"]  # taxonomy order
    assert rows["n2#1"]["doc_id"] == "n2" and rows["n2#1"]["labels"] == []
    assert rows["n1#0"]["source"] == "mine" and rows["n3#1"]["source"] == "c"
    events = store.events()
    assert [e["type"] for e in events] == ["add", "add", "add"]
    assert all(e["time"] and e["source"] and len(e["content_sha256"]) == 64 for e in events)
    assert events[1]["prev"] == events[0]["version"] and store.version == events[-1]["version"]
    manifest = json.loads(store.manifest_path.read_text(encoding="utf-8"))
    assert manifest["version"] == store.version and manifest["rows"] == 7 and manifest["store_rows"] == 5
    assert manifest["per_label"]["carbon"] == 2 and manifest["per_source"]["base"] == 2
    assert store.verify() == []


def test_unknown_label_names_file_and_line_and_writes_nothing(store, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [
        {"id": "x#0", "text": "加快5G建设。", "labels": ["5g"]},
        {"id": "x#1", "text": "推进智能制造。", "labels": ["smart_mfg"]},
    ])
    with pytest.raises(InputError, match=r"bad\.jsonl:2: unknown label\(s\) \['smart_mfg'\]"):
        store.add([bad])
    assert not store.log_path.exists() and store.version == EMPTY_VERSION
    csv = tmp_path / "bad.csv"
    csv.write_text("id,text,labels\ny#0,好的文本。,5g\ny#1,另一个文本。,nope\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.csv:3: unknown label"):
        store.add([csv])


def test_new_label_extends_the_taxonomy_then_adds(store, tmp_path):
    rows = write_jsonl(tmp_path / "mfg.jsonl", [{"id": "m#0", "text": "推进智能制造与数字化转型。", "labels": ["smart_mfg"]}])
    label = Label(id="smart_mfg", name_zh="智能制造与数字化转型", name_en="Smart manufacturing", description="x")
    report = store.add([rows], new_label=label)
    assert report.new_label == "smart_mfg" and report.added == ["m#0"]
    assert Taxonomy.load(store.taxonomy_path).ids[-1] == "smart_mfg"
    assert [e["type"] for e in store.events()] == ["new_label", "add"]
    with pytest.raises(InputError, match="already in the taxonomy"):
        store.add([rows], new_label=label)


def test_duplicates_and_conflicts_are_skipped_and_reported(store, tmp_path):
    rows = write_jsonl(tmp_path / "dup.jsonl", [
        {"id": "z#0", "text": "加快5G基站建设。", "labels": ["5g"]},  # same text + labels as base b1#0
        {"id": "z#1", "text": "\u3000加快5G基站建设。 ", "labels": ["5g"]},  # same text once normalised
        {"id": "z#2", "text": "培育专精特新中小企业。", "labels": ["carbon"]},  # conflicts with b1#1
        {"id": "b1#0", "text": "完全不同的文本。", "labels": []},  # id taken
        {"id": "z#3", "text": "新的文本内容。", "labels": []},
        {"id": "z#4", "text": "新的文本内容。", "labels": []},  # duplicate inside the same file
    ])
    report = store.add([rows])
    assert [d["id"] for d in report.duplicates] == ["z#0", "z#1", "z#4"]
    assert report.duplicates[0]["existing_id"] == "b1#0" and report.duplicates[0]["where"].endswith("dup.jsonl:1")
    assert {c["id"]: c["existing_id"] for c in report.conflicts} == {"z#2": "b1#1", "b1#0": "b1#0"}
    assert report.conflicts[0]["existing_labels"] == ["sme"] and report.conflicts[0]["labels"] == ["carbon"]
    rows_now = {r["id"]: r for r in store.rows()}
    assert rows_now["b1#1"]["labels"] == ["sme"] and rows_now["b1#0"]["text"] == "加快5G基站建设。"  # not overwritten
    assert text_hash("加快5G基站建设。") == text_hash(" 加快5G基站建设。")


def test_corrections_apply_and_old_versions_replay(store, tmp_path):
    store.add([write_jsonl(tmp_path / "a.jsonl", [{"id": "n#0", "text": "推动工业节能降碳。", "labels": ["carbon"]}])])
    v1 = store.version
    fix = write_jsonl(tmp_path / "fix.jsonl", [
        {"id": "b1#0", "labels": ["5g", "supply_chain"], "correction": True},
        {"id": "n#0", "labels": [], "correction": True},
    ])
    report = store.add([fix])
    assert sorted(report.corrected) == ["b1#0", "n#0"] and store.events()[-1]["type"] == "correct"
    latest = {r["id"]: r["labels"] for r in store.rows()}
    assert latest["b1#0"] == ["5g", "supply_chain"] and latest["n#0"] == []
    old = {r["id"]: r["labels"] for r in store.rows(v1)}
    assert old["b1#0"] == ["5g"] and old["n#0"] == ["carbon"]
    assert "n#0" not in {r["id"] for r in store.rows(EMPTY_VERSION)}
    with pytest.raises(InputError, match="unknown dataset version"):
        store.rows("deadbeef")
    bad_fix = write_jsonl(tmp_path / "badfix.jsonl", [{"id": "nope#0", "labels": [], "correction": True}])
    with pytest.raises(InputError, match=r"badfix\.jsonl:1: correction for unknown paragraph id"):
        store.add([bad_fix])


def test_tampered_log_is_detected(store, tmp_path):
    store.add([write_jsonl(tmp_path / "a.jsonl", [{"id": "n#0", "text": "推动工业节能降碳。", "labels": ["carbon"]}])])
    log = store.log_path.read_text(encoding="utf-8").replace("carbon", "sme")
    store.log_path.write_text(log, encoding="utf-8")
    assert any("hash chain broken" in p for p in store.verify())


def test_cli_add_reports_and_fails_with_file_line(store, tmp_path):
    from policylens.cli.retrain import register

    app = typer.Typer()
    register(app)
    common = ["--store", str(store.root), "--taxonomy", str(store.taxonomy_path), "--base", str(store.base_sources[0])]
    good = write_jsonl(tmp_path / "g.jsonl", [{"id": "g#0", "text": "加快5G基站建设。", "labels": ["5g"]},
                                               {"id": "g#1", "text": "推进智能制造。", "labels": ["smart_mfg"]}])
    runner = CliRunner()
    result = runner.invoke(app, ["add", str(good), *common])
    assert result.exit_code == 2 and "g.jsonl:2: unknown label" in result.output
    result = runner.invoke(app, ["add", str(good), *common, "--new-label", "smart_mfg", "--name-zh", "智能制造与数字化转型",
                                 "--name-en", "Smart manufacturing and digital transformation", "--description", "智能制造"])
    assert result.exit_code == 0, result.output
    assert "1 added" in result.output and "duplicate (skipped)" in result.output and "new label smart_mfg" in result.output


def test_review_records_every_click_at_once_and_withdraw_undoes_an_add(store):
    """The review desk's writes: an unknown paragraph is added, a known one (by id or by text) corrected,
    the same labels twice are two rows (the later wins), a withdraw takes an added paragraph out again."""
    info = {"model_version": "v0007", "predicted": ["5g"]}
    added = store.review({"id": "up#0", "doc_id": "up", "text": "推动工业节能降碳。"}, ["carbon"], source="review-desk", info=info)
    assert added["type"] == "add" and added["time"] and added["source"] == "review-desk"
    assert added["rows"][0]["review"] == info and added["rows"][0]["doc_id"] == "up"
    rows = {r["id"]: r for r in store.rows()}
    assert rows["up#0"]["labels"] == ["carbon"] and rows["up#0"]["origin"] == "store"
    # the seed paragraph b1#0 under another id, same text: a correction of b1#0
    fixed = store.review({"id": "other#3", "text": "加快5G基站建设。"}, ["sme", "5g"], source="review-desk")
    assert fixed["type"] == "correct" and fixed["rows"][0]["id"] == "b1#0" and fixed["rows"][0]["labels"] == ["5g", "sme"]
    again = store.review({"id": "other#3", "text": "加快5G基站建设。"}, ["5g", "sme"], source="review-desk")
    assert again["type"] == "correct" and again["version"] != fixed["version"]  # recorded, not skipped as a duplicate
    # an id taken by another text gets a hash suffix instead of a conflict
    clash = store.review({"id": "b1#1", "text": "推进5G网络共建共享。"}, [], source="review-desk")
    assert clash["type"] == "add" and clash["rows"][0]["id"].startswith("b1#1~") and clash["rows"][0]["labels"] == []
    gone = store.review({"id": "up#0", "text": "推动工业节能降碳。"}, None, source="review-desk", info={"undo_of": added["version"]})
    assert gone["type"] == "withdraw"
    rows = {r["id"]: r for r in store.rows()}
    assert "up#0" not in rows and rows["b1#0"]["labels"] == ["5g", "sme"]
    assert "up#0" in {r["id"] for r in store.rows(added["version"])}  # earlier versions still replay it
    with pytest.raises(InputError, match="only a paragraph added"):
        store.review({"id": "b1#0", "text": "加快5G基站建设。"}, None, source="review-desk")  # base rows stay
    with pytest.raises(InputError, match="unknown label"):
        store.review({"id": "x#0", "text": "推进智能制造。"}, ["smart_mfg"], source="review-desk")
    assert store.verify() == [] and json.loads(store.manifest_path.read_text(encoding="utf-8"))["version"] == store.version
