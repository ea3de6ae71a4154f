"""Summariser training pieces: char ROUGE, oracle labels, splits, cache, scorer, benchmark plumbing.

Texts are written for these tests; the encoder is a tiny random BERT built here.
"""

from __future__ import annotations

import string

import numpy as np
import pytest

from policylens.chinese import normalize
from policylens.document import Document
from policylens.encoders.e5 import SentenceEncoder, encode_cached
from policylens.metrics.rouge import rouge_tokens
from policylens.summarizer.features import hand_features, textrank_scores
from policylens.summarizer.model_dir import ScorerConfig, SummarizerModel
from policylens.summarizer.news import NewsPair, split_by_date
from policylens.summarizer.oracle import oracle_labels
from policylens.summarizer.units import sentence_units
from training.summarizer.train import (
    Example,
    TrainConfig,
    build_examples,
    example_loss,
    train_scorer,
    train_summarizer,
)

BODIES = [
    "国务院常务会议部署加快推进制造业数字化转型。会议指出，要扩大工业互联网平台应用规模。会议还研究了其他事项。",
    "财政部发布通知。通知明确，对符合条件的中小企业给予一次性奖励，降低企业融资成本。各地要抓好落实。",
    "记者从工业和信息化部获悉，5G网络和数据中心建设加快推进。截至目前，5G基站总数持续增长。专家表示前景广阔。",
    "生态环境部召开会议。会议要求实施绿色制造工程，推动节能降碳。钢铁、水泥等行业严格控制新增产能。",
]
HEADLINES = ["制造业数字化转型加快推进", "中小企业获一次性奖励", "5G网络建设加快推进", "绿色制造推动节能降碳"]


def _pairs(n: int = 24) -> list[NewsPair]:
    return [NewsPair(i, f"202401{1 + i // 2:02d}", HEADLINES[i % 4], BODIES[i % 4]) for i in range(n)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> SentenceEncoder:
    """Tiny random BERT (hidden 32) with a WordPiece vocabulary of the characters used here."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny_encoder")
    chars = sorted(set("".join(BODIES + HEADLINES) + string.printable) - set(string.whitespace))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "passage"] + chars
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(out / "vocab.txt")).save_pretrained(out)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config, add_pooling_layer=False).save_pretrained(out)
    return SentenceEncoder(str(out), max_length=64)


# ---------------------------------------------------------------------------
# ROUGE at character level
# ---------------------------------------------------------------------------


def test_char_rouge_scores_identical_chinese_1_where_the_default_tokenizer_scores_0():
    from rouge_score import rouge_scorer

    from policylens.metrics import load_metric

    text = "工业和信息化部推动中小企业数字化转型"
    default = rouge_scorer.RougeScorer(["rougeL"]).score(text, text)["rougeL"].fmeasure
    assert default == 0.0  # the pitfall: the stock tokenizer keeps only [a-z0-9]
    scores = load_metric("char_rouge").compute(predictions=[text], references=[text])
    assert scores["rouge1"] == scores["rouge2"] == scores["rougeL"] == 1.0
    half = load_metric("char_rouge").compute(predictions=["工业互联网"], references=["工业互联网平台建设"])
    assert 0 < half["rougeL"] < 1


def test_rouge_tokens_are_characters_without_punctuation():
    assert rouge_tokens("５Ｇ网络，加快 建设！") == ["5", "g", "网", "络", "加", "快", "建", "设"]


# ---------------------------------------------------------------------------
# oracle labels
# ---------------------------------------------------------------------------


def test_oracle_picks_the_sentence_closest_to_the_headline():
    sentences = ["会议还研究了其他事项。", "要扩大工业互联网平台应用规模。", "天气晴朗。"]
    assert oracle_labels(sentences, "扩大工业互联网平台应用") == [0, 1, 0]


def test_oracle_adds_a_second_sentence_only_when_it_raises_rouge():
    sentences = ["中小企业获得奖励。", "无关的内容在这里。", "融资成本明显降低。"]
    assert oracle_labels(sentences, "中小企业获得奖励融资成本降低") == [1, 0, 1]
    assert oracle_labels(sentences, "中小企业获得奖励") == [1, 0, 0]
    assert oracle_labels(sentences, "完全不同") == [0, 0, 0]
    assert oracle_labels([], "标题") == []


# ---------------------------------------------------------------------------
# data: sentences, date split, cache
# ---------------------------------------------------------------------------


def test_sentence_units_point_into_the_document():
    long_line = "第三句话没有句号，但这一段足够长，不是标题也不是署名"
    text = (f"  第一句话在这里。\n第二句话，在这里！{long_line}\n好的\n国务院总理\n各有关单位：\n"
            "主要目标是：增长5%左右；就业1200万人以上；收入同步增长。")
    document = Document(id="n", text=text)
    units = sentence_units(document)
    # "好的": a fragment; "国务院总理" / "各有关单位：": signature and addressee lines, never summary sentences;
    # clauses cut at "；" are rejoined into their sentence
    assert [u.text for u in units] == ["第一句话在这里。", "第二句话，在这里！", long_line,
                                       "主要目标是：增长5%左右；就业1200万人以上；收入同步增长。"]
    for u in units:
        assert normalize(document.text[u.start : u.end]) == u.text


def test_split_by_date_holds_out_whole_latest_days():
    train, dev = split_by_date(_pairs(24), dev_size=5, train_size=None)
    assert len(train) + len(dev) == 24 and len(dev) >= 5
    assert max(p.date for p in train) < min(p.date for p in dev)
    sampled, _ = split_by_date(_pairs(24), dev_size=5, train_size=4)
    assert len(sampled) == 4 and max(p.date for p in sampled) < min(p.date for p in dev)


def test_examples_are_labelled_and_embeddings_cached(encoder, tmp_path, monkeypatch):
    examples = build_examples(_pairs(4), encoder, cache_dir=tmp_path, log=lambda m: None)
    assert len(examples) == 4
    for e in examples:
        assert e.embeddings.shape == (len(e.units), encoder.dim) and e.labels.sum() >= 1
        assert e.features.shape[0] == len(e.units)
    monkeypatch.setattr(encoder, "encode", lambda texts: pytest.fail("should come from the cache"))
    again = encode_cached(encoder, [u.text for u in examples[0].units], tmp_path, log=lambda m: None)
    np.testing.assert_allclose(again, examples[0].embeddings, atol=1e-6)


def test_textrank_prefers_the_central_sentence():
    emb = np.asarray([[1, 0, 0], [0.9, 0.3, 0], [0.9, -0.3, 0], [0, 0, 1.0]], dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    scores = textrank_scores(emb)
    assert abs(scores.sum() - 1) < 1e-5 and int(np.argmax(scores)) == 0
    assert textrank_scores(emb[:1]).tolist() == [1.0] and len(textrank_scores(emb[:0])) == 0
    # with the position prior, a sentence further down loses rank to an equally central earlier one
    twins = np.asarray([[0.9, 0.3, 0], [0.9, -0.3, 0], [1, 0, 0], [0, 0, 1.0]], dtype=np.float32)
    twins /= np.linalg.norm(twins, axis=1, keepdims=True)
    plain, biased = textrank_scores(twins), textrank_scores(twins, position_bias=1.0)
    assert abs(plain[0] - plain[1]) < 1e-6 and biased[0] > biased[1]


# ---------------------------------------------------------------------------
# the scorer
# ---------------------------------------------------------------------------


def _synthetic(n_docs: int, seed: int = 0) -> list[Example]:
    """Documents of random unit vectors where the positive sentence points along axis 0."""
    rng = np.random.default_rng(seed)
    examples = []
    for d in range(n_docs):
        n = int(rng.integers(3, 9))
        emb = rng.normal(size=(n, 16)).astype(np.float32)
        target = int(rng.integers(0, n))
        emb[target, 0] += 4.0
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        units = sentence_units(Document(id=f"s{d}", text="".join(f"第{i}句话在这里。" for i in range(n))))
        labels = np.zeros(n, dtype=np.float32)
        labels[target] = 1
        examples.append(Example(f"s{d}", units, emb, hand_features(units, emb), labels, units[target].text))
    return examples


def test_training_lowers_the_loss_and_save_load_round_trips(tmp_path):
    train, valid = _synthetic(64), _synthetic(16, seed=1)
    config = ScorerConfig(embedding_dim=16, d_model=32, layers=1, heads=2)
    before = example_loss(SummarizerModel(config).module, train)
    result = train_scorer(train, valid, config, TrainConfig(epochs=15, batch_size=16, learning_rate=3e-3, patience=20),
                          log=lambda m: None)
    after = example_loss(result.model.module, train)
    assert after < 0.7 * before
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    hits = np.mean([np.argmax(result.model.scores(e.embeddings, e.features)) == np.argmax(e.labels) for e in valid])
    assert hits > 0.5  # a random pick would hit ~1 in 5
    result.model.save(tmp_path / "m")
    loaded = SummarizerModel.load(tmp_path / "m")
    e = valid[0]
    np.testing.assert_allclose(loaded.scores(e.embeddings, e.features), result.model.scores(e.embeddings, e.features),
                               atol=1e-6)


def test_long_inputs_are_scored_in_windows():
    model = SummarizerModel(ScorerConfig(embedding_dim=16, d_model=32, layers=1, heads=2, max_sentences=4))
    e = _synthetic(1)[0]
    emb = np.concatenate([e.embeddings] * 3)
    assert model.scores(emb, np.concatenate([e.features] * 3)).shape == (len(emb),)


def test_configs_are_validated():
    with pytest.raises(ValueError):
        ScorerConfig(d_model=30, heads=4)
    with pytest.raises(ValueError):
        TrainConfig(learning_rate=0)


def test_trained_summariser_is_evaluated_end_to_end_on_a_tiny_set(encoder, tmp_path):
    from inference.summary_eval import evaluate_summaries

    pairs = _pairs(24)
    train_summarizer(tmp_path / "model", pairs=pairs, encoder=encoder, dev_size=4, train_size=16, policy_items=[],
                     cache_dir=tmp_path / "cache", log=lambda m: None)
    assert (tmp_path / "model" / "model.safetensors").exists()
    report = evaluate_summaries(max_docs=4, pairs=pairs, encoder=encoder, dev_size=4, model_dir=tmp_path / "model",
                                cache_dir=tmp_path / "cache", log=lambda m: None)
    systems = {(r.system, r.budget) for r in report.rows}
    assert {("Lead-1", "1 sentence"), ("TextRank (classic)", "1 sentence"), ("Trained scorer", "1 sentence"),
            ("Lead-3", "3 sentences")} <= systems
    assert all(0 <= r.rougeL <= 1 for r in report.rows) and "| Lead-1 |" in report.markdown()


# ---------------------------------------------------------------------------
# policy documents: training with them, cross-validated evaluation (a tiny synthetic set)
# ---------------------------------------------------------------------------

_AIMS = ["数字经济", "先进制造业", "绿色低碳发展", "中小企业发展", "信息通信业", "产业链供应链"]
_TASKS = {
    "5g": "加快5G基站和千兆光网建设，扩大网络覆盖",
    "sme": "加大对中小企业的融资支持，培育专精特新中小企业",
    "carbon": "推动工业节能降碳，建设绿色工厂",
    "supply_chain": "实施强链补链行动，提升产业链供应链韧性",
}
_FILLER = ["各部门要密切配合，形成工作合力。", "有关单位要结合实际抓好落实。", "要及时总结推广典型经验。"]


def _policy_items(n: int = 9):
    """Synthetic plans: purpose, a year target, numbered tasks (two domains each), safeguards; the
    reference summary restates purpose, target and tasks, each domain's reference its task."""
    from policylens.summarizer.policy import PolicyItem

    domains = list(_TASKS)
    items = []
    for i in range(n):
        aim, chosen = _AIMS[i % len(_AIMS)], [domains[i % 4], domains[(i + 1) % 4]]
        target = f"到202{5 + i % 3}年，{aim}规模达到{10 + i}万亿元以上。"
        tasks = "".join(f"（{'一二'[k]}）{_TASKS[d]}。{_FILLER[(i + k) % 3]}\n" for k, d in enumerate(chosen))
        text = (f"关于推动{aim}的实施方案\n\n为加快推动{aim}，制定本方案。\n\n一、总体要求\n{target}{_FILLER[i % 3]}\n\n"
                f"二、主要任务\n{tasks}\n三、保障措施\n各地要加强组织领导，强化资金保障。\n")
        summary = f"本文件旨在加快推动{aim}。{target}主要任务包括{_TASKS[chosen[0]]}，{_TASKS[chosen[1]]}。"
        items.append(PolicyItem(f"plan-{i}", text, summary, {d: f"方案提出{_TASKS[d]}。" for d in chosen}))
    return items


def test_policy_examples_are_labelled_against_the_written_summary(encoder, tmp_path):
    from training.summarizer.train import build_policy_examples, windows

    examples = build_policy_examples(_policy_items(3), encoder, cache_dir=tmp_path, log=lambda m: None)
    assert len(examples) == 3
    for e in examples:
        picked = [u.text for u, keep in zip(e.units, e.labels) if keep]
        assert e.genre == 1.0 and picked and sum(map(len, picked)) <= 250
        assert any(t.startswith("到202") for t in picked)  # the target sentence is in the oracle summary
    cut = windows(examples, 4)
    assert sum(len(w.units) for w in cut) == sum(len(e.units) for e in examples) and max(len(w.units) for w in cut) <= 4


def test_policy_cross_validation_end_to_end_on_a_tiny_set(encoder, tmp_path):
    from inference.summary_eval import evaluate_policy
    from policylens.taxonomy import Taxonomy
    from training.summarizer.train import (
        build_news_data,
        build_policy_examples,
        make_fold_trainer,
    )

    items = _policy_items(9)
    config = TrainConfig(epochs=2, batch_size=8, patience=0)
    scorer = ScorerConfig(embedding_dim=encoder.dim, d_model=16, layers=1, heads=2)
    news = build_news_data(encoder, pairs=_pairs(24), train_size=16, dev_size=4, config=config,
                           cache_dir=tmp_path, log=lambda m: None)
    examples = build_policy_examples(items, encoder, cache_dir=tmp_path, log=lambda m: None)
    trained_on: list[set[str]] = []
    inner = make_fold_trainer(news, examples, encoder, Taxonomy.load(), scorer_config=scorer, config=config,
                              log=lambda m: None)

    def train_fold(train_items):
        trained_on.append({i.doc_id for i in train_items})
        return inner(train_items)

    report = evaluate_policy(items, train_fold=train_fold, encoder=encoder, k=3, cache_dir=tmp_path,
                             log=lambda m: None)
    # every fold trained without its own documents, and every document was held out once
    assert len(trained_on) == 3 and all(len(t) == 6 for t in trained_on)
    assert set.union(*trained_on) == {i.doc_id for i in items} and not set.intersection(*trained_on)
    summary_rows = {r.system for r in report.rows if r.task == "summary"}
    assert {"Lead-250 (lead sentences)", "Trained scorer", "TextRank + position", "Greedy oracle (ceiling)"} <= summary_rows
    assert {r.system for r in report.rows if r.task == "domain"} == {
        "First keyword sentences", "Trained domain summary", "Greedy oracle (ceiling)"}
    for row in report.rows:
        assert len(row.folds) == 3 and all(0 <= f["rougeL"] <= 1 for f in row.folds)
        assert row.pooled["n"] == (9 if row.task == "summary" else 18)
    oracle, lead = report.row("Greedy oracle (ceiling)", "summary"), report.row("Lead-250 (lead sentences)", "summary")
    assert oracle.pooled["rougeL"] > lead.pooled["rougeL"]
    assert report.meta["addressed"]["pairs"] == 9 * 4 and report.meta["domain_pairs"] == 18
    text = report.markdown()
    assert "| Trained scorer |" in text and " ± " in text and "3 folds" in text
