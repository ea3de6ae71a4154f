"""The registry: register/promote/rollback, the pointer a server reads, leftovers, and the gate's rules."""

import os
from pathlib import Path

import pytest

from policylens.io import InputError
from training.registry import CURRENT_FILE, GateConfig, Registry, gate


@pytest.fixture(scope="module")
def tagger_dir(tiny_backbone_dir, tmp_path_factory) -> Path:
    """An untrained tiny tagger dir, saved exactly like a trained one."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from policylens.tagger.model_dir import TaggerMeta, save_tagger
    from policylens.taxonomy import Taxonomy

    taxonomy = Taxonomy.load()
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_backbone_dir, num_labels=len(taxonomy), problem_type="multi_label_classification",
        id2label=dict(enumerate(taxonomy.ids)), label2id={l: i for i, l in enumerate(taxonomy.ids)}, use_safetensors=True)
    meta = TaggerMeta(taxonomy=taxonomy, thresholds=[0.5] * 4, temperature=[1.0] * 4, max_length=32, stride=8)
    return save_tagger(model, AutoTokenizer.from_pretrained(tiny_backbone_dir), meta, tmp_path_factory.mktemp("t") / "m")


def stage_copy(registry: Registry, source: Path) -> Path:
    import shutil

    with registry.staging() as stage:
        shutil.copytree(source, stage)
        return Path(registry.register(stage, {"data_version": "x", "labels": ["5g", "sme", "carbon", "supply_chain"]}))


def test_register_promote_rollback_and_the_server_reads_the_pointer(tagger_dir, tmp_path):
    from inference.predictor import Predictor
    from policylens.tagger.model_dir import read_pointer

    registry = Registry(tmp_path / "registry")
    names = [str(stage_copy(registry, tagger_dir)) for _ in range(3)]
    assert names == ["v0001", "v0002", "v0003"] == registry.versions()
    assert registry.current() is None and registry.info("v0002")["data_version"] == "x"
    for name in names:
        registry.promote(name)
    assert registry.current() == "v0003"
    assert read_pointer(registry.root / CURRENT_FILE) == registry.root / "v0003"  # what `serve --registry` loads
    assert registry.rollback() == "v0002" and registry.current() == "v0002"
    assert registry.rollback() == "v0001"
    with pytest.raises(InputError, match="nothing to roll back"):
        registry.rollback()
    assert Predictor(registry.current_dir(), summarizer=None, num_threads=1).predict(["加快5G建设。"])
    assert [e["action"] for e in registry.history()] == ["promote"] * 3 + ["rollback"] * 2
    with pytest.raises(InputError, match="no registered version"):
        registry.promote("v0042")
    assert registry.current() == "v0001"
    assert not [p for p in registry.root.iterdir() if p.name.startswith(".")]  # no temp files left by the pointer


def test_models_cli_lists_promotes_and_rolls_back(tagger_dir, tmp_path):
    import typer
    from typer.testing import CliRunner

    from policylens.cli.retrain import register

    app = typer.Typer()
    register(app)
    registry = Registry(tmp_path / "registry")
    stage_copy(registry, tagger_dir), stage_copy(registry, tagger_dir)
    run = lambda *args: CliRunner().invoke(app, [*args, "--registry", str(registry.root)])  # noqa: E731
    assert run("models", "promote", "v0001").exit_code == 0
    assert run("models", "promote", "v0002").output.strip() == "CURRENT -> v0002"
    listing = run("models", "list").output
    assert "* v0002" in listing and "  v0001" in listing
    assert run("models", "rollback").output.strip() == "CURRENT -> v0001" and registry.current() == "v0001"
    assert run("models", "rollback").exit_code == 2
    assert run("models", "verify").exit_code == 0


def test_register_refuses_incomplete_dirs_and_failed_staging_leaves_nothing(tmp_path, tagger_dir):
    import shutil

    registry = Registry(tmp_path / "registry")
    with registry.staging() as stage:
        stage.mkdir()
        (stage / "config.json").write_text("{}")
        with pytest.raises(InputError, match="not a complete tagger dir"):
            registry.register(stage, {})
    with pytest.raises(RuntimeError):
        with registry.staging() as stage:
            shutil.copytree(tagger_dir, stage)
            raise RuntimeError("crash while training")
    assert registry.versions() == [] and [p.name for p in registry.root.iterdir()] == []


def test_verify_flags_and_cleans_leftovers_but_not_live_runs(tmp_path, tagger_dir):
    registry = Registry(tmp_path / "registry")
    stage_copy(registry, tagger_dir)
    registry.promote("v0001")
    dead = registry.root / ".staging-999999999-dead"  # a killed run (no such pid)
    (dead / "sub").mkdir(parents=True)
    (registry.root / "..staging-999999999-dead.work").mkdir()
    (registry.root / ".CURRENT.abc.tmp").write_text("v0009")
    live = registry.root / f".staging-{os.getppid()}-live"  # our parent process is alive
    live.mkdir()
    (registry.root / "v0002").mkdir()  # half-copied by hand: no registry.json
    report = registry.verify()
    assert {p.name for p in report.leftovers} == {".staging-999999999-dead", "..staging-999999999-dead.work", ".CURRENT.abc.tmp"}
    assert report.in_progress == [live] and report.broken == ["v0002: missing registry.json, policylens.json, model.safetensors"]
    assert not report.ok and registry.versions() == ["v0001"]
    cleaned = registry.verify(clean=True)
    assert cleaned.cleaned and not dead.exists() and live.exists()
    assert registry.verify().leftovers == []
    (registry.root / CURRENT_FILE).write_text("v0007\n")
    assert any("CURRENT names 'v0007'" in p for p in registry.verify().broken)


def _report(f1: dict[str, float], micro: float | None = None) -> dict:
    per = {label: {"f1": v, "support": 5} for label, v in f1.items()}
    return {"per_label": per, "macro_f1": sum(f1.values()) / len(f1), "micro_f1": micro if micro is not None else 0.0, "n": 10}


def test_gate_refuses_a_domain_drop_and_a_macro_drop_and_unlearned_data():
    old = _report({"5g": 0.9, "sme": 0.8, "carbon": 0.9, "supply_chain": 0.7})
    domains = list(old["per_label"])
    same = gate(old, _report({"5g": 0.9, "sme": 0.8, "carbon": 0.88, "supply_chain": 0.72}), domains,
                old_new_dev=_report({"5g": 0}, 0.2), new_new_dev=_report({"5g": 0}, 0.6))
    assert same.promote and same.reasons == [] and all(c["passed"] for c in same.checks)

    carbon_drop = gate(old, _report({"5g": 0.95, "sme": 0.85, "carbon": 0.85, "supply_chain": 0.75}), domains)
    assert not carbon_drop.promote
    assert len(carbon_drop.reasons) == 1 and "'carbon' F1 fell 0.900 -> 0.850" in carbon_drop.reasons[0]

    macro_drop = gate(old, _report({"5g": 0.88, "sme": 0.78, "carbon": 0.88, "supply_chain": 0.68}), domains)
    assert not macro_drop.promote and "macro-F1 over the old domains fell" in macro_drop.reasons[0]
    assert gate(old, _report({"5g": 0.88, "sme": 0.78, "carbon": 0.88, "supply_chain": 0.68}), domains,
                config=GateConfig(max_macro_drop=0.05)).promote

    # a new domain's gain does not hide old losses: the macro check averages the old domains only
    grown = _report({"5g": 0.85, "sme": 0.75, "carbon": 0.85, "supply_chain": 0.65, "smart_mfg": 1.0})
    assert not gate(old, grown, domains, config=GateConfig(max_domain_drop=0.1)).promote

    unlearned = gate(old, old, domains, old_new_dev=_report({"5g": 0}, 0.5), new_new_dev=_report({"5g": 0}, 0.5))
    assert not unlearned.promote and "not learned" in unlearned.reasons[0]
    assert gate(None, old, []).promote


def test_significant_drop_rule_forgives_only_drops_whose_interval_reaches_zero():
    old = _report({"5g": 0.9, "sme": 0.8, "carbon": 0.9, "supply_chain": 0.7})
    domains = list(old["per_label"])
    new = _report({"5g": 0.86, "sme": 0.82, "carbon": 0.9, "supply_chain": 0.7})  # 5g -0.04 > 0.03
    noisy = {"5g": (-0.08, 0.006), "macro_f1": (-0.02, 0.02)}
    assert not gate(old, new, domains, change_intervals=noisy).promote  # the default rule ignores intervals
    forgiven = gate(old, new, domains, change_intervals=noisy, config=GateConfig(drop_rule="significant"))
    assert forgiven.promote and "forgiven as noise" in next(c["note"] for c in forgiven.checks if c["check"] == "f1_5g")
    real = gate(old, new, domains, change_intervals={"5g": (-0.08, -0.01)}, config=GateConfig(drop_rule="significant"))
    assert not real.promote and "interval of the change is below 0" in real.reasons[0]
    unknown = gate(old, new, domains, config=GateConfig(drop_rule="significant"))  # no intervals: cannot forgive
    assert not unknown.promote and "no interval to judge noise" in unknown.reasons[0]
    with pytest.raises(ValueError, match="drop_rule must be one of point, significant"):
        GateConfig(drop_rule="lenient")


def test_a_passed_check_whose_interval_reaches_past_the_margin_is_a_warning():
    old = _report({"5g": 0.9, "sme": 0.8, "carbon": 0.9, "supply_chain": 0.7})
    domains = list(old["per_label"])
    new = _report({"5g": 0.873, "sme": 0.8, "carbon": 0.91, "supply_chain": 0.7})  # 5g -0.027, inside the 0.03 margin
    intervals = {"5g": (-0.072, 0.016), "carbon": (-0.01, 0.03), "macro_f1": (-0.008, 0.01)}
    decision = gate(old, new, domains, change_intervals=intervals)
    assert decision.promote and len(decision.warnings) == 1
    assert "domain '5g' F1 passed (0.900 -> 0.873)" in decision.warnings[0] and "-0.072" in decision.warnings[0]
    assert decision.to_dict()["warnings"] == decision.warnings
    assert gate(old, new, domains, change_intervals={"5g": (-0.02, 0.01)}).warnings == []
    assert gate(old, new, domains).warnings == []  # no intervals, nothing to warn about



def test_a_document_moves_out_of_the_test_split_only_deliberately_and_on_record(tmp_path):
    import typer
    from typer.testing import CliRunner

    from policylens.cli.retrain import register
    from policylens.dataset import SplitConfig
    from training.retrain import assign_splits

    registry = Registry(tmp_path / "registry")
    app = typer.Typer()
    register(app)
    run = lambda *args: CliRunner().invoke(app, ["models", "move-doc", *args, "--registry", str(registry.root)])  # noqa: E731
    assert run("a", "--to", "train", "--note", "x").exit_code == 2  # nothing recorded yet
    registry.record_splits({"a": "test", "b": "test", "c": "train"}, "v0001")
    moved = run("a", "--to", "train", "--note", "its corrections should train")
    assert moved.exit_code == 0 and moved.output.strip() == "a: test -> train from the next retraining on"
    assert registry.split_assignments()["a"] == "train" and registry.test_doc_ids() == ["b"]
    (move,) = registry.split_moves()
    assert move["from"] == "test" and move["to"] == "train" and move["note"] == "its corrections should train"
    listing = CliRunner().invoke(app, ["models", "list", "--registry", str(registry.root)]).output
    assert "a: test -> train" in listing and "its corrections should train" in listing
    for args, why in ((("a", "--to", "train", "--note", "again"), "already in train"),
                      (("zz", "--to", "train", "--note", "x"), "in no recorded split"),
                      (("b", "--to", "holdout", "--note", "x"), "unknown split"),
                      (("b", "--to", "train", "--note", " "), "say why")):
        result = run(*args)
        assert result.exit_code == 2 and why in result.output, (args, result.output)
    # the next retraining puts the moved document's rows where it now is; a later record keeps the move
    rows = [{"id": f"{d}#0", "doc_id": d, "labels": []} for d in "abc"]
    splits, assignments = assign_splits(rows, registry.split_assignments(), SplitConfig())
    assert [r["doc_id"] for r in splits["train"]] == ["a", "c"] and [r["doc_id"] for r in splits["test"]] == ["b"]
    registry.record_splits(assignments, "v0002")
    assert registry.split_assignments()["a"] == "train" and len(registry.split_moves()) == 1
