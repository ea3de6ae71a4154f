"""Tagger variants that `policylens cv` flags cannot express (issue 12): measured against the default, fold by fold.

    python -m benchmarks.tagger_variants heading-context   # the encoder reads "headings｜paragraph"
    python -m benchmarks.tagger_variants self-training     # a student encoder on gold + the ensemble's soft labels
    python -m benchmarks.tagger_variants keyword-mean      # the keyword rule as a third probability in the mean
    python -m benchmarks.tagger_variants mean-pooling      # the classifier reads the mean of the last layer, not [CLS]
    python -m benchmarks.tagger_variants top8              # capacity: the top 8 of 12 layers fine-tuned, not 4
    python -m benchmarks.tagger_variants word-ngrams       # the lexical half with jieba word n-grams (adopted) vs
                                                           # characters only, in the mean; all / untouched / sure rows
    python -m benchmarks.tagger_variants lr2e-4            # the encoder's learning rate 2e-4 instead of 1e-4 (same time);
                                                           # also lr3e-4, lr4e-4 and lr5e-5
    python -m benchmarks.tagger_variants with-b4           # the encoder also trains on batch 4 (adopted as the default)
    python -m benchmarks.tagger_variants second-reading    # both halves train on the silver labels as corrected by
                                                           # data/silver_corrections.jsonl; scored against both labellings
    python -m benchmarks.tagger_variants soft-disputes     # the same, the encoder trained at 0.5 on the tags the two
                                                           # readings disagreed on (TaggerConfig.soft_disputes)

Every variant uses the default's five document folds (`training/cv.py:document_folds`, seed 13) and its
training loop; each encoder fold is saved when it is done (`models/cv/<variant>/fold<k>.npz`) and not trained
again when the script is rerun. The report pairs the variant with the default's out-of-fold scores, which
`policylens cv` saved in `models/cv/default` (run it first), on the same rows: macro-F1 and per-domain F1,
mean ± std over folds, and the paired difference with the number of folds where the variant is ahead.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from policylens.calibration import sigmoid
from policylens.chinese import normalize
from policylens.dataset import default_sources, load_labelled
from policylens.document import Document
from policylens.paths import (
    CORPUS_PATH,
    CV_DIR,
    REPO_ROOT,
    SILVER_B4_PATH,
    SILVER_CORRECTIONS_PATH,
)
from policylens.segment import segment
from policylens.taxonomy import Taxonomy
from training.cv import CVConfig, document_folds, extra_outside, fold_splits, oof_tfidf
from training.cv_report import load_oof, per_fold_f1

SEP = "｜"  # between the heading path and the paragraph


def labelled_rows(taxonomy: Taxonomy, corrected: bool = True) -> tuple[list[dict], list[dict]]:
    """The CV rows (seeds + silver) and batch 4, with multi-hot targets, as `policylens cv` reads them
    (`corrected=False`: without the project's corrections of the silver labels)."""
    rows = load_labelled([p for p in default_sources() if corrected or p != SILVER_CORRECTIONS_PATH], taxonomy)
    b4 = load_labelled([SILVER_B4_PATH], taxonomy, drop_unknown_labels=True) if SILVER_B4_PATH.exists() else []
    for row in rows + b4:
        row["targets"] = taxonomy.multi_hot(row["labels"])
    return rows, b4


def source_documents() -> dict[str, str]:
    """doc_id -> text of every document the labelled rows come from (the corpus and the seeds)."""
    docs = {}
    with open(CORPUS_PATH, encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            docs[doc["doc_id"]] = doc["text"]
    for path in (REPO_ROOT / "seeds").glob("*.txt"):
        docs[path.stem] = path.read_text(encoding="utf-8")
    return docs


def heading_paths(rows: list[dict]) -> dict[str, list[str]]:
    """Each row's enclosing headings: its document is segmented and the row found in a paragraph.

    The silver rows carry no headings, but every one of their documents is in the corpus."""
    docs = source_documents()

    def key(text: str) -> str:
        return "".join(normalize(text).split())

    by_doc: dict[str, list[dict]] = {}
    for row in rows:
        by_doc.setdefault(row["doc_id"], []).append(row)
    paths: dict[str, list[str]] = {}
    for doc_id, doc_rows in by_doc.items():
        if doc_id not in docs:
            continue
        paragraphs = [(key(p.text), p.headings) for p in segment(Document(id=doc_id, text=docs[doc_id]))]
        for row in doc_rows:
            k = key(row["text"])
            found = next((h for pk, h in paragraphs if k[:40] in pk or (pk[:40] in k and len(pk) > 10)), None)
            if found is not None:
                paths[row["id"]] = list(found)
    return paths


def with_heading(text: str, path: list[str], per_heading: int = 30, keep: int = 2) -> str:
    """The innermost `keep` headings, each cut to `per_heading` characters, before the paragraph."""
    context = " / ".join(h[:per_heading] for h in path[-keep:])
    return f"{context}{SEP}{text}" if context else text


def unlabelled_pool(labelled: list[dict]) -> list[dict]:
    """Body paragraphs (>= 20 characters) of the corpus that are not themselves labelled, in a seeded order."""
    seen = {"".join(r["text"].split()) for r in labelled}
    pool = []
    with open(CORPUS_PATH, encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            for p in segment(Document(id=doc["doc_id"], text=doc["text"])):
                if p.kind == "body" and len(p.text) >= 20 and "".join(p.text.split()) not in seen:
                    pool.append({"id": f"pool:{p.id}", "doc_id": doc["doc_id"], "source": doc.get("source", ""),
                                 "text": p.text, "labels": []})
    random.Random(13).shuffle(pool)
    return pool


def _save_fold(out: Path, fold: int, arrays: dict[str, np.ndarray], info: dict) -> None:
    tmp = out / f".fold{fold}.npz"
    np.savez(tmp, **arrays)
    tmp.replace(out / f"fold{fold}.npz")
    info["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    (out / f"fold{fold}.json").write_text(json.dumps(info, indent=1))


def load_folds(folder: Path, folds: list[int], shape: tuple[int, ...]) -> np.ndarray:
    """Probabilities of the held-out rows of the saved `folds` in `folder` (plain arrays: no pickle); 0 elsewhere."""
    probs = np.zeros(shape)
    for k in folds:
        arrays = np.load(folder / f"fold{k}.npz")
        probs[arrays["held"]] = sigmoid(arrays["logits"])
    return probs


def run_heading_context(rows: list[dict], folds: np.ndarray, taxonomy: Taxonomy, todo: list[int], out: Path,
                        config) -> None:
    paths = heading_paths(rows)
    print(f"{sum(1 for p in paths.values() if p)} of {len(rows)} rows have a heading")
    rows = [dict(r, text=with_heading(r["text"], paths.get(r["id"], []))) for r in rows]
    run_encoder_folds(rows, folds, taxonomy, todo, out, config)


def mean_pooled_logits(self, states: list, batch: np.ndarray):
    """`LowerLayerCache.logits` with the masked mean of the last layer in place of BERT's [CLS] pooler: e5 was
    trained to embed a text as that mean. (Every encoder forward of a CV fold goes through the cache.)"""
    hidden, mask = self.last_hidden(states, batch)
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return self.model.classifier(self.model.dropout(pooled))


def run_encoder_folds(rows: list[dict], folds: np.ndarray, taxonomy: Taxonomy, todo: list[int], out: Path,
                      config) -> None:
    """The default's encoder folds (training/cv.py:oof_encoder) on `rows`, each fold saved when done."""
    from training.tagger import train_tagger

    cv, bank, work = CVConfig(), {}, Path(tempfile.mkdtemp(prefix="policylens-variant-"))
    try:
        for fold in todo:
            started = time.time()
            held = np.flatnonzero(folds == fold)
            result = train_tagger(fold_splits(rows, folds, fold, cv), taxonomy, work / f"fold{fold}", config,
                                  progress=False, state_bank=bank)
            _save_fold(out, fold, {"held": held, "logits": result.test_logits}, {"seconds": round(time.time() - started, 1)})
            print(f"fold {fold}: {time.time() - started:.0f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_self_training(rows: list[dict], b4: list[dict], folds: np.ndarray, taxonomy: Taxonomy, todo: list[int],
                      out: Path, config, pool_size: int) -> None:
    """Per fold, nothing from the held-out documents: the teacher encoder is the default's fold; with its TF-IDF
    half (training rows + batch 4 outside held-out and inner-dev documents) it labels up to `pool_size`
    unlabelled paragraphs from other documents (soft targets: the mean of the two probabilities); the student
    is trained from the backbone, as the default, on gold + soft rows."""
    from training.baselines import TfidfBaseline
    from training.tagger import train_tagger

    pool = unlabelled_pool(rows + b4)
    print(f"unlabelled pool: {len(pool)} paragraphs", flush=True)
    cv, bank, work = CVConfig(), {}, Path(tempfile.mkdtemp(prefix="policylens-variant-"))
    try:
        for fold in todo:
            started = time.time()
            held = np.flatnonzero(folds == fold)
            splits = fold_splits(rows, folds, fold, cv)
            test = splits["test"]
            test_docs = {r["doc_id"] for r in test}
            fold_pool = [dict(p, targets=[0] * len(taxonomy)) for p in pool if p["doc_id"] not in test_docs][:pool_size]
            # the teacher's encoder; the pool rides along in its test split to get its logits
            teacher = train_tagger({**splits, "test": test + fold_pool}, taxonomy,
                                   work / f"teacher{fold}", config, progress=False, state_bank=bank)
            held_logits, pool_logits = teacher.test_logits[: len(test)], teacher.test_logits[len(test):]
            teacher_seconds = time.time() - started
            # the lexical half as the default fits it: batch 4 from documents outside dev and test
            lexical_rows = splits["train"] + extra_outside(b4, test + splits["dev"])
            lexical = TfidfBaseline(label_names=taxonomy.ids).fit([r["text"] for r in lexical_rows],
                                                                  [r["targets"] for r in lexical_rows])
            soft = (sigmoid(pool_logits) + sigmoid(lexical.decision_function([p["text"] for p in fold_pool]))) / 2
            students = [dict(p, targets=[float(x) for x in s]) for p, s in zip(fold_pool, soft)]
            student = train_tagger({**splits, "train": splits["train"] + students}, taxonomy,
                                   work / f"student{fold}", config, progress=False, state_bank=bank)
            _save_fold(out, fold, {"held": held, "teacher": held_logits, "logits": student.test_logits, "soft": soft},
                       {"teacher_seconds": round(teacher_seconds, 1),
                        "student_seconds": round(time.time() - started - teacher_seconds, 1),
                        "pool": len(fold_pool), "soft_mean": soft.mean(0).round(4).tolist()})
            for name in (f"teacher{fold}", f"student{fold}"):
                shutil.rmtree(work / name, ignore_errors=True)
            print(f"fold {fold}: teacher {teacher_seconds:.0f} s, student {time.time() - started - teacher_seconds:.0f} s",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def keyword_probabilities(keyword_hits: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """The keyword rule as a probability: P(label | hit) and P(label | no hit), counted on the other folds."""
    probs = np.zeros(keyword_hits.shape)
    for fold in np.unique(folds):
        train, held = folds != fold, folds == fold
        for j in range(y.shape[1]):
            hit = keyword_hits[train, j] > 0.5
            p_hit = (y[train][hit, j].sum() + 1) / (hit.sum() + 2)
            p_miss = (y[train][~hit, j].sum() + 1) / ((~hit).sum() + 2)
            probs[held, j] = np.where(keyword_hits[held, j] > 0.5, p_hit, p_miss)
    return probs


def report(systems: dict[str, np.ndarray], y: np.ndarray, folds: np.ndarray, labels: list[str], only: list[int],
           pairs: list[tuple[str, str]]) -> str:
    """One Markdown table of the systems and one of the paired differences, over the folds in `only`."""
    rows = np.isin(folds, only)
    table = {name: per_fold_f1(y[rows], (p[rows] >= 0.5).astype(int), folds[rows]) for name, p in systems.items()}

    def cell(a: np.ndarray, sign: str = "") -> str:
        return f"{a.mean():{sign}.3f} ± {a.std(ddof=1) if len(a) > 1 else 0:.3f}"

    lines = [f"Folds {only}, threshold 0.5.", "", "| system | macro-F1 | " + " | ".join(labels) + " |",
             "|---" * (len(labels) + 2) + "|"]
    for name, t in table.items():
        lines.append(f"| {name} | {cell(t.mean(1))} | " + " | ".join(cell(t[:, j]) for j in range(len(labels))) + " |")
    lines += ["", "| paired difference | macro-F1 | " + " | ".join(labels) + " |", "|---" * (len(labels) + 2) + "|"]
    for a, b in pairs:
        d = table[a] - table[b]

        def paired(v: np.ndarray) -> str:
            return f"{cell(v, '+')} ({int((v > 0).sum())}/{len(v)})"

        lines.append(f"| {a} − {b} | {paired(d.mean(1))} | " + " | ".join(paired(d[:, j]) for j in range(len(labels))) + " |")
    return "\n".join(lines)


def second_reading(taxonomy: Taxonomy, args) -> None:
    """Both halves of the default trained on the corrected labels, on the folds of the uncorrected ones
    (folds are stratified by label), paired with `models/cv/default` (trained on the uncorrected labels).

    Scored three ways: against the uncorrected labels, against the corrected ones, and on the rows no one
    corrected or re-read: those whose first annotator was sure. The last is the fair comparison: neither
    system's reference there depends on the second reading."""
    from training.tagger import TaggerConfig

    original, b4 = labelled_rows(taxonomy, corrected=False)
    corrected, _ = labelled_rows(taxonomy, corrected=True)
    if [r["id"] for r in original] != [r["id"] for r in corrected]:
        raise SystemExit("the corrections changed which rows are read: they may only change labels")
    folds = document_folds(original, 5, 13)
    saved, _ = load_oof(CV_DIR / args.baseline / "oof")
    if not (np.array_equal(saved.folds, folds) and np.array_equal(saved.y, [r["targets"] for r in original])):
        raise SystemExit(f"models/cv/{args.baseline} was not computed on the uncorrected labels and their folds")
    out = args.out or CV_DIR / args.variant
    out.mkdir(parents=True, exist_ok=True)
    todo = [int(k) for k in args.folds.split(",") if not (out / f"fold{int(k)}.npz").exists()]
    if todo:
        config = TaggerConfig(num_threads=args.threads, ensemble=False, max_steps=args.smoke,
                              soft_disputes=args.variant == "soft-disputes")
        run_encoder_folds(corrected, folds, taxonomy, todo, out, config)
    lexical_path = out / "tfidf.npz"
    if not lexical_path.exists():
        tmp = out / ".tfidf.npz"
        np.savez(tmp, logits=oof_tfidf(corrected, folds, taxonomy.ids, b4))
        tmp.replace(lexical_path)
    lexical = sigmoid(np.load(lexical_path)["logits"])
    done = sorted(int(p.stem[4:]) for p in out.glob("fold*.npz"))
    variant = load_folds(out, done, lexical.shape)
    before = (sigmoid(saved.scores["encoder"]) + sigmoid(saved.scores["tfidf"])) / 2
    systems = {"default (uncorrected labels)": before, "trained on corrected labels": (variant + lexical) / 2,
               "TF-IDF, uncorrected": sigmoid(saved.scores["tfidf"]), "TF-IDF, corrected": lexical}
    pairs = [("trained on corrected labels", "default (uncorrected labels)"), ("TF-IDF, corrected", "TF-IDF, uncorrected")]
    if args.variant == "soft-disputes":  # paired with the hard corrected labels' encoder as well
        hard = load_folds(CV_DIR / "second-reading", done, lexical.shape)
        systems = {"default (uncorrected labels)": before, "trained on corrected labels": (hard + lexical) / 2,
                   "disputed tags at 0.5": (variant + lexical) / 2}
        pairs = [("disputed tags at 0.5", "trained on corrected labels"), ("trained on corrected labels", "default (uncorrected labels)")]
    sure = np.asarray([not r.get("unsure", False) for r in original])
    y_fixed = np.asarray([r["targets"] for r in corrected], dtype=int)
    changed = int((y_fixed != saved.y).any(1).sum())
    for title, y, keep in [("against the uncorrected labels", saved.y, slice(None)),
                           (f"against the corrected labels ({changed} rows changed)", y_fixed, slice(None)),
                           (f"the {int(sure.sum())} rows whose annotator was sure (never corrected)", saved.y, sure)]:
        print(f"\n## {title}\n")
        print(report({k: v[keep] for k, v in systems.items()}, y[keep], folds[keep], taxonomy.ids, done, pairs))


def main(argv: list[str] | None = None) -> None:
    from training.tagger import TaggerConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant", choices=["heading-context", "self-training", "keyword-mean", "mean-pooling", "top8",
                                            "with-b4", "lr5e-5", "lr2e-4", "lr3e-4", "lr4e-4", "word-ngrams",
                                            "second-reading", "soft-disputes"])
    parser.add_argument("--folds", default="0,1,2,3,4", help="which of the five folds to train (comma-separated)")
    parser.add_argument("--pool", type=int, default=6000, help="self-training: unlabelled paragraphs per fold")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, help="where the folds go (default: models/cv/VARIANT)")
    parser.add_argument("--baseline", default="default", help="the saved CV run (models/cv/NAME) the variant is "
                        "paired with; for second-reading, the default trained on the uncorrected labels")
    parser.add_argument("--smoke", type=int, metavar="STEPS", help="a quick check of the code path: 300 rows, "
                        "a pool of 50, STEPS training steps (numbers meaningless; use with --out)")
    args = parser.parse_args(argv)

    taxonomy = Taxonomy.load()
    if args.variant in ("second-reading", "soft-disputes"):
        return second_reading(taxonomy, args)
    rows, b4 = labelled_rows(taxonomy)
    folds = document_folds(rows, 5, 13)
    saved, _ = load_oof(CV_DIR / args.baseline / "oof")  # FileNotFoundError: run `policylens cv` first
    if not np.array_equal(saved.folds, folds):
        raise SystemExit(f"models/cv/{args.baseline} was computed on other data or folds: rerun `policylens cv`")
    y, default_encoder, lexical = saved.y, sigmoid(saved.scores["encoder"]), sigmoid(saved.scores["lexical"])
    if args.smoke:
        keep = np.sort(np.random.default_rng(0).choice(len(rows), 300, replace=False))
        rows, folds, y = [rows[i] for i in keep], folds[keep], y[keep]
        default_encoder, lexical = default_encoder[keep], lexical[keep]
        args.pool = 50
    default = (default_encoder + lexical) / 2
    if args.variant == "word-ngrams":
        characters = (default_encoder + sigmoid(saved.scores["tfidf"])) / 2
        systems = {"mean with characters only": characters, "default: mean with characters and words": default}
        for name, keep in (("all rows", [True] * len(rows)),
                           ("rows whose labels nobody changed", ["labels_before" not in r for r in rows]),
                           ("rows whose annotator was sure", [r.get("unsure") is False for r in rows])):
            keep = np.asarray(keep)
            print(f"\n{name} ({int(keep.sum())})\n")
            print(report({k: v[keep] for k, v in systems.items()}, y[keep], folds[keep], taxonomy.ids, list(range(5)),
                         [tuple(systems)[::-1]]))
        return
    if args.variant == "keyword-mean":
        keyword = keyword_probabilities(saved.scores["keyword"], y, folds)
        systems = {"default (mean of encoder and TF-IDF)": default, "mean with the keyword rule": (default_encoder + lexical + keyword) / 3}
        print(report(systems, y, folds, taxonomy.ids, list(range(5)), [tuple(systems)[::-1]]))
        return

    out = args.out or CV_DIR / args.variant
    out.mkdir(parents=True, exist_ok=True)
    todo = [int(k) for k in args.folds.split(",") if not (out / f"fold{int(k)}.npz").exists()]
    config = TaggerConfig(num_threads=args.threads, ensemble=False, max_steps=args.smoke)
    if todo and args.variant == "heading-context":
        run_heading_context(rows, folds, taxonomy, todo, out, config)
    elif todo and args.variant == "with-b4":
        run_encoder_folds(rows, folds, taxonomy, todo, out, replace(config, encoder_with_b4=True))
    elif todo and args.variant == "top8":
        run_encoder_folds(rows, folds, taxonomy, todo, out, replace(config, freeze_layers=4))
    elif todo and args.variant.startswith("lr"):
        run_encoder_folds(rows, folds, taxonomy, todo, out, replace(config, learning_rate=float(args.variant[2:])))
    elif todo and args.variant == "mean-pooling":
        from training.tagger.cache import LowerLayerCache

        LowerLayerCache.logits = mean_pooled_logits
        run_encoder_folds(rows, folds, taxonomy, todo, out, config)
    elif todo:
        run_self_training(rows, b4, folds, taxonomy, todo, out, config, args.pool)
    done = sorted(int(p.stem[4:]) for p in out.glob("fold*.npz"))
    variant = load_folds(out, done, default_encoder.shape)
    systems = {"default encoder": default_encoder, f"{args.variant} encoder": variant,
               "default (mean with the lexical half)": default, f"{args.variant} in the mean": (variant + lexical) / 2}
    print(report(systems, y, folds, taxonomy.ids, done,
                 [(f"{args.variant} encoder", "default encoder"), (f"{args.variant} in the mean", "default (mean with the lexical half)")]))


if __name__ == "__main__":
    main()
