"""End-to-end tagger training on the tiny backbone (seconds), plus the slow real-backbone check."""

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_policy_texts import NONE, TOPICS

from inference.predictor import Predictor
from policylens.tagger.model_dir import TaggerMeta
from policylens.taxonomy import Taxonomy
from training.tagger import (
    LowerLayerCache,
    TaggerConfig,
    load_for_training,
    train_tagger,
)


def make_splits(taxonomy: Taxonomy) -> dict[str, list[dict]]:
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for d in range(24):
        split = "train" if d < 16 else ("dev" if d < 20 else "test")
        for label, texts in TOPICS.items():
            for i, text in enumerate(texts):
                labels = [label]
                splits[split].append({"id": f"d{d}#{label}{i}", "doc_id": f"d{d}", "source": "t", "text": text, "labels": labels})
        for i, text in enumerate(NONE):
            splits[split].append({"id": f"d{d}#n{i}", "doc_id": f"d{d}", "source": "t", "text": text, "labels": []})
        both = TOPICS["sme"][0] + TOPICS["supply_chain"][0]
        splits[split].append({"id": f"d{d}#b", "doc_id": f"d{d}", "source": "t", "text": both, "labels": ["sme", "supply_chain"]})
    for rows in splits.values():
        for row in rows:
            row["targets"] = taxonomy.multi_hot(row["labels"])
    return splits


def tiny_config(backbone: Path, **kw) -> TaggerConfig:
    base = dict(backbone=str(backbone), epochs=6, batch_size=8, learning_rate=3e-3, head_learning_rate=3e-3,
                freeze_embeddings=False, freeze_layers=0, max_length=64, stride=16, patience=10, num_threads=1,
                stack_recipe="", lexical_with_b4=False, encoder_with_b4=False)  # the project's recipe is for the real encoder: tiny models
                # fit their stack on dev; batch 4 is shared data the tests do not depend on
    base.update(kw)
    return TaggerConfig(**base)


@pytest.fixture(scope="module")
def trained(tiny_backbone_dir, tmp_path_factory):
    taxonomy = Taxonomy.load()
    splits = make_splits(taxonomy)
    out = tmp_path_factory.mktemp("tagger") / "model"
    result = train_tagger(splits, taxonomy, out, tiny_config(tiny_backbone_dir), progress=False)
    return result, splits


def test_training_learns_and_writes_a_self_describing_model(trained):
    result, splits = trained
    model_dir = result.model_dir
    for name in ("model.safetensors", "config.json", "tokenizer.json", "policylens.json", "metrics.json", "README.md"):
        assert (model_dir / name).exists(), name
    assert not list(model_dir.glob("*.bin")) and not list(model_dir.glob("*.pt"))
    meta = TaggerMeta.load(model_dir)
    assert meta.taxonomy.ids == ["5g", "sme", "carbon", "supply_chain"]
    assert len(meta.thresholds) == 4 and all(0 < t < 1 for t in meta.thresholds)
    assert len(meta.data["fingerprint"]) == 64 and meta.data["sizes"]["train"] == len(splits["train"])
    assert meta.training["config"]["epochs"] == 6
    assert result.metrics["test"]["macro_f1"] >= 0.8, result.metrics["test"]  # chance is about 0.4
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert "macro" in (model_dir / "README.md").read_text(encoding="utf-8").lower()


def test_the_saved_ensemble_scores_exactly_as_the_model_in_memory(trained):
    result, splits = trained
    model_dir = result.model_dir
    assert (model_dir / "lexical.json").exists() and (model_dir / "lexical.safetensors").exists()
    meta = TaggerMeta.load(model_dir)
    assert meta.stack is not None and meta.training["stack"]["fitted_on_dev"] == meta.taxonomy.ids
    test_texts = [row["text"] for row in splits["test"]]
    loaded = Predictor(model_dir, backend="torch", num_threads=1)
    np.testing.assert_allclose(loaded.predict_proba(test_texts), result.test_probs, atol=1e-5)
    # the lexical half matters: without it the scores differ
    assert np.abs(loaded.predict_proba(test_texts) - loaded.calibrated_encoder_proba(test_texts)).max() > 1e-3


def test_a_recipe_sets_the_stack_and_thresholds(tiny_backbone_dir, tmp_path):
    from policylens.tagger.ensemble import Stack
    from training.stack import write_recipe

    taxonomy = Taxonomy.load()
    recipe = write_recipe(tmp_path / "recipe.json", taxonomy.ids, Stack([0.9] * 4, [1.1] * 4, [-0.2] * 4),
                          np.array([0.5, 0.4, 0.5, 0.5]), {})
    config = tiny_config(tiny_backbone_dir, epochs=1, max_steps=2, stack_recipe=str(recipe))
    result = train_tagger(make_splits(taxonomy), taxonomy, tmp_path / "m", config, progress=False)
    meta = TaggerMeta.load(result.model_dir)
    assert meta.stack == {"encoder": [0.9] * 4, "lexical": [1.1] * 4, "bias": [-0.2] * 4}
    assert meta.thresholds == [0.5, 0.4, 0.5, 0.5] and meta.training["stack"]["fitted_on_dev"] == []


def test_a_mean_recipe_makes_a_tagger_that_averages_the_two_probabilities(tiny_backbone_dir, tmp_path):
    from policylens.tagger.ensemble import ProbabilityMean
    from training.stack import write_recipe

    taxonomy = Taxonomy.load()
    recipe = write_recipe(tmp_path / "recipe.json", taxonomy.ids, ProbabilityMean(4), np.array([0.5, 0.45, 0.5, 0.5]), {})
    config = tiny_config(tiny_backbone_dir, epochs=1, max_steps=2, stack_recipe=str(recipe))
    splits = make_splits(taxonomy)
    result = train_tagger(splits, taxonomy, tmp_path / "m", config, progress=False)
    meta = TaggerMeta.load(result.model_dir)
    assert meta.stack == {"combine": "mean", "labels": 4} and meta.thresholds == [0.5, 0.45, 0.5, 0.5]
    loaded = Predictor(result.model_dir, backend="torch", num_threads=1)
    texts = [row["text"] for row in splits["test"]]
    from policylens.chinese import normalize
    from policylens.tagger.lexical import LexicalModel

    lexical = LexicalModel.load(result.model_dir).decision_function([normalize(t) for t in texts])
    encoder = loaded.logits(texts)
    expected = (1 / (1 + np.exp(-encoder)) + 1 / (1 + np.exp(-lexical))) / 2
    np.testing.assert_allclose(loaded.predict_proba(texts), expected, atol=1e-5)


def test_predictor_tags_unseen_wording_and_pools_long_paragraphs(trained):
    result, _ = trained
    predictor = Predictor(result.model_dir, num_threads=1)
    tags = predictor.predict(["支持中小企业和小微企业融资。", "会议由主任主持。"])
    assert "sme" in tags[0].labels and tags[1].labels == []
    filler = "会议由主任主持。" * 16  # longer than one window on its own
    long_text = filler + TOPICS["carbon"][0] * 3  # the carbon text only appears after the first window
    assert len(predictor.tokenizer("passage: " + filler)["input_ids"]) > predictor.meta.max_length
    only_filler, with_carbon = predictor.predict([filler, long_text])
    assert with_carbon.scores["carbon"] > only_filler.scores["carbon"] + 0.3  # a truncating tagger would see no difference


def test_cached_lower_layers_give_the_same_logits_as_the_full_model(tiny_backbone_dir):
    import torch

    taxonomy = Taxonomy.load()
    config = tiny_config(tiny_backbone_dir, freeze_embeddings=True, freeze_layers=1)
    tokenizer, model = load_for_training(str(tiny_backbone_dir), taxonomy, config)
    assert LowerLayerCache.supports(model, config)
    model.eval()
    texts = ["加快5G基站建设。", "培育专精特新中小企业，支持民营企业发展，降低融资成本。"]
    windows = [tokenizer(t)["input_ids"] for t in texts]
    cache = LowerLayerCache(model, 1)
    cached = cache.window_logits(cache.encode(windows, tokenizer.pad_token_id))
    with torch.inference_mode():
        full = np.stack([model(input_ids=torch.tensor([w])).logits[0].numpy() for w in windows])
    np.testing.assert_allclose(cached, full, atol=1e-5)


def test_resume_continues_from_the_checkpoint(tiny_backbone_dir, tmp_path, monkeypatch):
    import training.tagger.loop as tagger

    taxonomy = Taxonomy.load()
    splits = make_splits(taxonomy)
    out = tmp_path / "model"
    calls = {"n": 0}
    real = tagger._save_checkpoint

    def crash_after_first_checkpoint(*args, **kwargs):
        real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-training

    monkeypatch.setattr(tagger, "_save_checkpoint", crash_after_first_checkpoint)
    config = tiny_config(tiny_backbone_dir, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train_tagger(splits, taxonomy, out, config, progress=False)
    assert not out.exists()  # nothing half-written where the model goes
    state = json.loads((tmp_path / ".model.work" / "checkpoint" / "state.json").read_text())
    assert state["step"] > 0
    monkeypatch.setattr(tagger, "_save_checkpoint", real)
    result = train_tagger(splits, taxonomy, out, config, resume=True, progress=False)
    assert result.history[0]["step"] <= state["step"] < result.history[-1]["step"]
    assert (out / "policylens.json").exists() and not (tmp_path / ".model.work").exists()


def test_a_backbone_missing_encoder_weights_is_refused(tiny_backbone_dir, tmp_path):
    """Only the classifier and pooler may start from scratch; a truncated encoder is an error, not noise."""
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_backbone_dir, broken)
    weights = load_file(broken / "model.safetensors")
    dropped = next(k for k in weights if "layer.0.attention" in k)
    save_file({k: v for k, v in weights.items() if k != dropped}, broken / "model.safetensors")
    taxonomy = Taxonomy.load()
    with pytest.raises(ValueError, match="lacks encoder weights"):
        load_for_training(str(broken), taxonomy, TaggerConfig(freeze_layers=0))
    load_for_training(str(tiny_backbone_dir), taxonomy, TaggerConfig(freeze_layers=0))  # classifier missing: fine


def test_config_is_validated():
    with pytest.raises(ValueError):
        TaggerConfig(epochs=0)
    with pytest.raises(ValueError):
        TaggerConfig(learning_rate=2.0)


@pytest.mark.slow
def test_real_backbone_loss_falls_in_a_few_steps(tmp_path):
    from policylens.dataset import default_sources, load_labelled, split_by_document

    taxonomy = Taxonomy.load()
    rows = load_labelled(default_sources(include_silver=False), taxonomy)
    splits = split_by_document(rows)
    for row in (r for s in splits.values() for r in s):
        row["targets"] = taxonomy.multi_hot(row["labels"])
    config = TaggerConfig(epochs=1, max_steps=12, batch_size=8, evals_per_epoch=3, learning_rate=1e-4, encoder_with_b4=False)
    result = train_tagger(splits, taxonomy, tmp_path / "m", config, progress=False)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]


def test_batch_4_joins_the_lexical_model_only_from_documents_outside_dev_and_test(tmp_path, monkeypatch):
    import json as _json

    import policylens.paths
    from training.tagger.loop import _batch4_rows

    taxonomy = Taxonomy.load()
    b4 = tmp_path / "b4.jsonl"
    b4.write_text("\n".join(_json.dumps({"id": f"{doc}#1", "doc_id": doc, "text": "产业链供应链", "labels": ["supply_chain"]})
                            for doc in ("d0", "d17", "d21", "other")), encoding="utf-8")
    monkeypatch.setattr(policylens.paths, "SILVER_B4_PATH", b4)
    extra = _batch4_rows(make_splits(taxonomy), taxonomy)  # d16-19 are dev, d20-23 test
    assert sorted(r["doc_id"] for r in extra) == ["d0", "other"] and extra[0]["targets"] == [0, 0, 0, 1]


def test_the_encoder_trains_on_batch_4_only_when_asked_and_never_on_dev_or_test_documents(tmp_path, monkeypatch,
                                                                                         tiny_backbone_dir):
    import json as _json

    import policylens.paths
    import training.tagger.loop as loop

    taxonomy = Taxonomy.load()
    b4 = tmp_path / "b4.jsonl"
    b4.write_text("\n".join(_json.dumps({"id": f"{doc}#b4", "doc_id": doc, "text": f"批次四{doc}产业链供应链",
                                         "labels": ["supply_chain"]}) for doc in ("d0", "d17", "d21", "other")),
                  encoding="utf-8")
    monkeypatch.setattr(policylens.paths, "SILVER_B4_PATH", b4)
    seen: list[list[str]] = []
    original = loop.training_windows
    monkeypatch.setattr(loop, "training_windows",
                        lambda tokenizer, rows, config: seen.append([r["id"] for r in rows]) or original(tokenizer, rows, config))
    splits = make_splits(taxonomy)
    for with_b4 in (False, True):
        config = tiny_config(tiny_backbone_dir, encoder_with_b4=with_b4, max_steps=1, ensemble=False)
        loop.train_tagger(splits, taxonomy, tmp_path / f"m{with_b4}", config, progress=False)
    without, with_ = seen
    assert without == [r["id"] for r in splits["train"]]
    assert with_ == without + ["d0#b4", "other#b4"]  # d17 is a dev document, d21 a test one


def test_soft_disputes_train_the_disputed_tags_at_one_half_and_leave_dev_alone(tmp_path, monkeypatch, tiny_backbone_dir):
    import json as _json

    import policylens.paths
    from training.tagger import loop

    taxonomy = Taxonomy.load()
    splits = make_splits(taxonomy)
    train_row, dev_row = splits["train"][0], splits["dev"][0]
    readings = tmp_path / "second.jsonl"
    readings.write_text("\n".join(_json.dumps({"id": r["id"], "labels": sorted(set(r["labels"]) ^ {"carbon"})})
                                  for r in (train_row, dev_row)), encoding="utf-8")
    monkeypatch.setattr(policylens.paths, "SILVER_SECOND_READING_PATH", readings)
    seen: dict[str, list] = {}
    original = loop.training_windows
    monkeypatch.setattr(loop, "training_windows",
                        lambda tokenizer, rows, config: seen.setdefault("rows", rows) and original(tokenizer, rows, config))
    config = tiny_config(tiny_backbone_dir, soft_disputes=True, encoder_with_b4=False, max_steps=1, ensemble=False)
    loop.train_tagger(splits, taxonomy, tmp_path / "m", config, progress=False)
    trained = {r["id"]: r["targets"] for r in seen["rows"]}
    carbon = taxonomy.index("carbon")
    assert trained[train_row["id"]][carbon] == 0.5
    assert [t for j, t in enumerate(trained[train_row["id"]]) if j != carbon] == \
        [t for j, t in enumerate(train_row["targets"]) if j != carbon]
    assert all(trained[r["id"]] == r["targets"] for r in splits["train"][1:])
    assert dev_row["id"] not in trained and 0.5 not in dev_row["targets"]  # dev keeps its labels
