"""Extractive summaries: pointers, order, budgets, domains, structure, abstractive plumbing, CLI.

All texts are written for these tests; the encoder is a tiny random BERT with a
character vocabulary built here (milliseconds, unlike the real tokenizer), so
scores are meaningless but every code path runs in seconds.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest

from inference.summarize import (
    Budget,
    SelectConfig,
    Summarizer,
    Summary,
    structure_prior,
)
from policylens.chinese import normalize
from policylens.document import Document
from policylens.encoders.e5 import SentenceEncoder
from policylens.segment import segment
from policylens.summarizer.units import sentence_units

POLICY = """关于推动中小企业数字化转型的通知

各有关单位：
为加快推进制造业数字化转型，培育一批专精特新中小企业，现将有关事项通知如下。

一、总体要求
到2025年，中小企业数字化转型取得明显成效，建设国家级先进制造业集群。优化营商环境降低企业融资成本。

二、主要措施
（一）加大研发费用加计扣除力度。财政部要落实高新技术企业税收优惠政策，对符合条件的企业给予不超过500万元的一次性奖励。
（二）推进5G网络和数据中心等新型基础设施建设。工业和信息化部要扩大工业互联网平台应用规模，推动人工智能与实体经济深度融合。
（三）实施绿色制造工程推动节能降碳。地方各级政府要严格控制钢铁、水泥等行业新增产能。
（四）加强关键核心技术攻关。重点企业要推动新能源汽车产业链协同创新，加快培育数据要素市场。

请各地认真贯彻执行。
"""

TRADITIONAL = "國務院要加快推進製造業數字化轉型。工業和信息化部要擴大工業互聯網平台應用規模。有關部門要優化營商環境降低企業融資成本。"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """Random 2-layer BERT (hidden 32) + a WordPiece vocabulary of the characters used here."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny_encoder")
    chars = sorted(set(POLICY + TRADITIONAL + normalize(TRADITIONAL) + string.printable) - set(string.whitespace))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "passage"] + chars
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(out / "vocab.txt"))
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config, add_pooling_layer=False).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def encoder(tiny_dir) -> SentenceEncoder:
    return SentenceEncoder(str(tiny_dir), max_length=64)


@pytest.fixture(scope="module")
def summarizer(encoder) -> Summarizer:
    return Summarizer(encoder, None)


def doc(text: str, doc_id: str = "t") -> Document:
    document = Document(id=doc_id, text=text)
    segment(document)
    return document


def assert_pointers(document: Document, summary: Summary) -> None:
    ids = {p.id for p in document.paragraphs}
    for s in summary.sentences:
        assert s.paragraph_id in ids
        assert normalize(document.text[s.start : s.end]) == s.text
        paragraph = next(p for p in document.paragraphs if p.id == s.paragraph_id)
        assert paragraph.start <= s.start < s.end <= paragraph.end


@pytest.mark.parametrize("method", ["textrank", "lead"])
def test_source_pointers_and_document_order(summarizer, method):
    document = doc(POLICY)
    summary = summarizer.summarize(document, method=method, max_sentences=4)
    assert summary.method == method and 1 <= len(summary.sentences) <= 4
    assert_pointers(document, summary)
    starts = [s.start for s in summary.sentences]
    assert starts == sorted(starts)


def test_traditional_input_gives_simplified_output_with_original_offsets(summarizer):
    document = doc(TRADITIONAL)
    summary = summarizer.summarize(document, method="textrank", max_sentences=2)
    assert_pointers(document, summary)
    for s in summary.sentences:
        assert document.text[s.start : s.end] != s.text  # the source is Traditional...
        assert s.text == normalize(s.text)  # ...the summary Simplified
    assert "业" in summary.text and "業" not in summary.text


def test_headings_title_and_boilerplate_are_not_summary_sentences(summarizer):
    document = doc(POLICY)
    summary = summarizer.summarize(document, method="textrank", max_sentences=6)
    kinds = {p.id: p.kind for p in document.paragraphs}
    assert all(kinds[s.paragraph_id] == "body" for s in summary.sentences)
    assert not any("贯彻执行" in s.text or "通知如下" in s.text for s in summary.sentences)


def test_structure_prior_prefers_run_in_measures_and_penalises_boilerplate():
    units = {u.text: u for u in sentence_units(doc(POLICY))}
    run_in = units["（一）加大研发费用加计扣除力度。"]
    assert run_in.run_in and structure_prior(run_in) > 0
    assert structure_prior(units["请各地认真贯彻执行。"]) < 0
    goal = next(u for t, u in units.items() if t.startswith("到2025年"))
    assert goal.opens_section and structure_prior(goal) > structure_prior(units["优化营商环境降低企业融资成本。"])


def test_length_budget_chars_and_sentences(summarizer):
    document = doc(POLICY)
    for max_chars in (30, 60, 120):
        summary = summarizer.summarize(document, method="textrank", max_chars=max_chars)
        assert sum(len(s.text) for s in summary.sentences) <= max_chars
        assert summary.sentences
    assert len(summarizer.summarize(document, method="textrank", max_sentences=2).sentences) == 2
    # a budget smaller than every sentence still yields one sentence (the shortest good one)
    assert len(summarizer.summarize(document, method="textrank", max_chars=3).sentences) == 1
    with pytest.raises(ValueError):
        Budget(max_chars=0)


def test_auto_budget_scales_with_length():
    assert Budget.auto(500).max_chars == 120 and Budget.auto(5000).max_chars == 300
    assert Budget.auto(100_000).max_chars == 500


def test_empty_and_one_sentence_documents(summarizer):
    for text in ("", "   \n\n", "关于推动中小企业发展的通知"):  # nothing, blanks, a title only
        summary = summarizer.summarize(doc(text), method="textrank")
        assert summary.sentences == [] and summary.text == ""
    one = doc("工业和信息化部要加快推进制造业数字化转型。")
    summary = summarizer.summarize(one, method="textrank")
    assert [s.text for s in summary.sentences] == ["工业和信息化部要加快推进制造业数字化转型。"]
    assert_pointers(one, summary)


def _labels(document: Document) -> dict[str, list[str]]:
    labels = {}
    for p in document.paragraphs:
        tags = []
        if "中小企业" in p.text or "一次性奖励" in p.text or "融资成本" in p.text:
            tags.append("sme")
        if "5G" in p.text:
            tags.append("5g")
        labels[p.id] = tags
    return labels


def test_domain_summary_takes_the_domains_sentences_and_coverage_from_labels(summarizer):
    document = doc(POLICY)
    labels = _labels(document)
    summary = summarizer.summarize(document, method="textrank", domain="5g", paragraph_labels=labels, max_sentences=5)
    assert summary.domain == "5g" and summary.addressed and summary.sentences
    assert all("5G" in s.text for s in summary.sentences)  # untrained heads: the keyword sentence leads
    assert_pointers(document, summary)
    # coverage: share of body characters per domain, largest first, and paragraph counts
    assert set(summary.domains) == {"sme", "5g"} and 0 < summary.domains["5g"] < 1
    assert list(summary.domains.values()) == sorted(summary.domains.values(), reverse=True)
    assert summary.domain_paragraphs["5g"] == 1


def test_a_domain_the_document_does_not_address_says_not_addressed(summarizer):
    from inference.summarize import NOT_ADDRESSED

    document = doc("关于支持中小企业发展的通知\n\n各地要培育一批专精特新中小企业。\n\n财政部要降低中小企业融资成本。\n")
    summary = summarizer.summarize(document, method="textrank", domain="carbon")
    assert summary.method == NOT_ADDRESSED and summary.addressed is False
    assert summary.sentences == [] and summary.text == ""
    assert any(n.startswith("not addressed") and "carbon" in n for n in summary.notes)
    sme = summarizer.summarize(document, method="textrank", domain="sme")
    assert sme.addressed and sme.method == "textrank" and sme.sentences


def test_domain_relevance_prefers_sentences_about_the_domain(summarizer):
    units = sentence_units(doc(POLICY))
    embeddings = summarizer.encoder.encode([u.text for u in units])
    relevance = summarizer.domain_relevance(units, embeddings, "sme")  # taxonomy keywords + e5 query similarity
    about = [r for u, r in zip(units, relevance) if "中小企业" in u.text]
    other = [r for u, r in zip(units, relevance) if not any(k in u.text for k in ("中小企业", "融资担保", "民营"))]
    assert about and other and min(about) >= max(other)
    assert not summarizer.domain_relevance(units, embeddings, "no_such_domain").any()


def test_domain_summary_needs_no_tagger(summarizer):
    summary = summarizer.summarize(doc(POLICY), method="textrank", domain="sme")
    assert summary.addressed and summary.sentences and summary.domains == {}
    assert any("中小企业" in s.text or "融资成本" in s.text or "一次性奖励" in s.text for s in summary.sentences)


def test_domain_coverage_from_a_tagger(encoder):
    class FakeTagger:  # the Predictor interface: predict(texts) -> objects with .labels
        def predict(self, texts):
            return [type("T", (), {"labels": ["carbon"] if "降碳" in t else []})() for t in texts]

    summarizer = Summarizer(encoder, None, tagger=FakeTagger())
    summary = summarizer.summarize(doc(POLICY), method="textrank", domain="carbon")
    assert summary.sentences and any("降碳" in s.text for s in summary.sentences)
    assert "carbon" in summary.domains


def test_long_documents_also_get_per_section_summaries(encoder):
    summarizer = Summarizer(encoder, None, config=SelectConfig(long_doc_chars=200))
    document = doc(POLICY)
    summary = summarizer.summarize(document, method="textrank", max_sentences=3)
    assert len(summary.sections) >= 2 and {s.heading for s in summary.sections} >= {"一、总体要求", "二、主要措施"}
    assert 1 <= len(summary.sentences) <= 3
    assert_pointers(document, summary)
    assert abs(sum(s.share for s in summary.sections) - 1) < 1e-6


def test_fallbacks_without_scorer_or_encoder(encoder):
    summary = Summarizer(encoder, None).summarize(doc(POLICY), method="auto", max_sentences=1)
    assert summary.method == "textrank"
    summary = Summarizer(None, None).summarize(doc(POLICY), method="trained", max_sentences=2)
    assert summary.method == "lead" and summary.notes and len(summary.sentences) == 2
    with pytest.raises(ValueError):
        Summarizer(encoder, None).summarize(doc(POLICY), method="magic")


def test_to_dict_is_json_ready(summarizer):
    row = summarizer.summarize(doc(POLICY), method="textrank", max_sentences=2).to_dict()
    again = json.loads(json.dumps(row, ensure_ascii=False))
    assert again["text"] and {"paragraph_id", "start", "end", "score"} <= set(again["sentences"][0])


# ---------------------------------------------------------------------------
# abstractive plumbing (tiny random generators: no quality claimed)
# ---------------------------------------------------------------------------


def _tiny_generator(tiny_dir, tmp_path, kind: str):
    from transformers import (
        AutoTokenizer,
        GPT2Config,
        GPT2LMHeadModel,
        T5Config,
        T5ForConditionalGeneration,
    )

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    n = len(tokenizer)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=n, n_positions=96, n_embd=32, n_layer=1, n_head=2,
                                           bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id))
    else:
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=n, d_model=32, d_ff=64, d_kv=16, num_layers=1, num_heads=2,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id,
            decoder_start_token_id=tokenizer.pad_token_id))
    out = tmp_path / kind
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_abstractive_plumbing_with_a_tiny_model(summarizer, tiny_dir, tmp_path, kind):
    from inference.abstractive import AbstractiveGenerator, GeneratorConfig

    path = _tiny_generator(tiny_dir, tmp_path, kind)
    generator = AbstractiveGenerator.load(path, GeneratorConfig(max_input_tokens=48, max_new_tokens=6))
    assert generator.seq2seq == (kind == "t5")
    document = doc(POLICY)
    pieces = [p.text for p in document.paragraphs if p.kind in ("body", "heading")]
    chunks = generator.chunks(pieces)
    assert len(chunks) > 1 and all(generator.n_tokens(c) <= generator.input_budget for c in chunks)
    calls: list[str] = []
    real = generator.generate
    generator.generate = lambda text: (calls.append(text), real(text))[1]  # count map and reduce calls
    summary = summarizer.summarize(document, method="textrank", max_sentences=2, generator=generator)
    assert len(calls) >= len(chunks) + 1  # every chunk mapped, then at least one reduce
    assert summary.generator == str(path) and len(summary.sentences) == 2  # extractive evidence kept
    if summary.abstract:  # a random model may emit only special tokens; then the note says so
        assert summary.text == summary.abstract == normalize(summary.abstract)
    else:
        assert summary.text == summary.extract and any("returned nothing" in n for n in summary.notes)


def test_abstractive_falls_back_to_extractive_with_a_clear_message(summarizer, tmp_path):
    summary = summarizer.summarize(doc(POLICY), method="textrank", max_sentences=2,
                                   generator=str(tmp_path / "no-such-model"))
    assert summary.abstract is None and summary.text == summary.extract and summary.sentences
    assert any("cannot load generator" in n for n in summary.notes)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def test_cli_summarize_json(tiny_dir, tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from policylens.cli.summarize import register

    monkeypatch.setenv("POLICYLENS_BACKBONE", str(tiny_dir))
    app = typer.Typer()
    register(app)
    (tmp_path / "policy.txt").write_text(POLICY, encoding="utf-8")
    result = CliRunner().invoke(app, ["summarize", str(tmp_path / "policy.txt"), "--json", "--method", "textrank",
                                      "--max-sentences", "2", "--summarizer", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.strip().splitlines()[0])
    assert row["method"] == "textrank" and len(row["sentences"]) == 2
    text = (tmp_path / "policy.txt").read_text(encoding="utf-8")
    for s in row["sentences"]:
        assert normalize(text[s["start"] : s["end"]]) == s["text"]
    result = CliRunner().invoke(app, ["summarize", str(tmp_path / "policy.txt"), "--json", "--domain", "sme",
                                      "--method", "textrank", "--summarizer", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.strip().splitlines()[0])
    assert row["domain"] == "sme" and row["addressed"] is True and row["sentences"]
    result = CliRunner().invoke(app, ["summarize", str(tmp_path / "policy.txt"), "--domain", "no_such"])
    assert result.exit_code == 2 and "unknown domain" in result.output


# ---------------------------------------------------------------------------
# short texts, encode once
# ---------------------------------------------------------------------------


def _scorer_with_short_text(dim: int, chars: int):
    import torch

    from policylens.summarizer.model_dir import ScorerConfig, SummarizerModel

    torch.manual_seed(0)
    return SummarizerModel(ScorerConfig(embedding_dim=dim, d_model=16, layers=1, heads=2),
                           meta={"short_text": {"chars": chars}})


def test_short_texts_get_the_lead_and_say_so(encoder):
    from inference.summarize import SHORT_TEXT

    document = doc(POLICY)
    body = sum(len(u.text) for u in sentence_units(document))
    lead = Summarizer(encoder, None).summarize(document, method="lead", max_sentences=2)
    short = Summarizer(encoder, _scorer_with_short_text(encoder.dim, body + 1))
    for method in ("auto", "trained"):
        summary = short.summarize(document, method=method, max_sentences=2)
        assert summary.method == SHORT_TEXT
        assert [s.text for s in summary.sentences] == [s.text for s in lead.sentences]
        assert any("short text" in n and str(body + 1) in n for n in summary.notes)
    assert short.summarize(document, method="textrank", max_sentences=2).method == "textrank"  # asked for: kept
    long_enough = Summarizer(encoder, _scorer_with_short_text(encoder.dim, body))  # the body is not below it
    assert long_enough.summarize(document, max_sentences=2).method == "trained"
    ruleless = Summarizer(encoder, _scorer_with_short_text(encoder.dim, body + 1), config=SelectConfig(short_text_rule=False))
    assert ruleless.summarize(document, max_sentences=2).method == "trained"


class CountingEncoder:
    """The encoder interface, counting every sentence it is asked to encode."""

    def __init__(self, inner) -> None:
        self.inner, self.calls, self.encoded = inner, 0, []
        self.name, self.dim, self.max_length, self.fingerprint = inner.name, inner.dim, inner.max_length, "count"

    def encode(self, texts, progress=None):
        self.calls += 1
        self.encoded.extend(texts)
        return self.inner.encode(list(texts))

    def encode_query(self, text):
        return self.inner.encode_query(text)


def test_prepare_encodes_every_sentence_of_many_documents_once_in_one_call(encoder):
    counting = CountingEncoder(encoder)
    summarizer = Summarizer(counting, None)
    first, second = doc(POLICY, "a"), doc(POLICY + "\n补充说明：各地要加快培育数据要素市场。\n", "b")
    texts = {u.text for d in (first, second) for u in sentence_units(d)}
    assert summarizer.prepare([first, second]) == len(texts)
    assert counting.calls == 1 and sorted(counting.encoded) == sorted(texts)  # one batch, no repeats
    before = summarizer.encoder.misses
    for document in (first, second):
        assert summarizer.summarize(document, method="textrank", max_sentences=2).sentences
    assert counting.calls == 1 and summarizer.encoder.misses == before  # summaries only looked vectors up
    assert summarizer.prepare([first]) == 0 and counting.calls == 1
    # documents under the short-text length are not encoded at all: their summary is the lead
    short = Summarizer(CountingEncoder(encoder), _scorer_with_short_text(encoder.dim, 10_000))
    assert short.prepare([first, second]) == 0 and short.encoder.inner.calls == 0


def test_the_batch_engine_lets_the_summariser_encode_a_whole_chunk_first():
    from inference.batch.chunk import analyze_chunk

    calls: list[tuple[str, list[str]]] = []

    class FakeSummarizer:
        def prepare(self, documents):
            calls.append(("prepare", [d.id for d in documents]))

    class FakePredictor:
        summarizer = FakeSummarizer()

        def analyze(self, documents, summary=True):
            calls.append(("analyze", [d.id for d in documents]))
            return [type("A", (), {"to_dict": lambda self: {"paragraphs": []}})() for _ in documents]

    chunk = [("k1", doc(POLICY, "a")), ("k2", doc(TRADITIONAL, "b"))]
    results = analyze_chunk(FakePredictor(), chunk, summary=True)
    assert [key for key, _ in results] == ["k1", "k2"]
    assert calls == [("prepare", ["a", "b"]), ("analyze", ["a", "b"])]  # one batched encoding, then the chunk
    calls.clear()
    analyze_chunk(FakePredictor(), chunk, summary=False)
    assert calls == [("analyze", ["a", "b"])]  # no summaries asked for: nothing encoded

    class Failing(FakeSummarizer):
        def prepare(self, documents):
            raise RuntimeError("encoder broke")

    predictor = FakePredictor()
    predictor.summarizer = Failing()
    assert len(analyze_chunk(predictor, chunk, summary=True)) == 2  # tagging goes on; summaries report alone
