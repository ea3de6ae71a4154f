"""Error analysis: the default ensemble's out-of-fold false positives and false negatives for one label.

Reads the OOF scores that `policylens cv` saved (models/cv/NAME/oof.*), combines them as the recipe
(`data/tagger_stack.json`) says: the mean of the two probabilities at the recipe's threshold, or a logistic
stack cross-fitted as the CV report does. It prints the paragraphs it gets wrong, most confident first, with
the encoder's and the lexical half's own probabilities, so a reader can compare them with data/GUIDELINE.md.
`--sure` keeps the rows whose annotator was sure: errors there are the model's, not the label's doubt.

    python -m benchmarks.tagger_errors --label supply_chain [--name default] [--n 15] [--sure]
"""

from __future__ import annotations

import argparse

import numpy as np

from policylens.calibration import sigmoid
from policylens.dataset import default_sources, load_labelled
from policylens.paths import CV_DIR
from policylens.taxonomy import Taxonomy
from training.cv_report import load_oof
from training.stack import STACK_RECIPE_PATH, crossfit_stack_probs, read_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True)
    parser.add_argument("--name", default="default", help="experiment folder under models/cv/")
    parser.add_argument("--n", type=int, default=15, help="errors of each kind to print")
    parser.add_argument("--sure", action="store_true", help="only rows whose annotator was sure of the labels")
    args = parser.parse_args()
    taxonomy = Taxonomy.load()
    rows = load_labelled(default_sources(), taxonomy)
    oof, _ = load_oof(CV_DIR / args.name / "oof")
    if len(rows) != len(oof.y):
        raise SystemExit(f"{CV_DIR / args.name}: {len(oof.y)} OOF rows but {len(rows)} labelled rows today; rerun policylens cv")
    j = oof.labels.index(args.label)
    recipe = read_recipe(STACK_RECIPE_PATH)
    encoder, lexical = sigmoid(oof.scores["encoder"][:, j]), sigmoid(oof.scores["lexical"][:, j])
    if recipe.combine == "mean":
        probs, how = (encoder + lexical) / 2, "mean of the two probabilities"
    else:
        probs, how = crossfit_stack_probs(oof.scores["encoder"], oof.scores["lexical"], oof.y, oof.folds)[:, j], "logistic stack, cross-fitted"
    threshold = recipe.labels.get(args.label, {}).get("threshold", 0.5)
    y = oof.y[:, j].astype(bool)
    pred = probs >= threshold
    keep = np.asarray([not (args.sure and r.get("unsure", False)) for r in rows])
    y, pred = y & keep, pred & keep
    print(f"{args.label}: {int(y.sum())} positives, {int((pred & ~y).sum())} false positives, "
          f"{int((~pred & y).sum())} false negatives ({how}, threshold {threshold:g}"
          f"{', rows whose annotator was sure' if args.sure else ''})")
    for kind, mask, order in (("false positive", pred & ~y, -probs), ("false negative", ~pred & y, probs)):
        print(f"\n## {kind}s, most confident first")
        for i in [i for i in np.argsort(order) if mask[i]][: args.n]:
            print(f"- [{rows[i]['id']}] p={probs[i]:.2f} (encoder {encoder[i]:.2f}, lexical {lexical[i]:.2f}) "
                  f"gold={rows[i]['labels']} {rows[i]['text'][:160]}")


if __name__ == "__main__":
    main()
