"""Inference fixtures.

tiny_tagger_dir - a policylens tagger directory (random 4-label head over
                  `tiny_backbone_dir`), saved with training.tagger.save_tagger
                  exactly like a trained model; loads in well under a second.
                  Scores are random but deterministic, so tests check
                  consistency (labels vs scores/thresholds, torch vs onnx),
                  never accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_CALIBRATION = [
    "加快推进5G网络和数据中心等新型基础设施建设，扩大工业互联网平台应用规模。",
    "培育一批专精特新中小企业，优化营商环境降低企业融资成本。",
    "实施绿色制造工程推动节能降碳。",
    "严格控制钢铁、水泥等行业新增产能。",
    "推动新能源汽车产业链协同创新。",
    "支持集成电路产业高质量发展。",
]


@pytest.fixture(scope="session")
def tiny_tagger_dir(tiny_backbone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from policylens.tagger.model_dir import TaggerMeta, save_tagger
    from policylens.taxonomy import Taxonomy

    taxonomy = Taxonomy.load()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_backbone_dir,
        num_labels=len(taxonomy),
        problem_type="multi_label_classification",
        id2label=dict(enumerate(taxonomy.ids)),
        label2id={label: i for i, label in enumerate(taxonomy.ids)},
        use_safetensors=True,
    )
    # A random tiny BERT maps every text to nearly the same [CLS] vector; larger
    # weights make scores depend on the text, and a centred bias puts each label
    # near its 0.5 threshold, so labels differ between paragraphs.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2 and "embeddings" not in name:
                param.normal_(0.0, 0.4)
        model.eval()
        encoded = tokenizer(["passage: " + s for s in _CALIBRATION], padding=True, return_tensors="pt")
        logits = model(**encoded).logits
        model.classifier.bias.sub_(logits.mean(0))
    meta = TaggerMeta(
        taxonomy=taxonomy,
        thresholds=[0.5] * len(taxonomy),
        temperature=[1.0] * len(taxonomy),
        max_length=32,  # short windows: a 100-character paragraph already spans several
        stride=8,
        version="tiny-test",
    )
    return save_tagger(model, tokenizer, meta, tmp_path_factory.mktemp("taggers") / "tiny")


@pytest.fixture(scope="session")
def tiny_ensemble_dir(tiny_tagger_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny tagger plus a lexical model and stack weights: an ensemble tagger directory,
    written by save_tagger like a trained one (random but deterministic character weights)."""
    import numpy as np
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from policylens.tagger.ensemble import Stack
    from policylens.tagger.lexical import LexicalModel
    from policylens.tagger.model_dir import TaggerMeta, save_tagger

    meta = TaggerMeta.load(tiny_tagger_dir)
    vocabulary = sorted({c for text in _CALIBRATION for c in text})
    rng = np.random.default_rng(3)
    lexical = LexicalModel(labels=meta.taxonomy.ids, vocabulary=vocabulary, idf=np.ones(len(vocabulary)),
                           coef=rng.normal(0, 4.0, (len(meta.taxonomy), len(vocabulary))),
                           intercept=np.zeros(len(meta.taxonomy)), ngram_range=(1, 1))
    meta.stack = Stack(encoder=[0.8] * 4, lexical=[1.2] * 4, bias=[0.0] * 4).to_dict()
    model = AutoModelForSequenceClassification.from_pretrained(tiny_tagger_dir, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_tagger_dir)
    return save_tagger(model, tokenizer, meta, tmp_path_factory.mktemp("taggers") / "tiny-ensemble", lexical=lexical)
