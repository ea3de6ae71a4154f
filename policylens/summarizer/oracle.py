"""Oracle labels: the sentences that best reproduce a reference, by character ROUGE."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from policylens.metrics.rouge import ngram_f1, ngrams, rouge_tokens


def sentence_rouge(sentences: Sequence[str], reference: str) -> np.ndarray:
    """Each sentence's own (ROUGE-1 F + ROUGE-2 F) / 2 against the reference, scaled so the
    best is 1: a graded target next to the 0/1 oracle, so near-misses still rank high."""
    ref_tokens = rouge_tokens(reference)
    ref1, ref2 = ngrams(ref_tokens, 1), ngrams(ref_tokens, 2)
    scores = []
    for sentence in sentences:
        tokens = rouge_tokens(sentence)
        scores.append((ngram_f1(ngrams(tokens, 1), ref1) + ngram_f1(ngrams(tokens, 2), ref2)) / 2)
    out = np.asarray(scores, dtype=np.float32)
    return out / out.max() if len(out) and out.max() > 0 else out


def oracle_labels(sentences: Sequence[str], reference: str, max_selected: int = 3,
                  max_chars: int | None = None) -> list[int]:
    """Greedy oracle (BertSum): add the sentence that most raises ROUGE-1 F + ROUGE-2 F
    against the reference, stop when nothing raises it. Character-level, like char_rouge.
    max_chars: the summary's length budget (characters of the chosen sentences); only the first
    pick may exceed it, and only when no sentence fits (as in summary selection)."""
    ref_tokens = rouge_tokens(reference)
    refs = (ngrams(ref_tokens, 1), ngrams(ref_tokens, 2))
    tokens = [rouge_tokens(s) for s in sentences]
    labels = [0] * len(sentences)
    chosen: list[int] = []
    best = 0.0
    used = 0
    fits_alone = max_chars is None or any(len(s) <= max_chars for s in sentences)
    for _ in range(min(max_selected, len(sentences))):
        best_i, best_gain = -1, best
        for i in range(len(sentences)):
            if labels[i]:
                continue
            if max_chars is not None and used + len(sentences[i]) > max_chars and (chosen or fits_alone):
                continue
            joined = [t for j in sorted(chosen + [i]) for t in tokens[j]]
            score = ngram_f1(ngrams(joined, 1), refs[0]) + ngram_f1(ngrams(joined, 2), refs[1])
            if score > best_gain + 1e-9:
                best_i, best_gain = i, score
        if best_i < 0:
            break
        labels[best_i] = 1
        chosen.append(best_i)
        used += len(sentences[best_i])
        best = best_gain
    return labels
