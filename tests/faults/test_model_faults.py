"""Fault injection, model side (issue 14, work items 1-2): broken model versions are refused, clearly.

Every case takes the tiny tagger (a correct model dir with its files.sha256.json), breaks one
thing the way the issue did, and checks that `tag`, `models promote`, `models verify` and the
server's hot swap refuse it with one line naming the file and the problem (rc 2, no traceback),
or, for a version name written as a path, do the right thing.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from policylens.io import InputError
from policylens.tagger.model_dir import MANIFEST_FILE, write_manifest
from training.registry import CURRENT_FILE, Registry

# ---------------------------------------------------------------------------
# ways to break a model dir
# ---------------------------------------------------------------------------


def _tensor_span(weights: Path, name: str) -> tuple[int, int]:
    """Byte range of tensor `name`'s data in a safetensors file (header: u64 length + JSON)."""
    raw = weights.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    start, end = json.loads(raw[8 : 8 + n])[name]["data_offsets"]
    return 8 + n + start, 8 + n + end


def random_classifier_bytes(model_dir: Path) -> None:
    """Random bytes over the classifier weights; the header (and so the file's validity) is untouched."""
    weights = model_dir / "model.safetensors"
    a, b = _tensor_span(weights, "classifier.weight")
    raw = bytearray(weights.read_bytes())
    raw[a:b] = np.random.default_rng(14).bytes(b - a)
    weights.write_bytes(bytes(raw))


def truncated_weights(model_dir: Path) -> None:
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def garbage_weights(model_dir: Path) -> None:
    (model_dir / "model.safetensors").write_bytes(np.random.default_rng(7).bytes(4096))


def missing_tokenizer(model_dir: Path) -> None:
    (model_dir / "tokenizer.json").unlink()


def broken_config(model_dir: Path) -> None:
    (model_dir / "config.json").write_text('{"model_type": "bert", "hidden_size": ', encoding="utf-8")


def broken_meta(model_dir: Path) -> None:
    (model_dir / "policylens.json").write_text('{"taxonomy": }', encoding="utf-8")


def nan_weights(model_dir: Path) -> None:
    """A valid safetensors file whose classifier tensors are NaN, re-recorded in the manifest:
    what a training run that diverged would save, with nothing "changed since it was recorded"."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = model_dir / "model.safetensors"
    tensors = load_file(str(weights))
    for name in [n for n in tensors if n.startswith("classifier.")]:
        tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(weights), metadata={"format": "pt"})
    write_manifest(model_dir)


# case -> (how to break it, what the one-line error must say)
CASES = {
    "random_bytes": (random_classifier_bytes, r"model\.safetensors: (sha256 does not match|tensor .* NaN)"),
    "truncated": (truncated_weights, r"model\.safetensors: not a valid safetensors file \(.+\)"),
    "missing_tokenizer": (missing_tokenizer, r"no tokenizer\.json"),
    "broken_config": (broken_config, r"config\.json: not valid JSON: .* \(line 1 column \d+\)"),
    "broken_meta": (broken_meta, r"policylens\.json: not valid JSON: Expecting value \(line 1 column 14\)"),
    "nan_weights": (nan_weights, r"(scores are not finite: the weights are corrupt|tensor 'classifier\.\w+' holds NaN)"),
}


def broken_copy(source: Path, dest: Path, case: str) -> Path:
    shutil.copytree(source, dest)
    CASES[case][0](dest)
    return dest


def assert_one_line_error(result, pattern: str, code: int = 2) -> str:
    """Exit `code`, no traceback, and an `error:` line matching `pattern`; returns that line."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if "error" in line]
    assert len(lines) == 1, result.output
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


# ---------------------------------------------------------------------------
# the model dir itself: manifest, check, loading errors
# ---------------------------------------------------------------------------


def test_a_saved_tagger_records_every_file_and_passes_the_check(tiny_tagger_dir: Path, tmp_path: Path) -> None:
    from policylens.tagger.integrity import check_model_dir
    from policylens.tagger.model_dir import (
        TaggerMeta,
        hashed_files,
        read_manifest,
        set_default_backend,
    )

    files = read_manifest(tiny_tagger_dir)
    assert files is not None and set(files) == set(hashed_files(tiny_tagger_dir))
    assert {"model.safetensors", "config.json", "tokenizer.json", "policylens.json"} <= set(files)
    assert MANIFEST_FILE not in files and not any(name.startswith("onnx/") for name in files)
    assert check_model_dir(tiny_tagger_dir) == []
    # the project's own writers of policylens.json keep the manifest in step
    model = shutil.copytree(tiny_tagger_dir, tmp_path / "m")
    meta = TaggerMeta.load(model)
    meta.version = "edited"
    meta.save(model)
    set_default_backend(model, "torch")
    assert check_model_dir(model) == []


@pytest.mark.parametrize("case", list(CASES))
def test_check_model_dir_names_the_file_and_the_problem(case: str, tiny_tagger_dir: Path, tmp_path: Path) -> None:
    from policylens.tagger.integrity import check_model_dir

    problems = check_model_dir(broken_copy(tiny_tagger_dir, tmp_path / case, case))
    assert problems and re.search(CASES[case][1], problems[0]), problems
    assert all("\n" not in p for p in problems)


@pytest.mark.parametrize("case", ["truncated", "garbage", "broken_config", "broken_meta", "missing_tokenizer"])
def test_loading_errors_are_one_line_input_errors_without_a_manifest(case: str, tiny_tagger_dir: Path,
                                                                     tmp_path: Path) -> None:
    """A model dir saved before manifests existed: the loaders themselves name the file (was: SafetensorError,
    OSError or a bare "Expecting value: line 1 column 14" traceback)."""
    from policylens.tagger.scoring import Tagger

    model = shutil.copytree(tiny_tagger_dir, tmp_path / case)
    (model / MANIFEST_FILE).unlink()
    if case == "garbage":
        garbage_weights(model)
        pattern = CASES["truncated"][1]
    else:
        CASES[case][0](model)
        pattern = CASES[case][1]
    with pytest.raises(InputError) as info:
        Tagger(model, num_threads=1)
    assert re.search(pattern, str(info.value)) and "\n" not in str(info.value), str(info.value)


def test_non_finite_logits_while_scoring_are_refused(tiny_tagger_dir: Path) -> None:
    """Scores that turn NaN after loading (whatever the cause) raise instead of coming out as NaN labels."""
    from policylens.tagger.scoring import Tagger

    tagger = Tagger(tiny_tagger_dir, num_threads=1)
    assert np.isfinite(tagger.predict_proba(["加快5G建设。"])).all()
    tagger._scorer = lambda ids, mask: np.full((len(ids), len(tagger.labels)), np.nan, dtype=np.float32)
    with pytest.raises(InputError, match="scores are not finite: the weights are corrupt"):
        tagger.predict(["加快5G建设。"])


# ---------------------------------------------------------------------------
# policylens tag
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tag_app() -> typer.Typer:
    from policylens.cli.tag import register

    app = typer.Typer()

    @app.callback()
    def main() -> None:  # a callback keeps `tag` a named sub-command, as in policylens/cli
        pass

    register(app)
    return app


@pytest.mark.parametrize("case", list(CASES))
def test_tag_refuses_a_broken_model_in_one_line(case: str, tag_app, tiny_tagger_dir: Path, tmp_path: Path) -> None:
    model = broken_copy(tiny_tagger_dir, tmp_path / case, case)
    result = CliRunner().invoke(tag_app, ["tag", "-", "-m", str(model), "--no-summary", "--no-progress"],
                                input="培育一批专精特新中小企业。\n加快5G网络建设。\n".encode())
    assert_one_line_error(result, CASES[case][1])
    assert "{" not in result.stdout  # no records, NaN or otherwise


# ---------------------------------------------------------------------------
# the registry: promote, verify, version names
# ---------------------------------------------------------------------------


def register_copy(registry: Registry, source: Path) -> str:
    with registry.staging() as stage:
        shutil.copytree(source, stage)
        return registry.register(stage, {"data_version": "x", "labels": ["5g", "sme", "carbon", "supply_chain"]})


@pytest.fixture
def models_cli():
    from policylens.cli.retrain import register

    app = typer.Typer()
    register(app)

    def run(registry: Registry, *args: str):
        return CliRunner().invoke(app, [*args, "--registry", str(registry.root)])

    return run


def test_register_records_hashes_and_refuses_a_dir_changed_since_training(tiny_tagger_dir: Path, tmp_path: Path) -> None:
    from policylens.tagger.model_dir import read_manifest

    registry = Registry(tmp_path / "registry")
    name = register_copy(registry, tiny_tagger_dir)
    files = read_manifest(registry.path(name))
    assert files is not None and {"registry.json", "model.safetensors", "policylens.json"} <= set(files)
    with registry.staging() as stage:
        shutil.copytree(tiny_tagger_dir, stage)
        random_classifier_bytes(stage)
        with pytest.raises(InputError, match=r"refusing to register .*model\.safetensors: sha256 does not match"):
            registry.register(stage, {})
    assert registry.versions() == [name]


@pytest.mark.parametrize("case", list(CASES))
def test_promote_refuses_a_broken_version(case: str, models_cli, tiny_tagger_dir: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    good, bad = register_copy(registry, tiny_tagger_dir), register_copy(registry, tiny_tagger_dir)
    registry.promote(good)
    CASES[case][0](registry.path(bad))  # broken after registration (disk, hand edit, a bad copy)
    line = assert_one_line_error(models_cli(registry, "models", "promote", bad), CASES[case][1])
    assert f"refusing to promote {bad}:" in line
    assert registry.current() == good and (registry.root / CURRENT_FILE).read_text().strip() == good


def test_verify_reports_every_broken_version(models_cli, tiny_tagger_dir: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    good = register_copy(registry, tiny_tagger_dir)
    registry.promote(good)
    assert models_cli(registry, "models", "verify").output.strip() == "registry ok"
    broken = {}
    for case in CASES:
        name = register_copy(registry, tiny_tagger_dir)
        CASES[case][0](registry.path(name))
        broken[name] = case
    result = models_cli(registry, "models", "verify")
    assert result.exit_code == 1 and "registry ok" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("broken: ")]
    for name, case in broken.items():
        mine = [line for line in lines if line.startswith(f"broken: {name}: ")]
        assert mine and re.search(CASES[case][1], mine[0]), (case, mine)
    assert not any(line.startswith(f"broken: {good}:") for line in lines)
    assert models_cli(registry, "models", "verify", "--quick").exit_code == 0  # files present: the quick pass is ok


def test_version_names_written_as_paths_are_normalised(models_cli, tiny_tagger_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry(tmp_path / "registry")
    v1, v2 = register_copy(registry, tiny_tagger_dir), register_copy(registry, tiny_tagger_dir)
    monkeypatch.chdir(tmp_path)
    for spelling, expected in ((f"{v1}/", v1), (f"./{v2}", v2), (f"registry/{v1}", v1), (str(registry.root / v2) + "/", v2)):
        result = models_cli(registry, "models", "promote", spelling)
        assert result.exit_code == 0 and result.output.strip() == f"CURRENT -> {expected}", (spelling, result.output)
        assert (registry.root / CURRENT_FILE).read_text() == expected + "\n"
    assert models_cli(registry, "models", "verify").output.strip() == "registry ok"
    assert models_cli(registry, "models", "rollback").output.strip() == f"CURRENT -> {v1}"
    assert all("/" not in event["to"] for event in registry.history())
    for unknown in ("v0009", "elsewhere/v0001", "latest"):
        line = assert_one_line_error(models_cli(registry, "models", "promote", unknown), "no registered version")
        assert f"known versions: {v1}, {v2}" in line
    assert registry.current() == v1


def test_a_trailing_slash_left_by_older_code_still_rolls_back(tiny_tagger_dir: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    v1, v2 = register_copy(registry, tiny_tagger_dir), register_copy(registry, tiny_tagger_dir)
    events = [{"time": "t", "action": "promote", "from": None, "to": f"{v1}/"},
              {"time": "t", "action": "promote", "from": f"{v1}/", "to": f"{v2}/"}]
    (registry.root / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (registry.root / CURRENT_FILE).write_text(f"{v2}/\n")
    assert registry.current() == v2 and registry.verify(deep=True).ok
    assert registry.rollback() == v1 and registry.current() == v1


def test_rollback_refuses_to_land_on_a_broken_version(tiny_tagger_dir: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    v1, v2 = register_copy(registry, tiny_tagger_dir), register_copy(registry, tiny_tagger_dir)
    registry.promote(v1), registry.promote(v2)
    truncated_weights(registry.path(v1))
    with pytest.raises(InputError, match=rf"refusing to roll back to {v1}: .*model\.safetensors"):
        registry.rollback()
    assert registry.current() == v2


# ---------------------------------------------------------------------------
# the server's hot swap
# ---------------------------------------------------------------------------


def _predictor(model_dir: Path):
    from inference.predictor import Predictor

    return Predictor(model_dir, summarizer=None, num_threads=1)


@pytest.mark.parametrize("case", ["random_bytes", "nan_weights", "truncated"])
def test_hot_swap_refuses_a_broken_version_and_keeps_serving(case: str, tiny_tagger_dir: Path, tmp_path: Path) -> None:
    import httpx

    from inference.server.app import create_app

    registry = Registry(tmp_path / "registry")
    good, bad = register_copy(registry, tiny_tagger_dir), register_copy(registry, tiny_tagger_dir)
    registry.promote(good)
    CASES[case][0](registry.path(bad))
    paragraphs = ["培育一批专精特新中小企业。", "加快推进5G网络和数据中心等新型基础设施建设。"]

    async def scenario():
        app = create_app(None, registry_pointer=registry.root / CURRENT_FILE, poll_seconds=0, predictor_factory=_predictor)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://policylens.test", timeout=30) as http:
                before = (await http.post("/v1/tag", json={"paragraphs": paragraphs})).json()
                # what an out-of-band promotion (older code, a hand edit) looks like to the server
                (registry.root / CURRENT_FILE).write_text(bad + "\n")
                reload = await http.post("/v1/admin/reload")
                after = await http.post("/v1/tag", json={"paragraphs": paragraphs})
                info = (await http.get("/v1/model")).json()
                return before, reload, after, info

    before, reload, after, info = asyncio.run(scenario())
    assert reload.status_code == 500 and reload.json()["status"] == "failed"
    assert re.search(CASES[case][1], reload.json()["error"]) and str(registry.path(bad)) in reload.json()["error"]
    assert after.status_code == 200 and after.json() == before  # the old version answers, scores and all
    assert all(r["scores"] and all(0.0 <= v <= 1.0 for v in r["scores"].values()) for r in after.json()["results"])
    assert re.search(CASES[case][1], info["reload"]["last_error"])


def test_an_ensemble_without_its_lexical_model_is_refused_by_name(tiny_ensemble_dir: Path, tmp_path: Path) -> None:
    from inference.predictor import Predictor

    broken = tmp_path / "ensemble"
    shutil.copytree(tiny_ensemble_dir, broken)
    (broken / "lexical.json").unlink()
    with pytest.raises(InputError, match=r"lexical\.json: missing"):
        Predictor(broken, backend="torch", num_threads=1, summarizer=None)


def test_a_tampered_lexical_model_is_refused_by_the_manifest(tiny_ensemble_dir: Path, tmp_path: Path) -> None:
    from inference.predictor import Predictor
    from policylens.tagger.integrity import check_model_dir

    broken = tmp_path / "ensemble"
    shutil.copytree(tiny_ensemble_dir, broken)
    weights = broken / "lexical.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-8:] = np.random.default_rng(1).bytes(8)  # coefficients changed, the file still parses
    weights.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="lexical.safetensors"):
        Predictor(broken, backend="torch", num_threads=1, summarizer=None)
    assert any("lexical.safetensors" in problem for problem in check_model_dir(broken))
