"""The model side of tagger training: loading a backbone, the loss, the optimiser."""

from __future__ import annotations

import numpy as np

from policylens.taxonomy import Taxonomy
from training.tagger.config import TaggerConfig

HEAD_NAMES = ("classifier", "pooler")  # new parameters: they get the (higher) head learning rate
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm")


def _init_pooler_as_identity(model, missing_keys: list[str]) -> None:
    """e5 has no pooler; start BERT's tanh(dense(CLS)) pooler at tanh(CLS) instead of noise."""
    import torch

    bert = getattr(model, "bert", None)
    if bert is None or bert.pooler is None or not any("pooler" in key for key in missing_keys):
        return
    with torch.no_grad():
        bert.pooler.dense.weight.copy_(torch.eye(bert.pooler.dense.weight.shape[0]))
        bert.pooler.dense.bias.zero_()


def load_for_training(backbone_dir: str, taxonomy: Taxonomy, config: TaggerConfig):
    """Tokenizer and a fresh classification head on the backbone, lower parts frozen per `config`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(backbone_dir)
    # The classifier (and pooler) are missing from a backbone by design: we check the missing
    # keys ourselves instead of printing transformers' load report into every training log.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            backbone_dir,
            num_labels=len(taxonomy),
            problem_type="multi_label_classification",
            id2label=dict(enumerate(taxonomy.ids)),
            label2id={label: i for i, label in enumerate(taxonomy.ids)},
            use_safetensors=True,
            output_loading_info=True,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    unexpected_missing = [k for k in info.get("missing_keys", []) if not (k.startswith("classifier") or "pooler" in k)]
    if unexpected_missing:
        raise ValueError(f"{backbone_dir}: checkpoint lacks encoder weights {unexpected_missing[:5]}; is it a BERT encoder?")
    _init_pooler_as_identity(model, info.get("missing_keys", []))
    base = model.base_model
    if config.freeze_embeddings:
        base.embeddings.word_embeddings.weight.requires_grad_(False)
    layers = list(getattr(getattr(base, "encoder", None), "layer", []))
    if layers and config.freeze_layers >= len(layers):
        raise ValueError(f"freeze_layers={config.freeze_layers} leaves nothing to train: the backbone has {len(layers)} layers")
    for layer in layers[: config.freeze_layers]:
        layer.requires_grad_(False)
    return tokenizer, model


def loss_function(targets: np.ndarray, config: TaggerConfig):
    """BCE over labels, with positives weighted sqrt(neg/pos) (clipped to [1, 10]) against imbalance."""
    import torch

    pos = targets.sum(0)
    pos_weight = np.sqrt((len(targets) - pos) / np.maximum(pos, 1.0)).clip(1.0, 10.0)
    return torch.nn.BCEWithLogitsLoss(
        pos_weight=torch.tensor(pos_weight, dtype=torch.float32) if config.pos_weight else None
    )


def parameter_groups(model, config: TaggerConfig) -> list[dict]:
    """AdamW groups of the trainable parameters: head vs encoder learning rate, decay vs none.

    The head starts from scratch and needs a larger step than the pretrained
    encoder; biases and layer norms are not decayed.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = []
    for is_head in (False, True):
        for decay in (True, False):
            chosen = [
                p for n, p in params
                if any(h in n for h in HEAD_NAMES) == is_head and (not any(k in n for k in NO_DECAY)) == decay
            ]
            if chosen:
                groups.append({
                    "params": chosen,
                    "lr": config.head_learning_rate if is_head else config.learning_rate,
                    "weight_decay": config.weight_decay if decay else 0.0,
                })
    return groups


def build_optimizer(model, config: TaggerConfig, total_steps: int):
    """AdamW over `parameter_groups` and a linear warmup-then-decay schedule over `total_steps`."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(parameter_groups(model, config))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler
