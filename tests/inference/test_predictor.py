"""Predictor: labels follow stored thresholds, long paragraphs pool their windows, analyze aggregates."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from inference.analysis import AggregateConfig, TaggedParagraph, build_analysis
from inference.predictor import Predictor
from policylens.document import Document, Paragraph
from policylens.encoders.windows import tokenize_windows
from policylens.tagger.model_dir import TaggerMeta
from policylens.tagger.scoring import WindowTokenizer, default_threads

TEXTS = [
    "加快推进5G网络和数据中心等新型基础设施建设，扩大工业互联网平台应用规模。",
    "培育一批专精特新中小企业，优化营商环境降低企业融资成本。",
    "实施绿色制造工程推动节能降碳。",
    "一、总体要求",
    "推动新能源汽车产业链协同创新。",
]
LONG = "支持集成电路产业高质量发展，建设国家级先进制造业集群。" * 12  # ~300 characters: many 32-token windows
DOC_TEXT = (
    "关于推进产业发展的通知\n"
    "一、总体要求\n"
    "加快推进5G网络和数据中心等新型基础设施建设，扩大工业互联网平台应用规模。\n"
    "培育一批专精特新中小企业，优化营商环境降低企业融资成本。\n"
    "二、重点任务\n"
    "实施绿色制造工程推动节能降碳。严格控制钢铁、水泥等行业新增产能。\n"
)


@pytest.fixture(scope="module")
def predictor(tiny_tagger_dir: Path) -> Predictor:
    return Predictor(tiny_tagger_dir, num_threads=1, summarizer=None)


def test_labels_follow_stored_thresholds(tiny_tagger_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "tagger"
    shutil.copytree(tiny_tagger_dir, model_dir)
    meta = TaggerMeta.load(model_dir)
    meta.thresholds = [0.3, 0.5, 0.7, 0.9]
    meta.save(model_dir)
    predictor = Predictor(model_dir, num_threads=1, summarizer=None)
    probs = predictor.predict_proba(TEXTS)
    results = predictor.predict(TEXTS)
    assert [r.text for r in results] == TEXTS
    seen = set()
    for row, result in zip(probs, results):
        expected = [label for label, p, t in zip(meta.taxonomy.ids, row, meta.thresholds) if p >= t]
        assert result.labels == expected
        assert set(result.scores) == set(meta.taxonomy.ids)
        assert all(abs(result.scores[l] - float(p)) < 1e-4 for l, p in zip(meta.taxonomy.ids, row))
        seen.update(result.labels)
    assert seen, "the tiny tagger should give some labels"


def test_rust_windows_equal_transformers_windows(predictor: Predictor) -> None:
    texts = [LONG, "短。", TEXTS[0]]
    meta = predictor.meta
    expected, owners = tokenize_windows(predictor.tokenizer, texts, meta.max_length, meta.stride, meta.prefix)
    windows, owners2 = WindowTokenizer(predictor.model_dir, meta)(texts)
    assert windows == expected
    assert owners.tolist() == owners2.tolist()
    assert predictor._windows.pad_id == predictor.tokenizer.pad_token_id


def test_long_paragraph_pools_its_windows(predictor: Predictor) -> None:
    windows, _ = predictor._windows([LONG])
    assert len(windows) > 3  # really windowed, not truncated
    per_window = np.stack([predictor._scorer(np.asarray([w]), np.ones((1, len(w)), dtype=np.int64))[0] for w in windows])
    pooled = predictor.logits([LONG])[0]
    np.testing.assert_allclose(pooled, per_window.max(0), atol=1e-5)  # pooling "max": any window can show a label


def test_batching_does_not_change_scores(predictor: Predictor) -> None:
    together = predictor.predict_proba([LONG, *TEXTS, TEXTS[0]])
    alone = np.stack([predictor.predict_proba([t])[0] for t in [LONG, *TEXTS]])
    np.testing.assert_allclose(together[:-1], alone, atol=1e-5)
    np.testing.assert_array_equal(together[1], together[-1])  # duplicate texts scored once, same row
    assert predictor.predict([]) == []


def _paragraph(doc: str, index: int, text: str, kind: str = "body") -> Paragraph:
    return Paragraph(id=f"{doc}#{index}", doc_id=doc, index=index, text=text, original=text,
                     start=index * 100, end=index * 100 + len(text), kind=kind)


def test_aggregation_on_hand_made_document() -> None:
    labels = ["5g", "sme", "carbon", "supply_chain"]
    doc = Document(id="d", text="x" * 600, title="标题")
    rows = [
        (_paragraph("d", 0, "标题", "title"), {"5g": 0.99}, ("5g",)),  # not body: tagged, not counted
        (_paragraph("d", 1, "a" * 10), {"5g": 0.9, "sme": 0.6}, ("5g", "sme")),
        (_paragraph("d", 2, "b" * 30), {"5g": 0.7}, ("5g",)),
        (_paragraph("d", 3, "c" * 60), {"5g": 0.95, "carbon": 0.2}, ("5g",)),
        (_paragraph("d", 4, "d" * 100), {"5g": 0.1, "carbon": 0.4}, ()),
    ]
    tagged = [TaggedParagraph(p, {l: s.get(l, 0.0) for l in labels}, ls) for p, s, ls in rows]
    analysis = build_analysis(doc, tagged, labels, model_version="v1", config=AggregateConfig(top_k=2))
    five_g = analysis.domains["5g"]
    assert five_g.paragraphs == 3 and five_g.share == 0.75
    assert five_g.char_share == round(100 / 200, 4)
    assert [e.paragraph_id for e in five_g.evidence] == ["d#3", "d#1"]  # strongest first, top_k=2
    assert five_g.max_score == 0.95  # the title's 0.99 is not body evidence
    assert analysis.domains["sme"].share == 0.25 and analysis.domains["sme"].char_share == 0.05
    assert analysis.domains["carbon"].paragraphs == 0 and analysis.domains["carbon"].max_score == 0.4
    assert analysis.labels == ["5g", "sme"]  # covered domains, largest share first
    assert list(analysis.domains) == labels
    row = json.loads(json.dumps(analysis.to_dict(), ensure_ascii=False))
    assert row["id"] == "d" and row["n_body_paragraphs"] == 4 and len(row["paragraphs"]) == 5
    assert row["paragraphs"][1]["labels"] == ["5g", "sme"] and row["summary"] is None


def test_aggregation_of_empty_document() -> None:
    analysis = build_analysis(Document(id="e", text=""), [], ["5g"])
    assert analysis.labels == [] and analysis.domains["5g"].share == 0.0


@dataclass
class _FakeSummary:
    text: str
    sentences: list
    method: str = "lead"


class _FakeSummarizer:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def summarize(self, document, paragraph_labels=None, max_chars=None, **_):
        self.calls.append(paragraph_labels)
        body = [p for p in document.paragraphs if p.kind == "body"][0]
        sentence = {"text": body.text, "paragraph_id": body.id, "start": body.start, "end": body.end}
        return _FakeSummary(text=body.text, sentences=[sentence])


class _BrokenSummarizer:
    def summarize(self, document, **_):
        raise RuntimeError("boom")


def test_analyze_segments_tags_aggregates_and_summarises(tiny_tagger_dir: Path, predictor: Predictor) -> None:
    fake = _FakeSummarizer()
    summarising = Predictor(tiny_tagger_dir, num_threads=1, summarizer=fake)
    docs = [Document(id="a", text=DOC_TEXT), Document(id="b", text="实施绿色制造工程推动节能降碳。\n")]
    analyses = summarising.analyze(docs)
    assert [a.doc_id for a in analyses] == ["a", "b"]
    first = analyses[0]
    kinds = [p.paragraph.kind for p in first.paragraphs]
    assert kinds[0] == "title" and "heading" in kinds and kinds.count("body") == 3
    expected = predictor.predict([p.paragraph.text for p in first.paragraphs])
    for tagged, tags in zip(first.paragraphs, expected):
        assert list(tagged.labels) == tags.labels and tagged.scores == tags.scores
    body = [p for p in first.paragraphs if p.is_body]
    for label, stat in first.domains.items():
        assert stat.paragraphs == sum(label in p.labels for p in body)
    assert first.summary is not None and first.summary.sentences[0].paragraph_id == body[0].paragraph.id
    assert fake.calls[0] == {p.paragraph.id: list(p.labels) for p in first.paragraphs}  # tags reach the summariser
    assert first.model_version == "tiny-test" and first.title == "关于推进产业发展的通知"
    json.dumps([a.to_dict() for a in analyses], ensure_ascii=False)


def test_summary_failures_never_lose_the_tags(tiny_tagger_dir: Path, predictor: Predictor, monkeypatch) -> None:
    doc = Document(id="a", text=DOC_TEXT)
    broken = Predictor(tiny_tagger_dir, num_threads=1, summarizer=_BrokenSummarizer()).analyze([doc])[0]
    assert broken.summary is None and "boom" in broken.summary_error and broken.paragraphs

    import inference.summarize

    def unavailable(*args, **kwargs):
        raise FileNotFoundError("no summarizer model")

    monkeypatch.setattr(inference.summarize.Summarizer, "load", classmethod(unavailable))
    auto = Predictor(tiny_tagger_dir, num_threads=1)  # summarizer="auto"
    result = auto.analyze([Document(id="a", text=DOC_TEXT)])[0]
    assert result.summary is None and "unavailable" in result.summary_error
    assert predictor.analyze([Document(id="a", text=DOC_TEXT)], summary=False)[0].summary_error is None


def test_thread_default_fits_the_machine(monkeypatch) -> None:
    assert 1 <= default_threads() <= 4
    monkeypatch.setenv("POLICYLENS_THREADS", "1")
    assert default_threads() == 1


def test_sigmoid_is_exact_and_silent_for_extreme_logits():
    import warnings

    from policylens.calibration import sigmoid

    x = np.array([-800.0, -3.0, 0.0, 2.5, 800.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning fails the test
        out = sigmoid(x)
    np.testing.assert_allclose(out[1:4], 1.0 / (1.0 + np.exp(-x[1:4])), rtol=1e-12)
    assert out[0] == 0.0 and out[-1] == 1.0


def test_a_registry_pointer_file_stands_for_the_model_dir_it_names(tiny_tagger_dir, tmp_path):
    from policylens.io import InputError
    from policylens.tagger.model_dir import resolve_model_dir

    pointer = tmp_path / "CURRENT"  # what `policylens models promote` writes
    pointer.write_text(f"{tiny_tagger_dir}\n", encoding="utf-8")
    assert resolve_model_dir(pointer) == tiny_tagger_dir
    assert Predictor(pointer, summarizer=None, num_threads=1).model_dir == tiny_tagger_dir
    pointer.write_text(str(tmp_path / "gone"), encoding="utf-8")
    with pytest.raises(InputError, match="no tagger at .*gone"):
        resolve_model_dir(pointer)
