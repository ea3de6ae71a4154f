"""Fine-tune a BERT-family encoder as a multi-label paragraph tagger.

A plain PyTorch loop in the style of the HF `run_*_no_trainer` examples: it
lets evaluation pool the logits of a long paragraph's windows (a Trainer
would score windows), keeps one clear place for early stopping, and makes
the checkpoint-and-resume logic easy to read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from policylens.calibration import sigmoid
from policylens.encoders.windows import pad_batch, pool_windows, tokenize_windows
from policylens.io import write_json
from policylens.tagger.model_dir import TaggerMeta, save_tagger
from policylens.tagger.scoring import torch_window_logits
from policylens.taxonomy import Taxonomy

CHECKPOINT_DIR = "checkpoint"


@dataclass
class TaggerConfig:
    """Everything that decides a training run; stored with the model."""

    backbone: str | None = None  # local dir or hub id; None = the converted multilingual-e5-small
    max_length: int = 256
    stride: int = 64
    prefix: str = "passage: "
    epochs: int = 4
    batch_size: int = 16
    learning_rate: float = 5e-5
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    freeze_embeddings: bool = True  # most of e5's 118M parameters; 3-4x less optimiser work on CPU
    # Freeze the lowest N transformer layers; with BERT their outputs are computed once and
    # cached, so each epoch only runs the top layers (about 3x faster on CPU for 8 of 12).
    freeze_layers: int = 8
    pos_weight: bool = True  # sqrt(neg/pos) per label against class imbalance
    patience: int = 2  # epochs without dev macro-F1 improvement before stopping
    evals_per_epoch: int = 2
    seed: int = 13
    num_threads: int | None = None
    max_steps: int | None = None  # cap for smoke tests

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not 0 < self.learning_rate < 1 or not 0 < self.head_learning_rate < 1:
            raise ValueError("learning rates must be in (0, 1)")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0,1), got {self.warmup_ratio}")
        if self.freeze_layers < 0 or self.patience < 0 or self.evals_per_epoch < 1:
            raise ValueError("freeze_layers, patience must be >= 0 and evals_per_epoch >= 1")


@dataclass
class TrainResult:
    model_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def data_fingerprint(splits: dict[str, Any]) -> str:
    """Hash of every (split, id, text, labels): two models with the same hash saw the same data."""
    digest = hashlib.sha256()
    for split in sorted(splits):
        for row in sorted(splits[split], key=lambda r: r["id"]):
            digest.update(json.dumps([split, row["id"], row["text"], list(row["labels"])], ensure_ascii=False).encode())
    return digest.hexdigest()


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


class LowerLayerCache:
    """Hidden states after the frozen lowest `k` layers, computed once per window.

    Only for BERT sequence-classification models (the default backbone); the
    upper layers, pooler and classifier then train on these cached states.
    """

    def __init__(self, model, k: int) -> None:
        self.model, self.k = model, k
        self.bert = model.bert

    @staticmethod
    def supports(model, config: "TaggerConfig") -> bool:
        from transformers import BertForSequenceClassification

        return isinstance(model, BertForSequenceClassification) and config.freeze_embeddings and config.freeze_layers > 0

    def _mask(self, hidden, mask):
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.bert.config, inputs_embeds=hidden, attention_mask=mask)

    def encode(self, windows: list[list[int]], pad_id: int, batch_size: int = 64) -> list:
        import torch

        from policylens.encoders.windows import length_sorted_batches

        states: list = [None] * len(windows)
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            for batch in length_sorted_batches([len(w) for w in windows], batch_size):
                ids, mask = (torch.from_numpy(a) for a in pad_batch([windows[i] for i in batch], pad_id))
                hidden = self.bert.embeddings(input_ids=ids)
                ext = self._mask(hidden, mask)
                for layer in self.bert.encoder.layer[: self.k]:
                    hidden = layer(hidden, ext)
                for row, i in enumerate(batch):
                    states[i] = hidden[row, : len(windows[i])].clone()
        self.model.train(was_training)
        return states

    def logits(self, states: list, batch: np.ndarray):
        """Classifier logits from cached states (with grad through the upper layers)."""
        import torch

        width = max(states[i].shape[0] for i in batch)
        hidden = torch.zeros(len(batch), width, states[batch[0]].shape[1])
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, i in enumerate(batch):
            hidden[row, : states[i].shape[0]] = states[i]
            mask[row, : states[i].shape[0]] = 1
        ext = self._mask(hidden, mask)
        for layer in self.bert.encoder.layer[self.k :]:
            hidden = layer(hidden, ext)
        pooled = self.bert.pooler(hidden)
        return self.model.classifier(self.model.dropout(pooled))

    def window_logits(self, states: list, batch_size: int = 64) -> np.ndarray:
        import torch

        from policylens.encoders.windows import length_sorted_batches

        out = np.zeros((len(states), self.model.config.num_labels), dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            for batch in length_sorted_batches([s.shape[0] for s in states], batch_size):
                out[batch] = self.logits(states, batch).numpy()
        self.model.train(was_training)
        return out


def _training_windows(tokenizer, rows, config: TaggerConfig) -> tuple[list[list[int]], np.ndarray]:
    """Every window of every training paragraph, with its paragraph's targets."""
    windows, owners = tokenize_windows(
        tokenizer, [r["text"] for r in rows], config.max_length, config.stride, config.prefix
    )
    targets = np.asarray([rows[i]["targets"] for i in owners], dtype=np.float32)
    return windows, targets


def _batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar length: sort inside shuffled pools of 50 batches."""
    order = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [np.asarray(chunk[i : i + batch_size]) for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _macro_f1_at(thresholds: np.ndarray, probs: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, (probs >= thresholds).astype(int), average="macro", zero_division=0))


def train_tagger(
    splits: dict[str, list[dict]],
    taxonomy: Taxonomy,
    output_dir: str | Path,
    config: TaggerConfig | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train on splits['train'], select on splits['dev'], report on splits['test'] (if any).

    `output_dir` receives the final model atomically (written beside it, then
    renamed); `output_dir/../<name>.checkpoint` holds the resumable state.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from policylens.encoders.backbone import resolve_backbone
    from policylens.metrics import multilabel_report
    from training.thresholds import fit_temperature, tune_thresholds

    config = config or TaggerConfig()
    output_dir = Path(output_dir)
    work_dir = output_dir.parent / f".{output_dir.name}.work"
    ckpt_dir = work_dir / CHECKPOINT_DIR
    started = time.time()
    torch.set_num_threads(config.num_threads or os.cpu_count() or 1)
    _seed_everything(config.seed)

    backbone_dir = resolve_backbone(config.backbone)
    tokenizer, model = load_for_training(backbone_dir, taxonomy, config)
    train_rows, dev_rows = splits["train"], splits["dev"]
    if not train_rows or not dev_rows:
        raise ValueError("training needs non-empty train and dev splits")
    windows, targets = _training_windows(tokenizer, train_rows, config)
    y_dev = np.asarray([r["targets"] for r in dev_rows], dtype=np.float32)
    dev_windows, dev_owners = tokenize_windows(
        tokenizer, [r["text"] for r in dev_rows], config.max_length, config.stride, config.prefix
    )
    cache = LowerLayerCache(model, config.freeze_layers) if LowerLayerCache.supports(model, config) else None
    if cache:
        if progress:
            print(f"caching the frozen lowest {config.freeze_layers} layers for {len(windows) + len(dev_windows)} windows")
        train_states = cache.encode(windows, tokenizer.pad_token_id)
        dev_states = cache.encode(dev_windows, tokenizer.pad_token_id)

    def dev_logits_now() -> np.ndarray:
        if cache:
            return pool_windows(cache.window_logits(dev_states), dev_owners, len(dev_rows), meta.pooling)
        return torch_window_logits(model, tokenizer, [r["text"] for r in dev_rows], meta)

    pos = targets.sum(0)
    pos_weight = np.sqrt((len(targets) - pos) / np.maximum(pos, 1.0)).clip(1.0, 10.0)
    loss_fn = torch.nn.BCEWithLogitsLoss(
        pos_weight=torch.tensor(pos_weight, dtype=torch.float32) if config.pos_weight else None
    )
    head_names = ("classifier", "pooler")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = ("bias", "LayerNorm.weight", "layer_norm")
    groups = []
    for is_head in (False, True):
        for decay in (True, False):
            chosen = [
                p for n, p in params
                if any(h in n for h in head_names) == is_head and (not any(k in n for k in no_decay)) == decay
            ]
            if chosen:
                groups.append({
                    "params": chosen,
                    "lr": config.head_learning_rate if is_head else config.learning_rate,
                    "weight_decay": config.weight_decay if decay else 0.0,
                })
    optimizer = torch.optim.AdamW(groups)
    steps_per_epoch = math.ceil(len(windows) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    eval_every = max(1, steps_per_epoch // config.evals_per_epoch)

    state = {"step": 0, "best_f1": -1.0, "bad_evals": 0, "history": []}
    if resume and (ckpt_dir / "state.json").exists():
        state = json.loads((ckpt_dir / "state.json").read_text())
        model.load_state_dict(_load_safetensors(ckpt_dir / "model.safetensors"), strict=False)
        optimizer.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(ckpt_dir / "scheduler.pt", weights_only=True))
        print(f"resumed from step {state['step']} (best dev macro-F1 {state['best_f1']:.4f})")

    meta = TaggerMeta(
        taxonomy=taxonomy,
        thresholds=[0.5] * len(taxonomy),
        temperature=[1.0] * len(taxonomy),
        max_length=config.max_length,
        stride=config.stride,
        prefix=config.prefix,
    )
    patience_evals = config.patience * config.evals_per_epoch
    rng = np.random.default_rng(config.seed)
    lengths = [len(w) for w in windows]
    model.train()
    bar = tqdm(total=total_steps, initial=state["step"], desc="train", disable=not progress)
    step, stop = 0, False
    for epoch in range(config.epochs):
        for batch in _batches(lengths, config.batch_size, rng):
            step += 1
            if step <= state["step"]:
                continue  # fast-forward a resumed run through the same batch order
            if cache:
                logits = cache.logits(train_states, batch)
            else:
                ids, mask = pad_batch([windows[i] for i in batch], tokenizer.pad_token_id)
                logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
            loss = loss_fn(logits, torch.from_numpy(targets[batch]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] = step
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", epoch=epoch)
            if step % eval_every == 0 or step == total_steps:
                probs = sigmoid(dev_logits_now())
                f1 = _macro_f1_at(tune_thresholds(y_dev, probs), probs, y_dev)
                state["history"].append({"step": step, "epoch": round(step / steps_per_epoch, 2),
                                         "loss": round(loss.item(), 5), "dev_macro_f1": round(f1, 4)})
                bar.write(f"step {step}: dev macro-F1 {f1:.4f} (tuned thresholds)")
                if f1 > state["best_f1"]:
                    state["best_f1"], state["bad_evals"] = f1, 0
                    _save_trainable(model, work_dir / "best.safetensors")
                else:
                    state["bad_evals"] += 1
                _save_checkpoint(model, optimizer, scheduler, state, ckpt_dir)
                if state["bad_evals"] > patience_evals:
                    bar.write("early stopping: dev macro-F1 stopped improving")
                    stop = True
            if stop or step >= total_steps:
                stop = True
                break
        if stop:
            break
    bar.close()

    if (work_dir / "best.safetensors").exists():
        model.load_state_dict(_load_safetensors(work_dir / "best.safetensors"), strict=False)
    dev_logits = torch_window_logits(model, tokenizer, [r["text"] for r in dev_rows], meta)
    temperature = fit_temperature(dev_logits, y_dev)
    dev_probs = sigmoid(dev_logits / temperature)
    thresholds = tune_thresholds(y_dev, dev_probs)
    meta.temperature = [float(t) for t in temperature]
    meta.thresholds = [float(t) for t in thresholds]

    metrics: dict[str, Any] = {"dev": multilabel_report(y_dev.astype(int), (dev_probs >= thresholds).astype(int), taxonomy.ids)}
    if splits.get("test"):
        y_test = np.asarray([r["targets"] for r in splits["test"]], dtype=int)
        test_probs = sigmoid(torch_window_logits(model, tokenizer, [r["text"] for r in splits["test"]], meta) / temperature)
        metrics["test"] = multilabel_report(y_test, (test_probs >= thresholds).astype(int), taxonomy.ids)
    seconds = time.time() - started
    meta.metrics = metrics
    meta.training = {
        "config": asdict(config),
        "backbone_dir": str(backbone_dir),
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "history": state["history"],
        "steps": state["step"],
    }
    meta.data = {
        "fingerprint": data_fingerprint(splits),
        "sizes": {name: len(rows) for name, rows in splits.items()},
        "sources": sorted({r["source"] for rows in splits.values() for r in rows}),
    }
    meta.version = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    save_tagger(model, tokenizer, meta, output_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    return TrainResult(model_dir=output_dir, metrics=metrics, history=state["history"], seconds=seconds)


def _trainable_state(model) -> dict:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {n: t.detach().contiguous() for n, t in model.state_dict().items() if n in names}


def _save_trainable(model, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(_trainable_state(model), str(tmp))
    os.replace(tmp, path)


def _load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _save_checkpoint(model, optimizer, scheduler, state: dict, ckpt_dir: Path) -> None:
    """Only trainable weights + optimiser: frozen embeddings come back from the backbone."""
    import torch

    tmp = ckpt_dir.with_name(ckpt_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save_trainable(model, tmp / "model.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    write_json(tmp / "state.json", state)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    os.replace(tmp, ckpt_dir)
