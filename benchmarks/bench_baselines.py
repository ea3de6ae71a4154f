"""Measure the TF-IDF and keyword baselines on the real labelled data.

Not a test: it reads ../shared/data at run time and takes tens of seconds.
Run: `python -m benchmarks.bench_baselines`.
"""

from __future__ import annotations

import time

import numpy as np

from policylens.dataset import SplitConfig, build_dataset
from policylens.metrics import markdown_table, multilabel_report
from policylens.paths import SEED_ANNOTATIONS_PATH, SILVER_PATH
from policylens.taxonomy import Taxonomy
from training.baselines import KeywordBaseline, TfidfBaseline


def main() -> dict[str, dict]:
    taxonomy = Taxonomy.load()
    sources = [p for p in (SEED_ANNOTATIONS_PATH, SILVER_PATH) if p.exists()]
    data = build_dataset(sources, taxonomy, SplitConfig())
    split = {name: (list(data[name]["text"]), np.asarray(data[name]["targets"], dtype=int)) for name in data}
    print(f"sources: {[str(p) for p in sources]}")
    print("rows: " + ", ".join(f"{name}={len(texts)}" for name, (texts, _) in split.items()))

    (train_x, train_y), (dev_x, dev_y), (test_x, test_y) = split["train"], split["dev"], split["test"]
    reports, timings = {}, []
    for name, model in (("keyword", KeywordBaseline(taxonomy)), ("tfidf", TfidfBaseline(label_names=taxonomy.ids))):
        start = time.perf_counter()
        model.fit(train_x, train_y, dev_x, dev_y)
        fitted = time.perf_counter()
        predictions = model.predict(test_x)
        done = time.perf_counter()
        reports[name] = multilabel_report(test_y, predictions, taxonomy.ids)
        timings.append(f"{name}: fit {fitted - start:.1f}s, predict {len(test_x)} rows {done - fitted:.2f}s")
        if isinstance(model, TfidfBaseline):
            timings.append(f"tfidf: {len(model.vocabulary_)} features, thresholds {dict(zip(taxonomy.ids, model.thresholds_.round(2).tolist()))}")
    print()
    print(markdown_table(reports, taxonomy.ids))
    print()
    print("\n".join(timings))
    return reports


if __name__ == "__main__":
    main()
