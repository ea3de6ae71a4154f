"""Cross-validation grouped by document (training/cv.py) on the tiny texts and the tiny backbone."""

import numpy as np
import pytest
from test_tagger import make_splits, tiny_config

from policylens.taxonomy import Taxonomy
from training.cv import (
    CVConfig,
    OutOfFold,
    cross_validate,
    document_folds,
    oof_encoder,
    run_experiment,
)
from training.cv_report import (
    cv_markdown,
    cv_report,
    fold_summary,
    load_oof,
    paired_summary,
    row_slices,
    save_oof,
    slice_summary,
)


@pytest.fixture(scope="module")
def rows():
    taxonomy = Taxonomy.load()
    splits = make_splits(taxonomy)
    return [row for split in ("train", "dev", "test") for row in splits[split]]


def test_folds_keep_documents_whole_and_are_deterministic(rows):
    folds = document_folds(rows, 4, seed=3)
    by_doc = {}
    for row, fold in zip(rows, folds):
        by_doc.setdefault(row["doc_id"], set()).add(int(fold))
    assert all(len(f) == 1 for f in by_doc.values())
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3]
    assert np.array_equal(folds, document_folds(list(reversed(rows)), 4, seed=3)[::-1])


def test_a_label_correction_does_not_move_any_document_to_another_fold(rows):
    """Folds are stratified on the labels as first read, so runs before and after a correction file pair row by row."""
    before = document_folds(rows, 4, seed=3)
    corrected = [dict(r, labels=[], labels_before=r["labels"]) if i % 3 == 0 else r for i, r in enumerate(rows)]
    relabelled_in_place = [dict(r, labels=[]) if i % 3 == 0 else r for i, r in enumerate(rows)]
    assert np.array_equal(document_folds(corrected, 4, seed=3), before)
    assert not np.array_equal(document_folds(relabelled_in_place, 4, seed=3), before)  # what it guards against


def test_baselines_get_out_of_fold_scores_on_the_same_folds(rows):
    taxonomy = Taxonomy.load()
    oof = cross_validate(rows, taxonomy, cv=CVConfig(folds=3, systems=("tfidf", "keyword")), progress=False)
    assert set(oof.scores) == {"tfidf", "keyword"} and oof.scores["tfidf"].shape == (len(rows), 4)
    report = cv_report(oof)
    assert report["tfidf"]["macro_f1"] > 0.8  # each tiny topic repeats across documents
    assert len(report["tfidf"]["per_fold_macro_f1"]) == 3 and report["tfidf"]["macro_f1_std"] >= 0
    assert "| tfidf |" in cv_markdown(report, taxonomy.ids)


def test_fold_summary_is_the_mean_and_spread_of_the_folds():
    y = np.array([[1], [0], [1], [0]])
    pred = np.array([[1], [0], [0], [1]])  # fold 0 perfect, fold 1 all wrong
    summary = fold_summary(y, pred, np.array([0, 0, 1, 1]), ["x"])
    assert summary["per_fold_macro_f1"] == [1.0, 0.0] and summary["macro_f1"] == 0.5
    assert summary["macro_f1_std"] == pytest.approx(np.std([1.0, 0.0], ddof=1), abs=1e-4)


def test_the_paired_comparison_says_where_the_default_is_ahead_by_more_than_the_spread():
    y = np.array([[1, 1], [0, 1], [1, 1], [0, 1], [1, 1], [0, 1]])
    folds = np.array([0, 0, 1, 1, 2, 2])
    preds = {"ensemble": y.copy(),  # perfect
             "b": np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 1], [1, 1]])}  # label a: only fold 2 worse
    paired = paired_summary(y, preds, folds, ["a", "b"], "ensemble")["b"]
    a, b = paired["per_label"]["a"], paired["per_label"]["b"]
    assert a["ahead"] == 1 and a["folds"] == 3 and a["mean"] == pytest.approx(1 / 9, abs=1e-4)
    assert not a["beyond_spread"]  # ahead in one fold only: the spread is larger than the mean
    assert b["ahead"] == 2 and b["mean"] == pytest.approx(2 / 9, abs=1e-4) and b["beyond_spread"]
    assert paired["macro_f1"]["mean"] == pytest.approx((1 / 9 + 2 / 9) / 2, abs=1e-4)
    markdown = cv_markdown({"paired": {"b": paired}}, ["a", "b"])
    assert "| b | +0.167 ± " in markdown and "(2/3) ✓" in markdown


def test_slices_score_each_genre_and_the_annotators_certainty_apart():
    rows = [{"source": "news", "unsure": False}, {"source": "news", "unsure": True},
            {"source": "policy", "unsure": False}, {"source": "policy"}]
    slices = row_slices(rows)
    assert slices == {"source": ["news", "news", "policy", "policy"],
                      "annotator": ["sure", "unsure", "sure", "not recorded"]}
    y = np.array([[1, 0], [1, 0], [0, 1], [1, 1]])
    pred = np.array([[1, 0], [0, 0], [0, 1], [1, 0]])
    by_slice = {(e["slice"], e["value"]): e for e in slice_summary(y, {"m": pred}, slices, ["a", "b"])}
    news = by_slice["source", "news"]
    assert news["rows"] == 2 and news["positives"] == {"a": 2, "b": 0}
    assert news["systems"]["m"]["per_label"] == {"a": pytest.approx(2 / 3, abs=1e-4), "b": None}  # no positive: no F1
    assert news["systems"]["m"]["macro_f1"] == pytest.approx(2 / 3, abs=1e-4)
    policy = by_slice["source", "policy"]["systems"]["m"]
    assert policy["per_label"] == {"a": 1.0, "b": pytest.approx(2 / 3, abs=1e-4)}
    assert by_slice["annotator", "unsure"]["systems"]["m"]["macro_f1"] == 0.0
    assert row_slices([{"source": "news"}]) == {"source": ["news"]}  # no certainty recorded: no such slice
    relabelled = {"source": "news", "unsure": True, "labels_before": ["carbon"]}  # a correction file changed it
    assert row_slices([relabelled, rows[0]])["annotator"] == ["corrected", "sure"]


def test_the_report_breaks_the_scores_down_by_slice(rows):
    taxonomy = Taxonomy.load()
    oof = cross_validate(rows, taxonomy, cv=CVConfig(folds=3, systems=("tfidf", "keyword")), progress=False)
    report = cv_report(oof, row_slices(rows))
    sources = {e["value"] for e in report["by_slice"]}
    assert sources == {r["source"] for r in rows}
    assert sum(e["rows"] for e in report["by_slice"]) == len(rows)
    markdown = cv_markdown(report, taxonomy.ids)
    assert "| tfidf |" in markdown and "F1 by slice" in markdown and "| by_slice |" not in markdown


def test_encoder_folds_share_the_frozen_layer_cache_and_the_ensemble_is_reported(rows, tiny_backbone_dir, tmp_path):
    from training.tagger.cache import LowerLayerCache

    taxonomy = Taxonomy.load()
    calls = []
    original = LowerLayerCache.encode
    LowerLayerCache.encode = lambda self, windows, pad_id, batch_size=64: calls.append(len(windows)) or original(
        self, windows, pad_id, batch_size)
    try:
        config = tiny_config(tiny_backbone_dir, epochs=1, max_steps=4, freeze_embeddings=True, freeze_layers=1)
        cv = CVConfig(folds=2)
        folds = document_folds(rows, 2, cv.seed)
        logits, seconds = oof_encoder(rows, folds, taxonomy, config, cv, progress=False)
    finally:
        LowerLayerCache.encode = original
    assert logits.shape == (len(rows), 4) and np.isfinite(logits).all() and len(seconds) == 2
    assert sum(calls) <= len({r["text"] for r in rows})  # every distinct paragraph runs the lower layers once
    oof = OutOfFold(labels=taxonomy.ids, y=np.asarray([r["targets"] for r in rows], dtype=int), folds=folds,
                    scores={"encoder": logits, "lexical": logits * 0.5})
    assert "ensemble" in cv_report(oof)
    save_oof(oof, tmp_path / "oof", {"fingerprint": "abc"})
    loaded, info = load_oof(tmp_path / "oof")
    assert info["fingerprint"] == "abc" and np.array_equal(loaded.scores["encoder"], logits.astype(np.float64))


def test_an_experiment_is_saved_and_reused_for_the_same_data(rows, tmp_path):
    taxonomy = Taxonomy.load()
    cv = CVConfig(folds=3, systems=("tfidf", "keyword"))
    oof, report = run_experiment(rows, taxonomy, tmp_path / "exp", cv=cv, progress=False)
    assert (tmp_path / "exp" / "report.md").read_text(encoding="utf-8").count("| tfidf |") == 1
    again, _ = run_experiment(rows, taxonomy, tmp_path / "exp", cv=cv, progress=False)
    assert again.seconds["tfidf"] == oof.seconds["tfidf"]  # reused, not refitted
    changed, _ = run_experiment(rows[:-3], taxonomy, tmp_path / "exp", cv=cv, progress=False)
    assert changed.y.shape[0] == len(rows) - 3  # other data: computed afresh


def test_a_system_is_recomputed_when_only_its_own_settings_change(rows, tmp_path, monkeypatch):
    """Changing TF-IDF's regularisation or a keyword list must not reuse that system's saved scores, and must
    not throw away the others' (an encoder's folds cost an hour)."""
    import training.cv
    from policylens.taxonomy import Label
    from training.baselines import TfidfBaseline

    computed = []
    for name in ("oof_tfidf", "oof_keyword"):
        original = getattr(training.cv, name)
        monkeypatch.setattr(training.cv, name, lambda *a, _f=original, _n=name, **k: computed.append(_n) or _f(*a, **k))
    taxonomy = Taxonomy.load()
    cv = CVConfig(folds=3, systems=("tfidf", "keyword"))
    first, _ = run_experiment(rows, taxonomy, tmp_path / "exp", cv=cv, progress=False)
    assert computed == ["oof_tfidf", "oof_keyword"]
    defaults = TfidfBaseline.__init__.__defaults__
    monkeypatch.setattr(TfidfBaseline.__init__, "__defaults__", (0.01, *defaults[1:]))  # another default C
    second, _ = run_experiment(rows, taxonomy, tmp_path / "exp", cv=cv, progress=False)
    assert computed[2:] == ["oof_tfidf"] and not np.allclose(second.scores["tfidf"], first.scores["tfidf"])
    fewer = Taxonomy(labels=[Label(**{**vars(label), "keywords": label.keywords[:1]}) for label in taxonomy.labels],
                     name=taxonomy.name, version=taxonomy.version)
    third, _ = run_experiment(rows, fewer, tmp_path / "exp", cv=cv, progress=False)
    assert computed[3:] == ["oof_keyword"] and third.scores["keyword"].sum() < second.scores["keyword"].sum()
    run_experiment(rows, fewer, tmp_path / "exp", cv=cv, progress=False)
    assert len(computed) == 4  # nothing changed: all reused


def test_the_lexical_model_can_learn_from_extra_rows_the_encoder_does_not_see(rows):
    """`policylens cv` scores the TF-IDF half as the default tagger trains it, with batch 4 (the encoder's
    training loop adds batch 4 itself); extra rows only ever train, and never from a held-out document."""
    from tiny_policy_texts import NONE

    taxonomy = Taxonomy.load()
    cv = CVConfig(folds=3, systems=("tfidf",))
    plain = cross_validate(rows, taxonomy, cv=cv, progress=False)
    noisy = [{"id": f"x{i}", "doc_id": f"extra{i}", "text": NONE[i % 2], "labels": ["5g"],
              "targets": taxonomy.multi_hot(["5g"])} for i in range(40)]  # 'none' texts labelled 5g, many times
    with_extra = cross_validate(rows, taxonomy, cv=cv, progress=False, lexical_extra=noisy)
    none_rows = [i for i, r in enumerate(rows) if r["text"] in NONE]
    j = taxonomy.ids.index("5g")
    assert none_rows and (with_extra.scores["tfidf"][none_rows, j] > plain.scores["tfidf"][none_rows, j] + 1).all()
    assert len(with_extra.y) == len(rows)  # extra rows are never scored


def test_the_lexical_half_reads_words_and_its_settings_do_not_touch_the_encoder_key(rows, tmp_path, monkeypatch):
    """`lexical` (the default's lexical half) is the character baseline plus word n-grams; changing its word
    n-grams recomputes it alone, and the encoder's key (an hour of folds) stays the same."""
    import training.cv
    from training.cv import experiment_key
    from training.tagger import TaggerConfig

    seen = []
    original = training.cv.oof_tfidf
    monkeypatch.setattr(training.cv, "oof_tfidf", lambda *a, **k: seen.append(a[4] if len(a) > 4 else None) or original(*a, **k))
    taxonomy = Taxonomy.load()
    cv = CVConfig(folds=3, systems=("lexical", "tfidf"))
    first, _ = run_experiment(rows, taxonomy, tmp_path / "exp", TaggerConfig(), cv, progress=False)
    assert seen == [(1, 2), None] and not np.allclose(first.scores["lexical"], first.scores["tfidf"])
    run_experiment(rows, taxonomy, tmp_path / "exp", TaggerConfig(lexical_word_ngrams=(1, 1)), cv, progress=False)
    assert seen[2:] == [(1, 1)]  # the baseline was reused
    assert (experiment_key(rows, [], TaggerConfig(), cv)
            == experiment_key(rows, [], TaggerConfig(lexical_word_ngrams=None), cv))
    with pytest.raises(ValueError, match="lexical_word_ngrams"):
        TaggerConfig(lexical_word_ngrams=(2, 1))
