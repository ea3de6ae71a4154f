"""Local evaluate metrics: hand-computed multi-label F1 and character ROUGE."""

from __future__ import annotations

import os
import socket

import pytest

from policylens.metrics import load_metric, markdown_table, multilabel_report

LABELS = ["a", "b", "c"]
# a: tp=1 (row 0), fn=1 (row 1), fp=1 (row 3) -> P=R=F1=0.5
# b: tp=2, fp=0, fn=0 -> 1.0;  c: no positives, none predicted -> 1.0, left out of macro
Y_TRUE = [[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0]]
Y_PRED = [[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0]]


@pytest.fixture(scope="module")
def offline_metrics():
    """Both modules loaded through evaluate with the hub offline and sockets refused."""
    import evaluate

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    mp = pytest.MonkeyPatch()
    mp.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise AssertionError("metric loading tried to reach the network")

    mp.setattr(socket.socket, "connect", no_network)
    try:
        yield {name: load_metric(name) for name in ("multilabel_f1", "char_rouge")}
    finally:
        mp.undo()


def test_modules_load_offline(offline_metrics) -> None:
    assert offline_metrics["multilabel_f1"].name == "multilabel_f1"
    assert offline_metrics["char_rouge"].name == "char_rouge"


def test_unknown_metric_name() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric("bleu")


def test_multilabel_hand_computed(offline_metrics) -> None:
    r = offline_metrics["multilabel_f1"].compute(predictions=Y_PRED, references=Y_TRUE, label_names=LABELS)
    assert r["per_label"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert r["per_label"]["b"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert r["per_label"]["c"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 0}
    assert r["macro_f1"] == pytest.approx(0.75)  # (0.5 + 1.0) / 2: c has no positives
    assert r["macro_precision"] == pytest.approx(0.75)
    assert r["micro_f1"] == pytest.approx(6 / 8)  # TP=3, FP=1, FN=1
    assert r["micro_precision"] == pytest.approx(0.75)
    assert r["exact_match"] == pytest.approx(0.5)  # rows 0 and 2
    assert r["none_accuracy"] == 1.0 and r["none_support"] == 1
    assert r["n"] == 4


def test_false_positives_on_absent_label() -> None:
    r = multilabel_report([[1, 0], [0, 0]], [[1, 1], [0, 1]], ["a", "b"])
    assert r["per_label"]["b"]["f1"] == 0.0 and r["per_label"]["b"]["support"] == 0
    assert r["macro_f1"] == 1.0  # only a has positives
    assert r["micro_f1"] == pytest.approx(2 / 4)  # TP=1, FP=2
    assert r["none_accuracy"] == 0.0
    assert r["exact_match"] == 0.0


def test_no_empty_rows_and_default_names() -> None:
    import numpy as np

    r = multilabel_report(np.array([[1, 0]]), np.array([[0, 1]]), ["x", "y"])
    assert r["none_accuracy"] is None
    assert r["macro_f1"] == 0.0 and r["micro_f1"] == 0.0
    from policylens.metrics.multilabel import multilabel_scores

    assert set(multilabel_scores([[1, 0]], [[1, 0]])["per_label"]) == {"label_0", "label_1"}
    with pytest.raises(ValueError):
        multilabel_scores([[1, 0]], [[1, 0, 0]])


def test_markdown_table() -> None:
    good = multilabel_report(Y_TRUE, Y_TRUE, LABELS)
    mixed = multilabel_report(Y_TRUE, Y_PRED, LABELS)
    table = markdown_table({"oracle": good, "sys": mixed}, LABELS).splitlines()
    assert table[0] == "| metric | oracle | sys |"
    assert table[2] == "| F1 a (n=2) | 1.000 | 0.500 |"
    assert "| macro-F1 | 1.000 | 0.750 |" in table
    assert "| exact match | 1.000 | 0.500 |" in table
    assert len(table) == 2 + len(LABELS) + 3


def _rouge(metric, prediction, reference, **kwargs) -> dict:
    return metric.compute(predictions=[prediction], references=[reference], **kwargs)


def test_rouge_identical_and_disjoint(offline_metrics) -> None:
    metric = offline_metrics["char_rouge"]
    same = _rouge(metric, "推动中小企业专精特新发展", "推动中小企业专精特新发展")
    assert all(value == pytest.approx(1.0) for value in same.values())
    disjoint = _rouge(metric, "碳达峰", "产业链")
    assert all(value == 0.0 for value in disjoint.values())


def test_rouge_hand_computed(offline_metrics) -> None:
    metric = offline_metrics["char_rouge"]
    # pred 5 chars, ref 7 chars, all 5 pred chars in order in ref
    r = _rouge(metric, "产业链稳定", "产业链安全稳定")
    assert r["rouge1_precision"] == pytest.approx(1.0) and r["rouge1_recall"] == pytest.approx(5 / 7)
    assert r["rouge1"] == pytest.approx(10 / 12)
    assert r["rouge2_precision"] == pytest.approx(3 / 4) and r["rouge2_recall"] == pytest.approx(3 / 6)
    assert r["rouge2"] == pytest.approx(0.6)
    assert r["rougeL"] == pytest.approx(10 / 12)
    # same characters, different order: unigrams all match, LCS is 产业链 (3 of 5)
    r = _rouge(metric, "稳定产业链", "产业链稳定")
    assert r["rouge1"] == pytest.approx(1.0)
    assert r["rouge2"] == pytest.approx(0.75)  # 产业, 业链, 稳定 of 4 bigrams each
    assert r["rougeL"] == pytest.approx(0.6)


def test_rouge_punctuation_whitespace_and_multi_reference(offline_metrics) -> None:
    metric = offline_metrics["char_rouge"]
    assert _rouge(metric, "产业链，稳定。", "产业链 稳定")["rougeL"] == pytest.approx(1.0)
    assert _rouge(metric, "产业链，稳定。", "产业链 稳定", remove_punctuation=False)["rougeL"] < 1.0
    r = metric.compute(predictions=["中小企业", "碳达峰"], references=[["产业链", "中小企业"], ["碳中和"]])
    assert r["rouge1"] == pytest.approx((1.0 + 1 / 3) / 2)  # best reference for row 1; only 碳 shared in row 2


def test_paired_bootstrap_interval_brackets_the_change() -> None:
    import numpy as np

    from policylens.metrics import paired_bootstrap_f1_change

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(300, 2))
    same = paired_bootstrap_f1_change(y, y, y, ["a", "b"])
    assert same["a"] == (0.0, 0.0) and same["macro_f1"] == (0.0, 0.0)
    worse = y.copy()
    worse[:150, 0] = 1 - worse[:150, 0]  # half of label a flipped: a clear loss, label b untouched
    interval = paired_bootstrap_f1_change(y, y, worse, ["a", "b"])
    assert interval["a"][1] < 0 and interval["b"] == (0.0, 0.0) and interval["macro_f1"][1] < 0
