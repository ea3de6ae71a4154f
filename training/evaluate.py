"""Score the fine-tuned tagger and both baselines on exactly the same splits."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from policylens.io import write_json
from policylens.taxonomy import Taxonomy

SYSTEMS = ("bert", "tfidf", "keyword")


def _xy(rows: list[dict]) -> tuple[list[str], np.ndarray]:
    return [r["text"] for r in rows], np.asarray([r["targets"] for r in rows], dtype=int)


def evaluate_system(
    system: str, splits: dict[str, list[dict]], taxonomy: Taxonomy, model_dir: str | Path | None = None
) -> dict[str, Any]:
    """Test-split report for one system; baselines are fitted on train and thresholded on dev here."""
    from policylens.metrics import multilabel_report
    from training.baselines import KeywordBaseline, TfidfBaseline

    started = time.time()
    train_x, train_y = _xy(splits["train"])
    dev_x, dev_y = _xy(splits["dev"])
    test_x, test_y = _xy(splits["test"])
    if system == "bert":
        from policylens.tagger.scoring import Tagger

        if model_dir is None:
            raise ValueError("evaluating the tagger needs its model directory")
        predictor = Tagger(model_dir)
        if predictor.labels != taxonomy.ids:
            raise ValueError(f"{model_dir}: labels {predictor.labels} differ from the taxonomy {taxonomy.ids}")
        pred = np.asarray([[label in tags.labels for label in taxonomy.ids] for tags in predictor.predict(test_x)], dtype=int)
    elif system == "tfidf":
        pred = TfidfBaseline().fit(train_x, train_y, dev_x, dev_y).predict(test_x)
    elif system == "keyword":
        pred = KeywordBaseline(taxonomy).fit().predict(test_x)
    else:
        raise ValueError(f"unknown system {system!r}; choose from {SYSTEMS}")
    report = multilabel_report(test_y, np.asarray(pred, dtype=int), taxonomy.ids)
    report["seconds"] = round(time.time() - started, 1)
    return report


def evaluate_all(
    splits: dict[str, list[dict]],
    taxonomy: Taxonomy,
    model_dir: str | Path | None,
    systems: tuple[str, ...] = SYSTEMS,
) -> dict[str, dict[str, Any]]:
    return {
        system: evaluate_system(system, splits, taxonomy, model_dir)
        for system in systems
        if system != "bert" or model_dir is not None
    }


def write_reports(reports: dict[str, dict], taxonomy: Taxonomy, out_dir: str | Path) -> tuple[Path, Path]:
    """evaluation.json and evaluation.md (systems side by side)."""
    from policylens.io import atomic_write
    from policylens.metrics import markdown_table

    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "evaluation.json", out_dir / "evaluation.md"
    write_json(json_path, reports)
    with atomic_write(md_path) as handle:
        handle.write("# Test-split evaluation\n\n" + markdown_table(reports, taxonomy.ids) + "\n")
    return json_path, md_path
