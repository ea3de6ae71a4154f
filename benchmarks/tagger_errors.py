"""Error analysis: the ensemble's out-of-fold false positives and false negatives for one label.

Reads the OOF scores that `policylens cv` saved (models/cv/NAME/oof.*), cross-fits the stack
as the CV report does, and prints the paragraphs it gets wrong, most confident first, with the
encoder's and TF-IDF's own probabilities, so a reader can compare them with data/GUIDELINE.md.

    python -m benchmarks.tagger_errors --label supply_chain [--name default] [--n 15]
"""

from __future__ import annotations

import argparse

import numpy as np

from policylens.calibration import sigmoid
from policylens.dataset import default_sources, load_labelled
from policylens.paths import CV_DIR
from policylens.taxonomy import Taxonomy
from training.cv_report import load_oof
from training.stack import crossfit_stack_probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True)
    parser.add_argument("--name", default="default", help="experiment folder under models/cv/")
    parser.add_argument("--n", type=int, default=15, help="errors of each kind to print")
    args = parser.parse_args()
    taxonomy = Taxonomy.load()
    rows = load_labelled(default_sources(), taxonomy)
    oof, _ = load_oof(CV_DIR / args.name / "oof")
    if len(rows) != len(oof.y):
        raise SystemExit(f"{CV_DIR / args.name}: {len(oof.y)} OOF rows but {len(rows)} labelled rows today; rerun policylens cv")
    j = oof.labels.index(args.label)
    probs = crossfit_stack_probs(oof.scores["encoder"], oof.scores["tfidf"], oof.y, oof.folds)[:, j]
    encoder, lexical = sigmoid(oof.scores["encoder"][:, j]), sigmoid(oof.scores["tfidf"][:, j])
    y = oof.y[:, j].astype(bool)
    pred = probs >= 0.5
    print(f"{args.label}: {int(y.sum())} positives, {int((pred & ~y).sum())} false positives, "
          f"{int((~pred & y).sum())} false negatives (ensemble, cross-fitted, threshold 0.5)")
    for kind, mask, order in (("false positive", pred & ~y, -probs), ("false negative", ~pred & y, probs)):
        print(f"\n## {kind}s, most confident first")
        for i in [i for i in np.argsort(order) if mask[i]][: args.n]:
            print(f"- [{rows[i]['id']}] p={probs[i]:.2f} (encoder {encoder[i]:.2f}, tfidf {lexical[i]:.2f}) "
                  f"gold={rows[i]['labels']} {rows[i]['text'][:160]}")


if __name__ == "__main__":
    main()
