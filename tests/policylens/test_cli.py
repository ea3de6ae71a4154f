"""The `policylens` command as a user runs it."""

import json
from pathlib import Path

from typer.testing import CliRunner

from policylens.cli import app

SEEDS = Path(__file__).resolve().parents[2] / "seeds"
runner = CliRunner()


def test_segment_writes_paragraphs_of_every_seed(tmp_path):
    out = tmp_path / "paragraphs.jsonl"
    result = runner.invoke(app, ["segment", str(SEEDS), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert {r["doc_id"] for r in rows} == {p.stem for p in SEEDS.glob("*.txt")}
    assert "5 documents, 233 paragraphs, 0 skipped" in result.output


def test_segment_table_shows_seed_labels():
    result = runner.invoke(app, ["segment", str(SEEDS / "003_dc3d4522eaa53bc5.txt"), "--table"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "carbon, sme, supply_chain" in result.output


def test_a_bad_file_is_reported_and_the_rest_still_segmented(tmp_path):
    (tmp_path / "good.txt").write_text("支持中小企业发展。\n推动节能降碳。\n", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"\x00\x01\x02binary\x00")
    result = runner.invoke(app, ["segment", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "bad.txt" in result.output and "1 documents, 2 paragraphs, 1 skipped" in result.output


def test_nothing_readable_is_an_error(tmp_path):
    result = runner.invoke(app, ["segment", str(tmp_path / "missing.txt")])
    assert result.exit_code != 0 and "missing.txt" in result.output


def test_evaluate_scores_baselines_on_labelled_files_from_other_documents(tmp_path):
    """`--test` replaces the test split; labels of an added domain are ignored, not an error."""
    rows = [
        {"id": "x#0", "text": "支持中小企业专精特新发展，加大融资担保力度。", "labels": ["sme"]},
        {"id": "x#1", "text": "推动钢铁行业节能降碳改造，建设绿色工厂。", "labels": ["carbon"]},
        {"id": "x#2", "text": "建设智能工厂和数字化车间。", "labels": ["smart_mfg"]},
        {"id": "x#3", "text": "会议在北京举行。", "labels": []},
    ]
    test_file = tmp_path / "other.jsonl"
    test_file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "no-model"), "--no-silver",
                                 "--test", str(test_file), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    reports = json.loads((tmp_path / "eval" / "evaluation.json").read_text(encoding="utf-8"))
    assert set(reports) == {"tfidf", "keyword"}
    assert reports["keyword"]["n"] == 4 and reports["keyword"]["per_label"]["sme"]["support"] == 1
