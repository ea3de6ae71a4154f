"""TF-IDF and keyword baselines on a small synthetic Chinese task."""

from __future__ import annotations

import json

import numpy as np
import pytest

from policylens.metrics.multilabel import multilabel_scores
from policylens.taxonomy import Label, Taxonomy
from training.baselines import KeywordBaseline, TfidfBaseline

NAMES = ["net", "sme", "green"]
PHRASES = {
    "net": ["加快建设5G基站", "推进千兆光网覆盖", "提升移动通信网络质量", "支持电信运营商扩大宽带接入"],
    "sme": ["支持中小企业融资", "培育专精特新小巨人", "减轻小微企业负担", "清理拖欠民营企业账款"],
    "green": ["推动工业碳达峰", "实施节能降碳改造", "发展光伏和风电产业", "推进清洁生产和循环经济"],
}
FILLER = ["各地要加强组织领导", "完善工作机制", "做好宣传引导", "强化督促检查", "统筹推进各项任务", "确保政策落地见效"]


def synthetic(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Paragraphs of 1-2 filler clauses plus one phrase per active label (about 1 in 4 rows has none)."""
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, len(NAMES))) < 0.3).astype(int)
    texts = []
    for row in Y:
        clauses = list(rng.choice(FILLER, size=rng.integers(1, 3), replace=False))
        clauses += [str(rng.choice(PHRASES[name])) for name, on in zip(NAMES, row) if on]
        rng.shuffle(clauses)
        texts.append("，".join(clauses) + "。")
    return texts, Y


@pytest.fixture(scope="module")
def fitted() -> tuple[TfidfBaseline, list[str], np.ndarray]:
    train_x, train_y = synthetic(160, 0)
    dev_x, dev_y = synthetic(60, 1)
    test_x, test_y = synthetic(80, 2)
    return TfidfBaseline(label_names=NAMES).fit(train_x, train_y, dev_x, dev_y), test_x, test_y


def test_tfidf_learns_synthetic_task(fitted) -> None:
    model, test_x, test_y = fitted
    probs = model.predict_proba(test_x)
    assert probs.shape == (80, 3) and ((probs >= 0) & (probs <= 1)).all()
    report = multilabel_scores(model.predict(test_x), test_y, NAMES)
    assert report["macro_f1"] > 0.95
    assert report["exact_match"] > 0.9
    assert model.thresholds_.shape == (3,) and model.label_names_ == NAMES


def test_tfidf_features_match_sklearn(fitted) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    model, test_x, _ = fitted
    reference = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, vocabulary=model.vocabulary_)
    reference.fit(test_x)  # fixes vocabulary; idf replaced below
    reference.idf_ = model.model_.idf
    assert np.allclose(model.model_.features(test_x).toarray(), reference.transform(test_x).toarray())


def test_tfidf_save_load_round_trip(fitted, tmp_path) -> None:
    model, test_x, _ = fitted
    model.save(tmp_path / "tfidf")
    assert sorted(p.name for p in (tmp_path / "tfidf").iterdir()) == ["config.json", "lexical.json", "lexical.safetensors"]
    from safetensors.numpy import load_file

    assert set(load_file(str(tmp_path / "tfidf" / "lexical.safetensors"))) == {"idf", "coef", "intercept"}
    loaded = TfidfBaseline.load(tmp_path / "tfidf")
    assert np.array_equal(loaded.predict_proba(test_x), model.predict_proba(test_x))
    assert np.array_equal(loaded.thresholds_, model.thresholds_)
    assert loaded.label_names_ == NAMES and loaded.C == model.C


def test_word_ngrams_are_a_second_block_matching_sklearn(tmp_path) -> None:
    """With words, the features are [character block | word block], each the TfidfVectorizer formula on its own."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize as l2_normalize

    from policylens.chinese import word_ngrams

    train_x, train_y = synthetic(160, 0)
    test_x, _ = synthetic(30, 2)
    model = TfidfBaseline(label_names=NAMES, word_ngram_range=(1, 2)).fit(train_x, train_y)
    lexical = model.model_
    assert lexical.word_ngram_range == (1, 2) and "中小企业" in lexical.word_vocabulary
    assert any(" " in term for term in lexical.word_vocabulary)  # bigrams: space-joined words
    chars = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True).fit(train_x)
    words = TfidfVectorizer(analyzer=lambda t: word_ngrams(t, (1, 2)), min_df=2, sublinear_tf=True).fit(train_x)
    assert len(lexical.vocabulary) == len(chars.vocabulary_) and len(lexical.word_vocabulary) == len(words.vocabulary_)
    expected = hstack([l2_normalize(chars.transform(test_x)), l2_normalize(words.transform(test_x))]).toarray()
    order = [chars.vocabulary_[t] for t in lexical.vocabulary]
    order += [len(order) + words.vocabulary_[t] for t in lexical.word_vocabulary]
    assert np.allclose(lexical.features(test_x).toarray(), expected[:, order])

    model.save(tmp_path / "words")
    loaded = TfidfBaseline.load(tmp_path / "words")
    assert loaded.word_ngram_range == (1, 2)
    assert np.array_equal(loaded.predict_proba(test_x), model.predict_proba(test_x))


def test_too_few_rows_for_any_word_fall_back_to_characters() -> None:
    """min_df = 2 with every word in one text only: the lexical model keeps its character block alone."""
    model = TfidfBaseline(label_names=NAMES, word_ngram_range=(1, 2)).fit(["中小企业融资", "企业家光伏"], [[0, 1, 0], [0, 0, 1]])
    assert model.model_.word_ngram_range is None and model.model_.word_vocabulary == []
    assert model.predict_proba(["中小企业"]).shape == (1, 3)


def test_word_segmentation_normalised_text() -> None:
    from policylens.chinese import word_ngrams, words

    assert words("支持中小企业 发展 5G") == ["支持", "中小企业", "发展", "5g"]
    assert word_ngrams("支持中小企业发展", (1, 2)) == ["支持", "中小企业", "发展", "支持 中小企业", "中小企业 发展"]


def test_character_only_lexical_files_still_load(fitted, tmp_path) -> None:
    """A model saved before word n-grams (format /1) loads and scores as before."""
    model, test_x, _ = fitted
    model.save(tmp_path / "old")
    config_path = tmp_path / "old" / "lexical.json"
    config = json.loads(config_path.read_text())
    assert "word_vocabulary" not in config
    config_path.write_text(json.dumps({**config, "format": "policylens-lexical/1"}))
    assert np.array_equal(TfidfBaseline.load(tmp_path / "old").predict_proba(test_x), model.predict_proba(test_x))


def test_tfidf_load_rejects_other_directories(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a"):
        TfidfBaseline.load(tmp_path)


def test_tfidf_single_class_label_and_no_dev() -> None:
    texts, Y = synthetic(40, 3)
    Y[:, 2] = 0  # never positive in train
    model = TfidfBaseline(label_names=NAMES).fit(texts, Y)
    assert model.thresholds_.tolist() == [0.5, 0.5, 0.5]
    assert (model.predict(texts)[:, 2] == 0).all()


def test_keyword_baseline_default_taxonomy() -> None:
    model = KeywordBaseline().fit()
    assert model.label_names_ == ["5g", "sme", "carbon", "supply_chain"]
    texts = [
        "加快5G基站和千兆光网建设。",
        "支持专精特新中小企业发展。",
        "推进工业领域碳达峰，实施节能降碳改造。",
        "提升产业链供应链韧性和安全水平。",
        "推動中小企業數字化轉型。",  # Traditional: normalised before matching
        "扩大5g网络覆盖，帮助小微企业降低成本。",  # lower-case 5g
        "加强知识产权保护，优化营商环境。",
    ]
    assert model.predict(texts).tolist() == [
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 0, 0, 1],
        [0, 1, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 0, 0],
    ]
    assert model.predict_proba(texts[:1]).dtype == float


def test_keyword_baseline_custom_taxonomy_and_keyword_lists() -> None:
    taxonomy = Taxonomy([Label("ai", "人工智能", "AI", keywords=("人工智能", "大模型")), Label("x", "空", "empty")])
    assert KeywordBaseline(taxonomy).predict(["发展大模型产业", "其他"]).tolist() == [[1, 0], [0, 0]]
    for label in Taxonomy.load().labels:
        assert 10 <= len(label.keywords) <= 25 and len(set(label.keywords)) == len(label.keywords)
