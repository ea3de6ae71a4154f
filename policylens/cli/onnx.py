"""`policylens export-onnx`: the tagger as an int8 ONNX model, optionally made its default backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from policylens.cli._util import console, fail
from policylens.paths import TAGGER_DIR


def export_onnx(
    model: Path = typer.Option(TAGGER_DIR, "--model", "-m", help="Tagger directory (or a registry pointer)."),
    quantize: bool = typer.Option(
        True, "--quantize/--no-quantize",
        help="int8 weights and activations (static: scales calibrated on training paragraphs, so scores "
        "do not depend on the batch)."),
    per_channel: bool = typer.Option(True, "--per-channel/--per-tensor", help="One weight scale per channel."),
    full_range: bool = typer.Option(False, "--full-range", help="8-bit weights (only safe on CPUs with VNNI)."),
    calibration_size: int = typer.Option(256, min=1, help="Training paragraphs that calibrate the int8 scales."),
    quantize_ffn_output: bool = typer.Option(
        False, "--quantize-ffn-output", help="Also int8 the feed-forward output projection (faster, less accurate)."),
    default: bool = typer.Option(False, "--default", help="Make onnx this model's default backend."),
    evaluate: bool = typer.Option(False, "--evaluate", help="Compare torch and onnx on the test split; writes onnx/accuracy.json."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for --evaluate."),
) -> None:
    """Export the tagger to ONNX (int8 by default) inside its model directory."""
    from inference.onnx_backend import (
        ONNX_DIR,
        ExportConfig,
        compare_backends,
        export_info,
        load_test_split,
    )
    from inference.onnx_backend import export_onnx as run_export
    from policylens.io import InputError, write_json
    from policylens.tagger.model_dir import resolve_model_dir, set_default_backend

    try:
        model_dir = resolve_model_dir(model)
        config = ExportConfig(quantize=quantize, per_channel=per_channel, reduce_range=not full_range,
                              calibration_size=calibration_size, quantize_ffn_output=quantize_ffn_output)
        path = run_export(model_dir, config)
        console.print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        if evaluate:
            report = compare_backends(model_dir, *load_test_split(), num_threads=threads)
            report["export"] = export_info(model_dir)
            write_json(model_dir / ONNX_DIR / "accuracy.json", report)
            console.print_json(json.dumps(report, ensure_ascii=False))
        if default:
            set_default_backend(model_dir, "onnx")
            console.print(f"{model_dir}: default backend is now onnx")
    except (InputError, ValueError) as err:
        fail(str(err))


def register(app: typer.Typer) -> None:
    app.command("export-onnx")(export_onnx)
