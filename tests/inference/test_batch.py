"""`policylens tag`: formats, bad inputs, resumability, stdin."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from inference.batch import BatchConfig, PartFile, run_batch
from inference.predictor import Predictor
from policylens.cli.tag import register

DOCS = {
    "a.txt": "关于推进5G建设的通知\n一、总体要求\n加快推进5G网络和数据中心等新型基础设施建设，扩大工业互联网平台应用规模。\n",
    "b.txt": "培育一批专精特新中小企业，优化营商环境降低企业融资成本。\n完善人才引进和激励政策。\n",
    "sub/c.txt": "绿色制造\n实施绿色制造工程推动节能降碳。严格控制钢铁、水泥等行业新增产能。\n",
    "sub/d.md": "推动新能源汽车产业链协同创新。\n加强关键核心技术攻关。\n",
}


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:  # a callback keeps `tag` a named sub-command, as in policylens/cli.py
        pass

    register(app)
    return app


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    for name, text in DOCS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    (root / "sub" / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    return root


@pytest.fixture(scope="module")
def predictor(tiny_tagger_dir: Path) -> Predictor:
    return Predictor(tiny_tagger_dir, num_threads=1, summarizer=None)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class _LeadSummarizer:
    """Stands in for inference.summarize.Summarizer (whose real models may or may not be built)."""

    def summarize(self, document, paragraph_labels=None, max_chars=None, **_):
        from types import SimpleNamespace

        body = next(p for p in document.paragraphs if p.kind == "body")
        return SimpleNamespace(text=body.text, method="lead", sentences=[
            SimpleNamespace(text=body.text, paragraph_id=body.id, start=body.start, end=body.end)])


def test_jsonl_output_and_bad_file_reported(app, corpus: Path, tiny_tagger_dir: Path, tmp_path: Path,
                                            monkeypatch) -> None:
    import inference.summarize

    monkeypatch.setattr(inference.summarize.Summarizer, "load", classmethod(lambda cls, *a, **k: _LeadSummarizer()))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["tag", str(corpus), "--model", str(tiny_tagger_dir), "--out", str(out),
                                      "--no-progress", "--summary"])
    assert result.exit_code == 0, result.output
    rows = _jsonl(out)
    docs = [r for r in rows if "error" not in r]
    errors = [r for r in rows if "error" in r]
    assert sorted(r["id"] for r in docs) == ["a", "b", "c", "d"]
    assert len(errors) == 1 and errors[0]["source"].endswith("broken.pdf")
    assert "broken.pdf" in result.output and "1 errors" in result.output
    first = next(r for r in docs if r["id"] == "a")
    assert first["paragraphs"] and {"scores", "labels", "start", "end", "headings", "kind"} <= set(first["paragraphs"][0])
    assert set(first["domains"]) == {"5g", "sme", "carbon", "supply_chain"} and first["key"]
    assert first["summary"]["method"] == "lead" and first["model_version"] == "tiny-test"
    assert first["summary"]["sentences"][0]["paragraph_id"] == "a#2"
    assert not (tmp_path / "out.jsonl.part").exists()  # merged and removed


@pytest.mark.parametrize("fmt", ["csv", "md", "html"])
def test_other_formats(app, corpus: Path, tiny_tagger_dir: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"report.{fmt}"
    result = CliRunner().invoke(app, ["tag", str(corpus), "-m", str(tiny_tagger_dir), "-f", fmt, "-o", str(out),
                                      "--no-summary", "--no-progress"])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert {r["doc_id"] for r in rows} == {"a", "b", "c", "d"}
        assert all(0 <= float(r["score_5g"]) <= 1 for r in rows)
        assert any(r["kind"] == "heading" for r in rows)
    else:
        for needle in ("关于推进5G建设的通知", "绿色制造", "broken.pdf", "加强关键核心技术攻关"):
            assert needle in text
        if fmt == "html":
            assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
            assert text.count("<section id=") == 4


class _Interrupting:
    """Wraps a predictor; raises KeyboardInterrupt on the n-th analyze call (a Ctrl-C mid-run)."""

    def __init__(self, inner: Predictor, interrupt_at: int | None = None, fail_ids: tuple[str, ...] = ()) -> None:
        self.inner, self.interrupt_at, self.fail_ids = inner, interrupt_at, fail_ids
        self.segment_config = inner.segment_config
        self.analysed: list[str] = []
        self.calls = 0

    def analyze(self, documents, summary=True):
        self.calls += 1
        if self.interrupt_at is not None and self.calls >= self.interrupt_at:
            raise KeyboardInterrupt
        if any(d.id in self.fail_ids for d in documents):
            raise ValueError("cannot analyse this document")
        self.analysed.extend(d.id for d in documents)
        return self.inner.analyze(documents, summary=summary)


def test_resume_after_interrupt_loses_nothing(corpus: Path, tiny_tagger_dir: Path, predictor, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    config = BatchConfig(model_dir=tiny_tagger_dir, out=out, summary=False, chunk_paragraphs=1)
    first = _Interrupting(predictor, interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        run_batch([str(corpus)], config, progress=False, predictor=first, log=lambda m: None)
    assert not out.exists() and first.analysed == ["a", "b"]
    part = PartFile(out.with_name("out.jsonl.part"))
    assert len(part.index) == 2
    part.close()
    with out.with_name("out.jsonl.part").open("ab") as handle:
        handle.write(b'{"key": "torn-by-the-interrupt", "id"')  # a half-written line must not break resume

    resumed_config = BatchConfig(model_dir=tiny_tagger_dir, out=out, summary=False, chunk_paragraphs=1, resume=True)
    second = _Interrupting(predictor)
    report = run_batch([str(corpus)], resumed_config, progress=False, predictor=second, log=lambda m: None)
    assert second.analysed == ["c", "d"] and report.resumed == 2 and report.tagged == 2
    resumed_rows = _jsonl(out)

    fresh_out = tmp_path / "fresh.jsonl"
    fresh_config = BatchConfig(model_dir=tiny_tagger_dir, out=fresh_out, summary=False)
    run_batch([str(corpus)], fresh_config, progress=False, predictor=predictor, log=lambda m: None)
    assert resumed_rows == _jsonl(fresh_out)  # the same full output, in input order

    third = _Interrupting(predictor, interrupt_at=1)  # would raise if anything were tagged again
    report = run_batch([str(corpus)], resumed_config, progress=False, predictor=third, log=lambda m: None)
    assert third.calls == 0 and report.resumed == 4 and _jsonl(out) == resumed_rows

    (corpus / "b.txt").write_text("支持软件和信息技术服务业做大做强。\n", encoding="utf-8")  # changed content
    fourth = _Interrupting(predictor)
    run_batch([str(corpus)], resumed_config, progress=False, predictor=fourth, log=lambda m: None)
    assert fourth.analysed == ["b"]


def test_corrupt_document_inside_a_batch(corpus: Path, tiny_tagger_dir: Path, predictor, tmp_path: Path) -> None:
    (corpus / "corpus.jsonl").write_text(
        json.dumps({"doc_id": "j1", "text": "加快培育数据要素市场。"}, ensure_ascii=False) + "\n"
        + "{not json\n"
        + json.dumps({"doc_id": "j2", "text": "建立健全知识产权保护体系。"}, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    messages: list[str] = []
    out = tmp_path / "out.jsonl"
    config = BatchConfig(model_dir=tiny_tagger_dir, out=out, summary=False, chunk_paragraphs=100)
    wrapped = _Interrupting(predictor, fail_ids=("c",))  # "c" breaks the analysis of its whole chunk
    report = run_batch([str(corpus)], config, progress=False, predictor=wrapped, log=messages.append)
    rows = _jsonl(out)
    ok = [r["id"] for r in rows if "error" not in r]
    failed = [r for r in rows if "error" in r]
    assert ok == ["a", "b", "j1", "j2", "d"]  # input order; the rest of c's chunk still came through
    assert {r.get("id") or Path(r["source"]).name for r in failed} == {"c", "corpus.jsonl:2", "broken.pdf"}
    assert len(report.errors) == 3 and report.documents == 5


def test_stdin_plain_text_and_jsonl(app, tiny_tagger_dir: Path) -> None:
    runner = CliRunner()
    text = "加快推进5G网络和数据中心等新型基础设施建设。\n培育一批专精特新中小企业。\n"
    result = runner.invoke(app, ["tag", "-", "-m", str(tiny_tagger_dir), "--no-summary", "--no-progress"],
                           input=text.encode("utf-8"))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["id"] for r in rows] == ["stdin"] and len(rows[0]["paragraphs"]) == 2

    lines = "".join(json.dumps({"doc_id": f"s{i}", "text": t}, ensure_ascii=False) + "\n"
                    for i, t in enumerate(["实施绿色制造工程。", "推动产业链协同创新。"]))
    result = runner.invoke(app, ["tag", "-", "-m", str(tiny_tagger_dir), "--no-summary", "--no-progress", "-f", "csv"],
                           input=lines.encode("utf-8"))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout[result.stdout.index("doc_id"):])))
    assert [r["doc_id"] for r in rows] == ["s0", "s1"]


def test_missing_model_says_how_to_get_one(app, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["tag", "-", "-m", str(tmp_path / "nope"), "--no-progress"], input=b"x")
    assert result.exit_code == 2
    assert "policylens train" in result.output


def test_bad_options_fail_fast(tiny_tagger_dir: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        BatchConfig(model_dir=tiny_tagger_dir, fmt="xml")
    with pytest.raises(ValueError, match="resume"):
        BatchConfig(model_dir=tiny_tagger_dir, resume=True)


@pytest.mark.slow  # starts a local Ray cluster: ~25 s on 2 CPUs, too slow for the default run
def test_ray_engine_gives_the_local_output(corpus: Path, tiny_tagger_dir: Path, predictor, tmp_path: Path) -> None:
    pytest.importorskip("ray.data", reason='the `scale` extra (pip install "ray[data]") is not installed')
    import ray

    local_out, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    run_batch([str(corpus)], BatchConfig(model_dir=tiny_tagger_dir, out=local_out, summary=False),
              progress=False, predictor=predictor, log=lambda m: None)
    config = BatchConfig(model_dir=tiny_tagger_dir, out=ray_out, summary=False, engine="ray", num_threads=1)
    try:
        report = run_batch([str(corpus)], config, progress=False, log=lambda m: None)
    finally:
        ray.shutdown()
    assert report.tagged == 4 and len(report.errors) == 1
    local_rows, ray_rows = _jsonl(local_out), _jsonl(ray_out)
    assert [r.get("id") for r in ray_rows] == [r.get("id") for r in local_rows]
    for a, b in zip(local_rows, ray_rows):
        if "error" not in a:
            assert [p["labels"] for p in a["paragraphs"]] == [p["labels"] for p in b["paragraphs"]]
