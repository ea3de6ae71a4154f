"""Two saved taggers side by side on the fixed test split, against the labels as corrected and as first read.

    python -m benchmarks.compare_models OLD_MODEL_DIR NEW_MODEL_DIR [--backend torch]

The test split keeps its documents when `data/silver_corrections.jsonl` relabels rows (it is drawn on the
labels as first read), so a model trained before a correction and one trained after are scored on the same
paragraphs. Three references: the uncorrected labels, the corrected ones, and the rows whose annotator was
sure (no correction touches them: the reference both models share). Each model uses its own thresholds.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import f1_score

from policylens.dataset import first_labels, labelled_splits


def main(argv: list[str] | None = None) -> None:
    from inference.predictor import Predictor

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="model directories (each scored in turn)")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    taxonomy, _, splits = labelled_splits()
    test = splits["test"]
    texts = [r["text"] for r in test]
    corrected = np.asarray([r["targets"] for r in test], dtype=int)
    first = np.asarray([taxonomy.multi_hot(first_labels(r)) for r in test], dtype=int)
    sure = np.asarray([not r.get("unsure", False) for r in test])
    every = np.ones(len(test), dtype=bool)
    references = [("uncorrected labels", first, every), ("corrected labels", corrected, every),
                  (f"the {int(sure.sum())} rows whose annotator was sure", first, sure)]
    print(f"fixed test split: {len(test)} paragraphs, {int((corrected != first).any(1).sum())} relabelled by corrections\n")
    print("| model | against | macro-F1 | " + " | ".join(taxonomy.ids) + " |")
    print("|---" * (len(taxonomy.ids) + 3) + "|")
    for model_dir in args.models:
        predictor = Predictor(model_dir, backend=args.backend, summarizer=None, num_threads=args.threads)
        if predictor.labels != taxonomy.ids:
            raise SystemExit(f"{model_dir}: its labels {predictor.labels} are not the data's {taxonomy.ids}")
        pred = np.asarray([[label in tags.labels for label in taxonomy.ids] for tags in predictor.predict(texts)], dtype=int)
        for name, y, rows in references:
            f1 = f1_score(y[rows], pred[rows], average=None, zero_division=0)
            print(f"| {model_dir} | {name} | {f1.mean():.4f} | " + " | ".join(f"{v:.3f}" for v in f1) + " |")


if __name__ == "__main__":
    main()
