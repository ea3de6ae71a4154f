"""`policylens train` and `policylens evaluate`: the paragraph tagger."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from policylens.cli._util import console, err_console, fail
from policylens.paths import TAGGER_DIR
from training.tagger.config import TaggerConfig  # option defaults: one source


def _splits(data: list[Path] | None, silver: bool, dev: float, test: float, seed: int):
    from policylens.dataset import SplitConfig, labelled_splits

    taxonomy, sources, splits = labelled_splits(data or [], silver, SplitConfig(dev=dev, test=test, seed=seed))
    console.print(f"data: {', '.join(str(s) for s in sources)}")
    console.print("splits: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return taxonomy, splits


def train(
    out: Path = typer.Option(TAGGER_DIR, "--out", "-o", help="Model directory to write."),
    data: Optional[list[Path]] = typer.Option(None, "--data", help="Extra labelled JSON Lines files."),
    silver: bool = typer.Option(True, help="Include ../shared/data/train_silver.jsonl when present."),
    backbone: Optional[str] = typer.Option(None, help="Local dir or hub id (default: converted multilingual-e5-small)."),
    epochs: int = typer.Option(TaggerConfig.epochs),
    batch_size: int = typer.Option(16),
    learning_rate: float = typer.Option(TaggerConfig.learning_rate),
    max_length: int = typer.Option(256),
    freeze_embeddings: bool = typer.Option(True, help="Freeze the word embeddings (much faster on CPU)."),
    freeze_layers: int = typer.Option(8, help="Freeze (and cache) the lowest N transformer layers; 0 trains all."),
    b4: bool = typer.Option(TaggerConfig.encoder_with_b4, "--b4/--no-b4", help="The encoder also trains on "
                            "../shared/data/train_silver_b4.jsonl when present (the lexical half always does)."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after N optimiser steps (smoke runs)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run from its last checkpoint."),
    seed: int = typer.Option(13),
    onnx: bool = typer.Option(
        True, "--onnx/--no-onnx", help="Export the int8 ONNX model after training and make it the default backend "
        "when it agrees with PyTorch on the dev split (macro-F1 within 0.01)."),
) -> None:
    """Fine-tune the paragraph tagger; writes a self-describing model directory."""
    from policylens.io import InputError
    from training.tagger import TaggerConfig, train_tagger

    try:
        taxonomy, splits = _splits(data, silver, 0.1, 0.15, seed)
        config = TaggerConfig(
            backbone=backbone, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
            max_length=max_length, freeze_embeddings=freeze_embeddings, freeze_layers=freeze_layers,
            encoder_with_b4=b4, max_steps=max_steps, seed=seed,
        )
        result = train_tagger(splits, taxonomy, out, config, resume=resume)
    except (InputError, ValueError) as err:
        fail(str(err))
    console.print(f"saved {result.model_dir} in {result.seconds / 60:.1f} min")
    for split, report in result.metrics.items():
        console.print(f"{split}: macro-F1 {report['macro_f1']:.4f}  micro-F1 {report['micro_f1']:.4f}")
    if onnx:
        _onnx_by_default(Path(result.model_dir), splits)


def _onnx_by_default(model_dir: Path, splits: dict) -> None:
    """Export the int8 ONNX model (calibrated on the training split) and pick the default backend
    on the dev split; never fails the training: any problem keeps torch and says why."""
    import time

    import numpy as np

    started = time.time()
    try:
        from inference.onnx_backend import choose_default_backend, export_onnx

        path = export_onnx(model_dir, calibration_texts=[row["text"] for row in splits["train"]])
        dev = splits["dev"]
        report = choose_default_backend(
            model_dir, [row["text"] for row in dev], np.asarray([row["targets"] for row in dev], dtype=int),
        )
    except Exception as err:  # noqa: BLE001 - the trained torch model stands on its own
        from policylens.tagger.model_dir import set_default_backend

        err_console.print(f"[yellow]warning:[/yellow] ONNX export failed ({type(err).__name__}: {err}); "
                          f"{model_dir} keeps the torch backend")
        try:
            set_default_backend(model_dir, "torch")
        except Exception:  # noqa: BLE001
            pass
        return
    console.print(f"exported {path} ({path.stat().st_size / 2**20:.1f} MiB) in {time.time() - started:.0f} s")
    if report["backend"] == "onnx":
        console.print(f"default backend: onnx: {report['reason']}")
    else:
        err_console.print(f"[yellow]default backend: torch[/yellow]: {report['reason']}")
    console.print(f"comparison written to {model_dir / 'onnx' / 'accuracy.json'}")


def evaluate(
    model: Path = typer.Option(TAGGER_DIR, "--model", "-m", help="Tagger directory to evaluate."),
    data: Optional[list[Path]] = typer.Option(None, "--data", help="Extra labelled JSON Lines files (as in training)."),
    silver: bool = typer.Option(True, help="Include ../shared/data/train_silver.jsonl when present."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for evaluation.json/.md (default: the model dir)."),
    baselines: bool = typer.Option(True, help="Also fit and score the TF-IDF and keyword baselines."),
    test: Optional[list[Path]] = typer.Option(
        None, "--test", help="Score on these labelled JSON Lines files instead of the test split "
        "(e.g. paragraphs from other documents labelled by reading; labels outside the taxonomy are ignored)."),
    seed: int = typer.Option(13),
    folds: int = typer.Option(
        0, "--folds", help="Instead of the test split: cross-validate the default recipe (the ensemble), TF-IDF and "
        "the keyword rules on K document folds (as `policylens cv --name default`, whose scores it reuses)."),
) -> None:
    """Score the tagger and the baselines on the same test split (or the same CV folds); write JSON and Markdown."""
    if folds:
        _run_cv("default", folds, ("encoder", "lexical", "tfidf", "keyword"), TaggerConfig.epochs, TaggerConfig.learning_rate,
                TaggerConfig.freeze_layers, TaggerConfig.encoder_with_b4, False, True, seed)
        return
    from policylens.io import InputError
    from policylens.metrics import markdown_table
    from policylens.tagger.model_dir import TaggerMeta
    from training.evaluate import evaluate_all, write_reports
    from training.tagger import data_fingerprint

    try:
        taxonomy, splits = _splits(data, silver, 0.1, 0.15, seed)
        has_model = (model / "policylens.json").exists()
        if not has_model and not baselines:
            fail(f"{model}: no trained tagger there; run `policylens train` first")
        if has_model and TaggerMeta.load(model).data.get("fingerprint") != data_fingerprint(splits):
            err_console.print(f"[yellow]warning:[/yellow] {model} was trained on different data or splits")
        if test:
            from policylens.dataset import load_labelled

            rows = load_labelled(test, taxonomy, drop_unknown_labels=True)
            splits["test"] = [{**row, "targets": taxonomy.multi_hot(row["labels"])} for row in rows]
            console.print(f"test: {len(rows)} rows from {', '.join(str(t) for t in test)} (instead of the test split)")
        systems = ("bert",) * has_model + (("tfidf", "keyword") if baselines else ())
        reports = evaluate_all(splits, taxonomy, model if has_model else None, systems)
    except (InputError, ValueError) as err:
        fail(str(err))
    console.print(markdown_table(reports, taxonomy.ids))
    # a score on other data must not overwrite the model's own evaluation files
    default_out = Path("out") / "evaluation-test-files" if test else (model if has_model else Path("out"))
    json_path, md_path = write_reports(reports, taxonomy, out or default_out)
    console.print(f"wrote {json_path} and {md_path}")


def cross_validate(
    name: str = typer.Option("default", "--name", help="Experiment name: its folder under models/cv/."),
    folds: int = typer.Option(5, min=2, help="Folds (whole documents per fold)."),
    systems: str = typer.Option("encoder,lexical,tfidf,keyword", help="Comma-separated: encoder, lexical (the "
                                "default's lexical half: character and word n-grams), tfidf (the character baseline), "
                                "keyword; the ensemble is reported whenever encoder and lexical are both there."),
    epochs: int = typer.Option(TaggerConfig.epochs),
    learning_rate: float = typer.Option(TaggerConfig.learning_rate),
    freeze_layers: int = typer.Option(8, help="Freeze (and cache) the lowest N layers; 0 trains all 12."),
    b4: bool = typer.Option(TaggerConfig.encoder_with_b4, "--b4/--no-b4", help="The encoder also trains on "
                            "../shared/data/train_silver_b4.jsonl (never a held-out document's rows)."),
    write_recipe: bool = typer.Option(False, "--write-recipe", help="Write the ensemble's combiner and "
                                      "thresholds, chosen on these OOF scores, to data/tagger_stack.json."),
    combine: str = typer.Option("mean", help="With --write-recipe: mean (of the two probabilities, nothing "
                                "fitted) or logistic (a stack fitted on the OOF scores)."),
    reuse: bool = typer.Option(True, help="Reuse OOF scores saved for the same data, folds and settings."),
    seed: int = typer.Option(13),
) -> None:
    """Cross-validate the tagger and the baselines on the same document folds (seeds + silver)."""
    _run_cv(name, folds, tuple(s.strip() for s in systems.split(",") if s.strip()), epochs, learning_rate,
            freeze_layers, b4, write_recipe, reuse, seed, combine)


def _run_cv(name: str, folds: int, systems: tuple[str, ...], epochs: int, learning_rate: float, freeze_layers: int,
            b4_encoder: bool, write_recipe: bool, reuse: bool, seed: int, combine: str = "mean") -> None:
    from policylens.dataset import default_sources, load_labelled
    from policylens.io import InputError
    from policylens.paths import CV_DIR, SILVER_B4_PATH
    from policylens.taxonomy import Taxonomy
    from training.cv import CVConfig, run_experiment
    from training.cv_report import cv_markdown
    from training.tagger import TaggerConfig

    try:
        taxonomy = Taxonomy.load()
        rows = load_labelled(default_sources(), taxonomy)
        config = TaggerConfig(epochs=epochs, learning_rate=learning_rate, freeze_layers=freeze_layers, seed=seed,
                              encoder_with_b4=b4_encoder)
        # batch 4: the encoder's training loop adds it itself (config.encoder_with_b4, outside the fold's held-out
        # and inner-dev documents); the TF-IDF half learns from it as the default tagger's does
        b4 = (load_labelled([SILVER_B4_PATH], taxonomy, drop_unknown_labels=True)
              if config.lexical_with_b4 and SILVER_B4_PATH.exists() else [])
        for row in rows + b4:
            row["targets"] = taxonomy.multi_hot(row["labels"])
        cv = CVConfig(folds=folds, seed=seed, systems=systems)
        console.print(f"{folds}-fold CV over {len(rows)} paragraphs"
                      + (f"; batch 4 ({len(b4)} rows) trains TF-IDF" if b4 else "")
                      + ("; batch 4 trains the encoder" if config.encoder_with_b4 and SILVER_B4_PATH.exists() else ""))
        oof, report = run_experiment(rows, taxonomy, CV_DIR / name, config, cv, reuse=reuse, lexical_extra=b4)
    except (InputError, ValueError) as err:
        fail(str(err))
    console.print(cv_markdown(report, taxonomy.ids))
    console.print(f"wrote {CV_DIR / name / 'report.md'}")
    if write_recipe:
        _write_recipe(oof, name, combine)


def _write_recipe(oof, name: str, combine: str) -> None:
    """The combiner and thresholds the default training applies, chosen on all OOF scores of this run."""
    from policylens.io import utc_timestamp
    from policylens.tagger.ensemble import COMBINES, ProbabilityMean
    from training.stack import (
        STACK_RECIPE_PATH,
        choose_thresholds,
        crossfit_stack_probs,
        fit_stack,
        write_recipe,
    )

    if not {"encoder", "lexical"} <= set(oof.scores):
        fail("--write-recipe needs both the encoder and lexical systems")
    if combine not in COMBINES:
        fail(f"--combine must be one of {list(COMBINES)}, got {combine!r}")
    combiner = (ProbabilityMean(len(oof.labels)) if combine == "mean"
                else fit_stack(oof.scores["encoder"], oof.scores["lexical"], oof.y))
    probs = crossfit_stack_probs(oof.scores["encoder"], oof.scores["lexical"], oof.y, oof.folds, combine)
    thresholds, evidence = choose_thresholds(oof.y, probs, oof.folds)
    write_recipe(STACK_RECIPE_PATH, oof.labels, combiner, thresholds, {
        "experiment": name, "created": utc_timestamp(), "rows": int(len(oof.y)), "folds": int(oof.folds.max() + 1),
        "thresholds": dict(zip(oof.labels, evidence)),
    })
    console.print(f"wrote {STACK_RECIPE_PATH}: {combine}, thresholds {dict(zip(oof.labels, thresholds.round(2).tolist()))}")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("cv")(cross_validate)
