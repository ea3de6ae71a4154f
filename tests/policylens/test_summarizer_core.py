"""The summariser's core pieces: the per-run embedding cache, policy data and folds, structure
features, the budgeted oracle, the domain heads.

Texts are written for these tests; no model is loaded.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from policylens.document import Document
from policylens.io import InputError
from policylens.summarizer.domains import (
    DOCUMENT_FEATURES,
    SENTENCE_FEATURES,
    DomainHeads,
    LogisticHead,
    pick_domain_sentences,
    sentence_features,
    untrained_heads,
)
from policylens.summarizer.embedding_cache import CachedEncoder, sentence_key
from policylens.summarizer.features import (
    FEATURE_NAMES,
    STRUCTURE_FEATURES,
    hand_features,
)
from policylens.summarizer.oracle import oracle_labels
from policylens.summarizer.policy import PolicyItem, cv_folds, load_policy_items
from policylens.summarizer.structure import genre_of, is_structured
from policylens.summarizer.units import sentence_units

PLAN = """关于加快发展数字经济的行动方案

为深入贯彻落实党中央决策部署，加快发展数字经济，制定本方案。

一、总体要求
到2025年，数字经济核心产业增加值占比达到10%以上。

二、主要任务
（一）建设新型基础设施。加快5G网络建设。
（二）支持中小企业数字化转型。降低中小企业融资成本。

三、保障措施
各地要加强组织领导，强化资金保障。
"""


class FakeEncoder:
    """Deterministic vectors from the text; counts what it encodes."""

    name, dim, max_length, fingerprint = "fake", 4, 32, "fake:1"

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def encode(self, texts, progress=None):
        self.batches.append(list(texts))
        return np.asarray([[len(t), t.count("的"), ord(t[0]) % 7, 1.0] for t in texts], dtype=np.float32)

    def encode_query(self, text):
        return np.asarray([0, 0, 0, 2.0], dtype=np.float32)


# ---------------------------------------------------------------------------
# the embedding cache
# ---------------------------------------------------------------------------


def test_cache_encodes_each_distinct_sentence_once_and_returns_the_same_vectors():
    inner = FakeEncoder()
    cache = CachedEncoder(inner)
    first = cache.encode(["甲句。", "乙句的。", "甲句。"])
    assert inner.batches == [["甲句。", "乙句的。"]]  # the repeat inside one call is encoded once
    again = cache.encode(["乙句的。", "丙句。", "甲句。"])
    assert inner.batches[1:] == [["丙句。"]]  # only the new sentence reaches the encoder
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(again[0], first[1])
    np.testing.assert_array_equal(again[2], first[0])
    assert (cache.hits, cache.misses) == (3, 3) and len(cache) == 3
    assert cache.name == "fake" and cache.dim == 4 and cache.fingerprint == "fake:1"


def test_cache_keys_are_hashes_and_queries_are_kept_apart_from_passages():
    assert sentence_key("一句话。") == sentence_key("一句话。") and len(sentence_key("一句话。")) == 16
    assert sentence_key("一句话。") != sentence_key("一句话。", "query")
    inner = FakeEncoder()
    cache = CachedEncoder(inner)
    passage = cache.encode(["中小企业"])[0]
    query = cache.encode_query("中小企业")
    assert not np.array_equal(passage, query)
    cache.encode_query("中小企业")
    assert cache.hits == 1


def test_cache_evicts_the_least_recently_used_vectors():
    inner = FakeEncoder()
    cache = CachedEncoder(inner, capacity=2)
    cache.encode(["一。", "二。"])
    cache.encode(["一。"])  # touch: "二。" is now the oldest
    cache.encode(["三。"])
    assert len(cache) == 2
    cache.encode(["一。", "二。"])
    assert inner.batches[-1] == ["二。"]  # evicted, encoded again; "一。" stayed
    with pytest.raises(ValueError):
        CachedEncoder(inner, capacity=0)


def test_cache_can_be_primed_from_precomputed_vectors():
    inner = FakeEncoder()
    cache = CachedEncoder(inner)
    cache.prime(["一。"], np.ones((1, 4), dtype=np.float32))
    np.testing.assert_array_equal(cache.encode(["一。"])[0], np.ones(4))
    assert inner.batches == []


# ---------------------------------------------------------------------------
# policy documents: loading and folds
# ---------------------------------------------------------------------------


def _write(tmp_path, rows, corpus):
    summaries, docs = tmp_path / "policy_summaries.jsonl", tmp_path / "corpus.jsonl"
    summaries.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    docs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in corpus), encoding="utf-8")
    return summaries, docs


def test_policy_items_join_the_corpus_and_normalise(tmp_path):
    summaries, docs = _write(tmp_path, [
        {"doc_id": "p1", "title": "Plan", "summary": "本文件是數字經濟方案。", "domains": {"sme": "支持中小企業。"}},
        {"doc_id": "p2", "summary": "另一份文件。"},
    ], [{"doc_id": "p1", "source": "policy", "text": PLAN}, {"doc_id": "p2", "source": "gov_work_report", "text": "正文。"},
        {"doc_id": "n1", "source": "news", "text": "新闻。"}])
    items = load_policy_items(summaries, docs, labels=["sme", "5g"])
    assert [i.doc_id for i in items] == ["p1", "p2"]
    assert items[0].summary == "本文件是数字经济方案。" and items[0].domains == {"sme": "支持中小企业。"}
    assert items[0].text == PLAN and items[1].source == "gov_work_report" and items[1].domains == {}
    document = items[0].document()
    assert document.id == "p1" and document.meta["source"] == "policy"


@pytest.mark.parametrize("row, corpus_ids, message", [
    ({"doc_id": "missing", "summary": "摘要。"}, ["p1"], "not in"),
    ({"doc_id": "p1", "summary": ""}, ["p1"], "'summary'"),
    ({"doc_id": "p1", "summary": "摘要。", "domains": {"carbon": "碳。"}}, ["p1"], "unknown domain"),
    ({"doc_id": "p1", "summary": "摘要。", "domains": ["sme"]}, ["p1"], "'domains'"),
    ({"summary": "摘要。"}, ["p1"], "'doc_id'"),
])
def test_bad_policy_rows_name_the_line_and_the_reason(tmp_path, row, corpus_ids, message):
    summaries, docs = _write(tmp_path, [row], [{"doc_id": d, "text": "正文。"} for d in corpus_ids])
    with pytest.raises(InputError, match=message) as info:
        load_policy_items(summaries, docs, labels=["sme"])
    assert f"{summaries}:1" in str(info.value)


def test_duplicate_policy_rows_are_refused(tmp_path):
    summaries, docs = _write(tmp_path, [{"doc_id": "p1", "summary": "一。"}, {"doc_id": "p1", "summary": "二。"}],
                             [{"doc_id": "p1", "text": "正文。"}])
    with pytest.raises(InputError, match=":2: doc_id 'p1' appears twice"):
        load_policy_items(summaries, docs)


def test_folds_are_grouped_balanced_and_independent_of_order():
    items = [PolicyItem(f"d{i}", "正文。", "摘要。") for i in range(23)]
    folds = cv_folds(items, 5)
    sizes = [folds.count(k) for k in range(5)]
    assert max(sizes) - min(sizes) <= 1 and set(folds) == set(range(5))
    shuffled = list(reversed(items))
    assert dict(zip([i.doc_id for i in shuffled], cv_folds(shuffled, 5))) == dict(zip([i.doc_id for i in items], folds))
    assert cv_folds(items, 5, seed=1) != folds
    with pytest.raises(ValueError):
        cv_folds(items[:3], 5)


# ---------------------------------------------------------------------------
# structure features and genre
# ---------------------------------------------------------------------------


def test_structure_features_read_targets_tasks_measures_and_safeguards():
    units = sentence_units(Document(id="plan", text=PLAN))
    feats = hand_features(units, np.eye(len(units), 4, dtype=np.float32), genre=1.0)
    assert feats.shape == (len(units), len(FEATURE_NAMES))
    column = {name: feats[:, FEATURE_NAMES.index(name)] for name in STRUCTURE_FEATURES}
    text = [u.text for u in units]

    def row(start: str) -> int:
        return next(i for i, t in enumerate(text) if t.startswith(start))

    assert column["genre_policy"].min() == 1.0
    assert column["purpose"][row("为深入贯彻")] == 1 and column["purpose"][row("到2025年")] == 0
    assert column["year_target"][row("到2025年")] == 1 and column["in_goal_section"][row("到2025年")] == 1
    assert column["run_in"][row("（一）建设")] == 1 and column["numbered"][row("（二）支持")] == 1
    assert column["in_task_section"][row("加快5G")] == 1 and column["in_task_section"][row("到2025年")] == 0
    assert column["in_safeguard_section"][row("各地要加强")] == 1
    assert 0 <= column["section_rank"].min() and column["section_rank"].max() == 1


def test_genre_comes_from_the_source_or_the_structure():
    plan = sentence_units(Document(id="plan", text=PLAN))
    news = sentence_units(Document(id="news", text="记者从工信部获悉，5G基站总数持续增长。专家表示前景广阔。"))
    assert is_structured(plan) and not is_structured(news)
    assert genre_of(plan) == 1.0 and genre_of(news) == 0.0
    assert genre_of(plan, "news") == 0.0 and genre_of(news, "policy") == 1.0


def test_oracle_respects_a_character_budget():
    sentences = ["支持中小企业发展壮大。", "推动制造业数字化转型升级和高质量发展。", "加快建设五G网络。"]
    reference = "支持中小企业发展壮大，推动制造业数字化转型升级。"
    free = oracle_labels(sentences, reference, max_selected=3)
    assert free[:2] == [1, 1]
    tight = oracle_labels(sentences, reference, max_selected=3, max_chars=20)
    assert sum(len(s) for s, keep in zip(sentences, tight) if keep) <= 20 and sum(tight) == 1
    # when no sentence fits, the best one alone is still taken
    assert sum(oracle_labels(sentences, reference, max_chars=5)) == 1


# ---------------------------------------------------------------------------
# domain heads
# ---------------------------------------------------------------------------


def test_domain_sentence_features_count_keywords_and_rank_similarity():
    units = sentence_units(Document(id="plan", text=PLAN))
    sims = np.linspace(0.9, 0.1, len(units)).astype(np.float32)
    feats = sentence_features(units, ["中小企业", "融资"], sims)
    assert feats.shape == (len(units), len(SENTENCE_FEATURES))
    hit = [i for i, u in enumerate(units) if "中小企业" in u.text]
    assert hit and all(feats[i, 0] == 1 for i in hit) and feats[:, 0].sum() == len(hit)
    both = next(i for i, u in enumerate(units) if "融资" in u.text)
    assert feats[both, 2] == pytest.approx(2 / 3)
    assert feats[0, SENTENCE_FEATURES.index("query_sim_rank")] == 1.0


def test_domain_heads_round_trip_and_refuse_other_features():
    heads = untrained_heads()
    again = DomainHeads.from_dict(json.loads(json.dumps(heads.to_dict())))
    x = np.random.default_rng(0).normal(size=(5, len(SENTENCE_FEATURES)))
    np.testing.assert_allclose(again.sentence(x), heads.sentence(x), atol=1e-5)
    broken = heads.to_dict()
    broken["document"]["features"] = list(DOCUMENT_FEATURES[:-1])
    with pytest.raises(ValueError, match="features"):
        DomainHeads.from_dict(broken)
    with pytest.raises(ValueError):
        LogisticHead(("a",), [float("nan")], 0.0, [0.0], [1.0])
    with pytest.raises(ValueError):
        DomainHeads(heads.sentence, heads.document, threshold=1.5)


def test_domain_picks_stop_at_weak_sentences_and_keep_the_budget():
    units = sentence_units(Document(id="plan", text=PLAN))
    probs = np.zeros(len(units), dtype=np.float32)
    probs[3], probs[4], probs[5] = 0.9, 0.6, 0.2
    assert pick_domain_sentences(units, probs, 500, 0.5) == [3, 4]  # 0.2 < 0.5 x 0.9: left out
    assert pick_domain_sentences(units, probs, 500, 0.0, max_sentences=3) == [3, 4, 5]
    one = pick_domain_sentences(units, probs, len(units[3].text), 0.5)
    assert one == [3]
