"""Retraining end to end on the tiny backbone: first version, fixed test split, a refused worse model,
a killed run, head growth for a new domain, and the report."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_policy_texts import NONE, TOPICS

from inference.predictor import Predictor
from policylens.paths import DATA_DIR
from policylens.taxonomy import Label
from training.registry import GateConfig, Registry, gate
from training.retrain import RetrainConfig, grow_head, retrain
from training.store import LabelStore
from training.tagger import TaggerConfig

MFG = ["推进智能制造，建设数字化车间和智能工厂。", "加快制造业数字化转型，推广工业软件应用。"]


def doc_rows(doc: str, topics: dict[str, list[str]]) -> list[dict]:
    # a per-document suffix keeps texts distinct (the store drops duplicates by normalised text)
    rows = [{"id": f"{doc}#{label}{i}", "doc_id": doc, "text": f"{text}（{doc}）", "labels": [label]}
            for label, texts in topics.items() for i, text in enumerate(texts)]
    rows += [{"id": f"{doc}#n{i}", "doc_id": doc, "text": f"{text}（{doc}）", "labels": []} for i, text in enumerate(NONE)]
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def config(backbone: Path, **kw) -> RetrainConfig:
    tagger = TaggerConfig(backbone=str(backbone), epochs=5, batch_size=8, learning_rate=3e-3, head_learning_rate=3e-3,
                          freeze_embeddings=False, freeze_layers=0, max_length=48, stride=12, patience=10, num_threads=1,
                          stack_recipe="", lexical_with_b4=False, encoder_with_b4=False)  # hermetic: no project recipe, no shared batch 4
    return RetrainConfig(tagger=tagger, **kw)


@pytest.fixture(scope="module")
def world(tiny_backbone_dir, tmp_path_factory):
    """A store over 20 base documents and a registry whose first version is trained and promoted."""
    root = tmp_path_factory.mktemp("retrain")
    shutil.copy(DATA_DIR / "taxonomy.json", root / "taxonomy.json")
    base = write_jsonl(root / "base.jsonl", [r for d in range(20) for r in doc_rows(f"d{d}", TOPICS)])
    store = LabelStore(root / "store", taxonomy_path=root / "taxonomy.json", base_sources=[base])
    registry = Registry(root / "registry")
    first = retrain(store, registry, config(tiny_backbone_dir), progress=False)
    return store, registry, first, root


def test_first_version_is_promoted_and_records_the_test_split(world):
    store, registry, first, _ = world
    assert first.version == "v0001" and first.promoted and registry.current() == "v0001"
    info = registry.info("v0001")
    assert info["data_version"] == store.version and info["parent"] is None and info["labels"][0] == "5g"
    assert info["metrics"]["new"]["test"]["macro_f1"] >= 0.6, info["metrics"]  # it learned something
    test_docs = registry.test_doc_ids()
    assert test_docs and set(test_docs) <= set(registry.split_assignments())
    report = (first.model_dir / "report.md").read_text(encoding="utf-8")
    assert "PROMOTE" in report and "first version" in report
    assert "none: there is no current model to compare with" in report and "| check | old |" not in report


def sabotage_carbon(splits, taxonomy, output_dir, config, progress=True):
    """A 'training' that returns the warm-start model with the carbon domain switched off."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from policylens.tagger.model_dir import TaggerMeta, save_tagger

    model = AutoModelForSequenceClassification.from_pretrained(config.backbone, use_safetensors=True)
    with torch.no_grad():
        model.classifier.bias[taxonomy.index("carbon")] = -20.0
    from policylens.tagger.lexical import LexicalModel

    parent = TaggerMeta.load(sabotage_carbon.parent_dir)
    parent.taxonomy = taxonomy
    lexical = LexicalModel.load(sabotage_carbon.parent_dir) if parent.stack else None
    if parent.stack:  # an ensemble: switch carbon off in the stack too, leave every other label as it was
        c = taxonomy.index("carbon")
        parent.stack["encoder"][c], parent.stack["lexical"][c], parent.stack["bias"][c] = 0.0, 0.0, -20.0
    save_tagger(model, AutoTokenizer.from_pretrained(config.backbone), parent, output_dir, lexical=lexical)


def test_the_gate_refuses_a_model_that_forgets_a_domain(world, tiny_backbone_dir, tmp_path):
    store, registry, _, root = world
    new_docs = [r for d in range(4) for r in doc_rows(f"n{d}", {"carbon": TOPICS["carbon"], "sme": TOPICS["sme"]})]
    store.add([write_jsonl(tmp_path / "new.jsonl", new_docs)])
    sabotage_carbon.parent_dir = registry.current_dir()
    result = retrain(store, registry, config(tiny_backbone_dir), train_fn=sabotage_carbon, progress=False)
    assert not result.promoted and registry.current() == "v0001"  # still serving the old model
    assert result.version in registry.versions()  # kept, not promoted
    assert any("'carbon' F1 fell" in reason for reason in result.decision.reasons), result.decision.reasons
    report = json.loads((result.model_dir / "report.json").read_text(encoding="utf-8"))
    assert report["gate"]["promote"] is False and report["metrics"]["new"]["test"]["per_label"]["carbon"]["f1"] == 0.0
    assert report["changed_examples"] and all("carbon" not in ex["new"] for ex in report["changed_examples"])
    first = report["changed_examples"][0]  # regressions on old domains lead the list
    assert first["effect"] == "worse" and first["lost"] == ["carbon"] and report["changed_counts"]["worse"] >= 1
    md = (result.model_dir / "report.md").read_text(encoding="utf-8")
    assert "NOT PROMOTED" in md and "carbon" in md and "| old F1 | new F1 |" in md and "worse (lost carbon)" in md
    lo, hi = result.report["metrics"]["change_interval_90"]["carbon"]  # the forgotten domain's loss is no noise
    assert lo <= hi < 0 and "90% interval" in md
    significant = gate(report["metrics"]["old"]["test"], report["metrics"]["new"]["test"], report["old_domains"],
                       change_intervals=report["metrics"]["change_interval_90"], config=GateConfig(drop_rule="significant"))
    assert not significant.promote  # a real loss is refused under the noise-aware rule too
    # old test documents never move: same test docs, plus (maybe) new ones
    assert set(registry.info("v0001")["sizes"]) == {"train", "dev", "test"}
    assert set(registry.test_doc_ids()) <= {d for d, s in registry.split_assignments().items() if s == "test"}
    registry.promote(result.version)  # people may override the gate; rollback undoes it
    assert registry.rollback() == "v0001"


def test_a_killed_retraining_leaves_the_current_model_serving(world, tiny_backbone_dir, monkeypatch):
    import training.tagger.loop as tagger

    store, registry, _, _ = world
    current, versions = registry.current(), registry.versions()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C (or a kill) mid-training, after the first checkpoint would be written

    monkeypatch.setattr(tagger, "_save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        retrain(store, registry, config(tiny_backbone_dir), progress=False)
    assert registry.current() == current and registry.versions() == versions
    assert not [p.name for p in registry.root.iterdir() if p.name.startswith(".")]  # no staging, warm or work dirs
    report = registry.verify()
    assert report.ok and not report.leftovers
    assert Predictor(registry.current_dir(), summarizer=None, num_threads=1).predict(["推动工业节能降碳。"])


KILLED_RUN = """
import sys
from training.registry import Registry
from training.retrain import RetrainConfig, retrain
from training.store import LabelStore
from training.tagger import TaggerConfig
root, backbone, base = sys.argv[1:4]
store = LabelStore(root + "/store", taxonomy_path=root + "/taxonomy.json", base_sources=[base])
tagger = TaggerConfig(backbone=backbone, epochs=500, batch_size=8, max_length=48, stride=12, patience=1000,
                      freeze_embeddings=False, freeze_layers=0, num_threads=1, stack_recipe="", lexical_with_b4=False, encoder_with_b4=False)
retrain(store, Registry(root + "/registry"), RetrainConfig(tagger=tagger), progress=False)
"""


def test_a_sigkilled_retraining_process_leaves_the_registry_consistent(world, tiny_backbone_dir):
    """A real `kill -9` mid-training (no Python cleanup runs): CURRENT still serves, verify finds the leftovers."""
    import os
    import signal
    import subprocess
    import sys
    import time

    store, registry, _, root = world
    current, versions = registry.current(), registry.versions()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(root), str(tiny_backbone_dir), str(root / "base.jsonl")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(registry.root.glob(".*/**/state.json")) and not list(registry.root.glob(".*.work/**/state.json")):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no training checkpoint appeared"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert registry.current() == current and registry.versions() == versions
    report = registry.verify()
    assert report.leftovers and not report.in_progress and not report.broken  # the dead run's staging is found
    assert registry.verify(clean=True).cleaned
    assert not [p.name for p in registry.root.iterdir() if p.name.startswith(".")]
    assert Predictor(registry.current_dir(), summarizer=None, num_threads=1).predict(["推动工业节能降碳。"])


def test_grow_head_keeps_old_rows_identical(world, tmp_path):
    from safetensors.torch import load_file

    store, registry, _, _ = world
    parent = registry.path("v0001")
    taxonomy = store.taxonomy().with_label(Label(id="smart_mfg", name_zh="智能制造与数字化转型", name_en="Smart manufacturing"))
    out = grow_head(parent, taxonomy, tmp_path / "grown")
    old, new = load_file(str(parent / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert new["classifier.weight"].shape[0] == 5
    np.testing.assert_array_equal(new["classifier.weight"][:4].numpy(), old["classifier.weight"].numpy())
    np.testing.assert_array_equal(new["classifier.bias"][:4].numpy(), old["classifier.bias"].numpy())
    assert float(new["classifier.weight"][4].abs().max()) < 0.1
    assert abs(float(new["classifier.bias"][4]) - float(old["classifier.bias"].mean())) < 1e-6
    for key in old:
        if not key.startswith("classifier"):
            assert (new[key] == old[key]).all(), key


def test_new_domain_retrain_end_to_end(world, tiny_backbone_dir, tmp_path):
    store, registry, _, _ = world
    label = Label(id="smart_mfg", name_zh="智能制造与数字化转型", name_en="Smart manufacturing and digital transformation")
    rows = [r for d in range(8) for r in doc_rows(f"m{d}", {"smart_mfg": MFG, "5g": TOPICS["5g"]})]
    store.add([write_jsonl(tmp_path / "mfg.jsonl", rows)], new_label=label)
    before = set(registry.test_doc_ids())
    result = retrain(store, registry, config(tiny_backbone_dir), progress=False)
    assert registry.info(result.version)["labels"][-1] == "smart_mfg"
    assert set(registry.test_doc_ids()) == before  # the fixed test split is recorded once
    predictor = Predictor(result.model_dir, summarizer=None, num_threads=1)
    assert predictor.labels[-1] == "smart_mfg"
    report = json.loads((result.model_dir / "report.json").read_text(encoding="utf-8"))
    assert report["new_domains"] == ["smart_mfg"] and report["old_domains"] == ["5g", "sme", "carbon", "supply_chain"]
    learned = next(c for c in report["gate"]["checks"] if c["check"] == "new_data_learned")
    assert "note" in learned or learned["new"] > learned["old"] or not learned["passed"]
    assert result.promoted == (registry.current() == result.version) == result.decision.promote


def test_config_is_validated():
    with pytest.raises(ValueError):
        RetrainConfig(start="scratch")
    with pytest.raises(ValueError):
        RetrainConfig(mix_old=1.5)


def test_known_documents_keep_their_split_and_mix_old_samples_old_documents():
    from policylens.dataset import SplitConfig
    from training.retrain import assign_splits, changed_since, mix_old_rows

    rows = [{"id": f"{d}#0", "doc_id": d, "text": d, "labels": ["5g"] if i % 2 else []} for i, d in enumerate(f"doc{i}" for i in range(40))]
    known = {"doc0": "test", "doc1": "train", "doc2": "dev"}
    splits, assignments = assign_splits(rows, known, SplitConfig())
    where = {row["doc_id"]: split for split, split_rows in splits.items() for row in split_rows}
    assert {d: where[d] for d in known} == known and set(assignments) == {r["doc_id"] for r in rows}
    assert sum(len(v) for v in splits.values()) == len(rows)
    old = [dict(r) for r in rows[:30]]
    old[0] = {**old[0], "labels": ["sme"]}
    new_ids = changed_since(rows, old)
    assert new_ids == {"doc0#0"} | {f"doc{i}#0" for i in range(30, 40)}
    half = mix_old_rows(rows, new_ids, 0.5, seed=13)
    assert new_ids <= {r["id"] for r in half} and len(new_ids) < len(half) < len(rows)
    assert mix_old_rows(rows, new_ids, 0.5, seed=13) == half and mix_old_rows(rows, new_ids, 1.0, 13) == rows


def test_suggest_ranks_unlabelled_paragraphs_by_uncertainty_and_diversity(world, tmp_path):
    from training.suggest import diverse_pick, suggest, uncertainty

    store, registry, _, _ = world
    probs = np.array([[0.9, 0.1], [0.55, 0.1], [0.5, 0.02]])
    np.testing.assert_allclose(uncertainty(probs, [0.5, 0.5]), [0.2, 0.9, 1.0])
    texts = ["推动工业节能降碳。", "推动工业节能降碳！", "培育专精特新中小企业。"]
    assert diverse_pick(texts, np.array([1.0, 0.99, 0.5]), 2, weight=0.5) == [0, 2]  # the near-copy loses
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [
        {"doc_id": "c1", "text": "推进智能制造，建设数字化车间和智能工厂。\n\n推动工业节能降碳，建设绿色工厂。（d0）\n\n"
                                 "加快制造业数字化转型，推广工业软件应用。\n\n提升产业链供应链韧性和安全水平，保障重点产业链稳定。"},
    ])
    known = [r["text"] for r in store.rows()]
    rows = suggest([corpus], registry.current_dir(), known, num_threads=1)
    assert 1 <= len(rows) <= 3 and all(r["labels"] == [] and set(r["scores"]) >= {"5g", "carbon"} for r in rows)
    assert all("（d0）" not in r["text"] for r in rows)  # already labelled in the store
    assert [r["uncertainty"] for r in rows][0] == max(r["uncertainty"] for r in rows)
    assert len(suggest([corpus], None, known)) == len(rows)  # no model: diversity only


def test_suggest_like_examples_finds_a_new_domain_in_a_corpus_and_in_the_store(world, tiny_backbone_dir, tmp_path):
    from training.suggest import (
        SuggestConfig,
        rank,
        read_examples,
        relabel_candidates,
        suggest,
    )

    store, registry, _, root = world
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"doc_id": "c2", "text": "\n\n".join(
        [MFG[0], "提升产业链供应链韧性和安全水平，保障产业链稳定。", "培育专精特新中小企业，支持企业上市融资。"])}])
    examples = tmp_path / "like.txt"
    examples.write_text(f"{MFG[0]}\n\n", encoding="utf-8")
    assert read_examples(examples) == [MFG[0]]
    known = [r["text"] for r in store.rows()]
    rows = suggest([corpus], registry.current_dir(), known, SuggestConfig(n=2), 1, read_examples(examples),
                   str(tiny_backbone_dir))
    assert rows[0]["text"] == MFG[0]  # the example itself ranks first
    assert len(rows) == 2 and rows[1]["similarity"] < rows[0]["similarity"]
    assert rows[0]["labels"] == [] and set(rows[0]["scores"]) >= {"5g", "sme", "carbon", "supply_chain"}

    # the store's own paragraphs come back as correction rows that keep their labels
    target = next(r for r in store.rows() if r["labels"] == ["carbon"])
    fixes = rank(relabel_candidates(store.rows(), SuggestConfig()), None, SuggestConfig(n=5), 1, [target["text"]],
                 str(tiny_backbone_dir))
    same_sentence = target["text"].split("（")[0]  # the example's sentence, from this or another document
    assert fixes[0]["text"].startswith(same_sentence) and fixes[0]["labels"] == ["carbon"] and fixes[0]["correction"]
    assert len(fixes) == 5 and len({f["id"] for f in fixes}) == 5
    second_round = relabel_candidates(store.rows(), SuggestConfig(), skip_label="carbon")
    assert second_round and not any("carbon" in row["labels"] for row in second_round)
    fixes[0]["labels"] = ["carbon", "supply_chain"]  # the analyst's edit; the untouched rows change nothing
    if store.root.exists():  # work on a copy: the other tests share this store (empty until one adds)
        shutil.copytree(store.root, tmp_path / "store")
    shutil.copy(store.taxonomy_path, tmp_path / "taxonomy.json")
    copy = LabelStore(tmp_path / "store", taxonomy_path=tmp_path / "taxonomy.json", base_sources=store.base_sources)
    report = copy.add([write_jsonl(tmp_path / "fixes.jsonl", fixes)])
    assert report.corrected == [fixes[0]["id"]] and len(report.duplicates) == 4 and not report.added


def test_suggest_cli_explains_what_it_needs(tmp_path):
    import typer
    from typer.testing import CliRunner

    from policylens.cli.retrain import register

    app = typer.Typer()
    register(app)
    common = ["--store", str(tmp_path / "store"), "--no-silver", "--registry", str(tmp_path / "registry")]
    result = CliRunner().invoke(app, ["suggest", *common])
    assert result.exit_code == 2 and "give a corpus to rank, or --relabel" in result.output
    result = CliRunner().invoke(app, ["suggest", "--relabel", *common])
    assert result.exit_code == 2 and "--relabel needs --like" in result.output
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    result = CliRunner().invoke(app, ["suggest", "--relabel", "--like", str(tmp_path / "empty.txt"), *common])
    assert result.exit_code == 2 and "empty.txt: no example paragraphs" in result.output
    (tmp_path / "gbk.txt").write_bytes("推进智能制造".encode("gbk"))
    result = CliRunner().invoke(app, ["suggest", "--relabel", "--like", str(tmp_path / "gbk.txt"), *common])
    assert result.exit_code == 2 and "gbk.txt: not UTF-8 text" in result.output



def test_changed_predictions_list_old_domain_losses_first():
    from training.retrain import changed_predictions

    ids = ["5g", "sme", "smart_mfg"]
    rows = [{"id": f"p{i}", "text": f"t{i}"} for i in range(4)]
    gold = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0]])
    old = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]])
    new = np.array([[0, 0, 1], [0, 0, 0], [0, 0, 1], [0, 0, 0]])  # p0 better, p1 worse, p2 mixed, p3 unchanged
    changed = changed_predictions(rows, gold, old, new, ids, old_domains=["5g", "sme"])
    assert [(ex["id"], ex["effect"]) for ex in changed] == [("p1", "worse"), ("p2", "mixed"), ("p0", "better")]
    assert changed[1]["lost"] == ["sme"] and changed[1]["gained"] == ["smart_mfg"]


def test_the_report_shows_the_gate_warnings_under_its_decision():
    from training.registry import gate
    from training.retrain import render_markdown

    def scores(f1: dict[str, float]) -> dict:
        return {"per_label": {k: {"f1": v, "support": 40} for k, v in f1.items()},
                "macro_f1": sum(f1.values()) / len(f1), "micro_f1": 0.8}

    old, new = scores({"5g": 0.9, "sme": 0.95}), scores({"5g": 0.875, "sme": 0.96})
    intervals = {"5g": (-0.07, 0.02), "sme": (-0.01, 0.03), "macro_f1": (-0.005, 0.01)}
    decision = gate(old, new, ["5g", "sme"], change_intervals=intervals)
    report = {"labels": ["5g", "sme"], "metrics": {"new": {"test": new}, "old": {"test": old}, "change_interval_90": intervals},
              "gate": decision.to_dict(), "gate_rule": "point", "sizes": {"train": 10, "dev": 5, "test": 80},
              "new_rows": 0, "new_dev_rows": 0, "new_domains": [], "changed_examples": [], "changed_counts": {}}
    text = render_markdown(report)
    assert "**Gate: PASSED, PROMOTE**" in text
    assert "- **warning:** domain '5g' F1 passed (0.900 -> 0.875), but the 90% interval of the change reaches -0.070" in text
    assert "'sme' F1 passed" not in text


def test_the_next_report_says_when_documents_moved_between_splits(world, tiny_backbone_dir):
    """Last in this module: it moves a test document of the shared registry for good."""
    from training.retrain import _moves_markdown

    assert _moves_markdown([]) == []  # nothing moved, nothing said
    store, registry, _, _ = world
    moved = registry.test_doc_ids()[0]
    registry.move_document(moved, "train", "corrected in the desk")

    def copy_current(splits, taxonomy, output_dir, config, progress=True):  # a "training" that costs nothing
        assert moved in {row["doc_id"] for row in splits["train"]}  # the move decides where its rows go
        shutil.copytree(registry.current_dir(), output_dir, dirs_exist_ok=True)

    result = retrain(store, registry, config(tiny_backbone_dir), train_fn=copy_current, progress=False)
    assert [m["doc_id"] for m in result.report["split_moves"]] == [moved]
    md = (result.model_dir / "report.md").read_text(encoding="utf-8")
    assert "not the one the current version was gated on" in md and f"- {moved}: test -> train (corrected in the desk)" in md
