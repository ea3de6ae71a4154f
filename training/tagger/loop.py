"""Fine-tune a BERT-family encoder as a multi-label paragraph tagger.

A plain PyTorch loop in the style of the HF `run_*_no_trainer` examples: it
lets evaluation pool the logits of a long paragraph's windows (a Trainer
would score windows), keeps one clear place for early stopping, and makes
the checkpoint-and-resume logic easy to read.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from policylens.calibration import sigmoid
from policylens.encoders.windows import pad_batch, pool_windows, tokenize_windows
from policylens.io import write_json
from policylens.metrics.multilabel import macro_f1
from policylens.tagger.ensemble import combiner_from_dict
from policylens.tagger.lexical import LexicalModel
from policylens.tagger.model_dir import TaggerMeta, save_tagger
from policylens.tagger.scoring import torch_window_logits
from policylens.taxonomy import Taxonomy
from training.tagger.cache import LowerLayerCache
from training.tagger.config import TaggerConfig, TrainResult
from training.tagger.data import data_fingerprint, shuffled_batches, training_windows
from training.tagger.model import build_optimizer, load_for_training, loss_function

CHECKPOINT_DIR = "checkpoint"


@dataclass
class _Run:
    """What data preparation hands the loop and the calibration: model, tokenised train and dev data."""

    backbone_dir: str
    tokenizer: Any
    model: Any
    windows: list[list[int]]
    targets: np.ndarray
    dev_rows: list[dict]
    y_dev: np.ndarray
    dev_owners: np.ndarray
    cache: LowerLayerCache | None = None
    train_states: list | None = None
    dev_states: list | None = None
    test_logits: np.ndarray | None = None  # raw pooled logits of splits['test'] (out-of-fold scores in CV)
    test_probs: np.ndarray | None = None  # the saved model's probabilities of splits['test'], computed in memory
    bank: dict | None = None  # text -> cached lower-layer states of its windows, shared across runs

    def paragraph_logits(self, texts: list[str], meta: TaggerMeta) -> np.ndarray:
        """Raw pooled logits of any paragraphs: through the cached lower layers when there are any."""
        if self.cache is None or not texts:
            return torch_window_logits(self.model, self.tokenizer, texts, meta)
        windows, owners = tokenize_windows(self.tokenizer, texts, meta.max_length, meta.stride, meta.prefix)
        states = self.cache.encode_texts(texts, windows, owners, self.tokenizer.pad_token_id, self.bank)
        return pool_windows(self.cache.window_logits(states), owners, len(texts), meta.pooling)

    def batch_logits(self, batch: np.ndarray):
        """Training logits of some windows: from the cached lower layers when there are any."""
        import torch

        if self.cache is not None:
            return self.cache.logits(self.train_states, batch)
        ids, mask = pad_batch([self.windows[i] for i in batch], self.tokenizer.pad_token_id)
        return self.model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits

    def dev_logits(self, meta: TaggerMeta) -> np.ndarray:
        """Paragraph-level dev logits (windows pooled as at inference)."""
        if self.cache is not None:
            return pool_windows(self.cache.window_logits(self.dev_states), self.dev_owners, len(self.dev_rows), meta.pooling)
        return torch_window_logits(self.model, self.tokenizer, [r["text"] for r in self.dev_rows], meta)


def train_tagger(
    splits: dict[str, list[dict]],
    taxonomy: Taxonomy,
    output_dir: str | Path,
    config: TaggerConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    state_bank: dict | None = None,
) -> TrainResult:
    """Train on splits['train'], select on splits['dev'], report on splits['test'] (if any).

    `output_dir` receives the final model atomically (written beside it, then
    renamed); `output_dir/../.<name>.work` holds the resumable state. `state_bank`
    (text -> frozen lower-layer states) lets several runs over the same paragraphs,
    such as cross-validation folds, compute those layers once.
    """
    import torch

    config = config or TaggerConfig()
    output_dir = Path(output_dir)
    work_dir = output_dir.parent / f".{output_dir.name}.work"
    started = time.time()
    torch.set_num_threads(config.num_threads or os.cpu_count() or 1)
    _seed_everything(config.seed)
    run = _prepare(splits, taxonomy, config, progress, state_bank)
    meta = TaggerMeta(
        taxonomy=taxonomy,
        thresholds=[0.5] * len(taxonomy),
        temperature=[1.0] * len(taxonomy),
        max_length=config.max_length,
        stride=config.stride,
        prefix=config.prefix,
    )
    state = _train_loop(run, meta, config, work_dir, resume, progress)
    metrics, seconds = _calibrate_and_save(run, meta, splits, config, state, work_dir, output_dir, started)
    shutil.rmtree(work_dir, ignore_errors=True)
    return TrainResult(model_dir=output_dir, metrics=metrics, history=state["history"], seconds=seconds,
                       test_logits=run.test_logits, test_probs=run.test_probs)


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _prepare(
    splits: dict[str, list[dict]], taxonomy: Taxonomy, config: TaggerConfig, progress: bool, bank: dict | None = None
) -> _Run:
    """Load the backbone, tokenise train and dev, and cache the frozen lower layers when the model allows."""
    from policylens.encoders.backbone import resolve_backbone

    backbone_dir = resolve_backbone(config.backbone)
    tokenizer, model = load_for_training(backbone_dir, taxonomy, config)
    train_rows, dev_rows = splits["train"], splits["dev"]
    if not train_rows or not dev_rows:
        raise ValueError("training needs non-empty train and dev splits")
    if config.soft_disputes:
        train_rows = soften_disputed(train_rows, taxonomy)
    if config.encoder_with_b4:
        train_rows = train_rows + _batch4_rows(splits, taxonomy)
    windows, targets, train_owners = training_windows(tokenizer, train_rows, config)
    y_dev = np.asarray([r["targets"] for r in dev_rows], dtype=np.float32)
    dev_windows, dev_owners = tokenize_windows(
        tokenizer, [r["text"] for r in dev_rows], config.max_length, config.stride, config.prefix
    )
    run = _Run(backbone_dir, tokenizer, model, windows, targets, dev_rows, y_dev, dev_owners)
    if LowerLayerCache.supports(model, config):
        run.cache, run.bank = LowerLayerCache(model, config.freeze_layers), bank
        if progress:
            print(f"caching the frozen lowest {config.freeze_layers} layers for {len(windows) + len(dev_windows)} windows")
        pad = tokenizer.pad_token_id
        run.train_states = run.cache.encode_texts([r["text"] for r in train_rows], windows, train_owners, pad, bank)
        run.dev_states = run.cache.encode_texts([r["text"] for r in dev_rows], dev_windows, dev_owners, pad, bank)
    return run


def soften_disputed(rows: list[dict], taxonomy: Taxonomy, readings: str | Path | None = None) -> list[dict]:
    """Training rows whose disputed tags (`policylens.dataset.disputed_labels`) become 0.5 targets: where two
    careful readers split, the encoder is not taught either answer with full confidence."""
    from policylens.dataset import disputed_labels

    disputed = disputed_labels(rows, readings)
    return [dict(r, targets=[0.5 if label in disputed[r["id"]] else t for label, t in zip(taxonomy.ids, r["targets"])])
            if r["id"] in disputed else r for r in rows]


def _train_loop(run: _Run, meta: TaggerMeta, config: TaggerConfig, work_dir: Path, resume: bool, progress: bool) -> dict:
    """Run the epochs, evaluating on dev every `eval_every` steps; returns the run state (step, best F1, history).

    A resumed run replays the same seeded batch order and skips the steps already done.
    """
    import torch
    from tqdm.auto import tqdm

    loss_fn = loss_function(run.targets, config)
    steps_per_epoch = math.ceil(len(run.windows) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    optimizer, scheduler = build_optimizer(run.model, config, total_steps)
    eval_every = max(1, steps_per_epoch // config.evals_per_epoch)
    ckpt_dir = work_dir / CHECKPOINT_DIR
    state: dict[str, Any] = {"step": 0, "best_f1": -1.0, "bad_evals": 0, "history": []}
    if resume and (ckpt_dir / "state.json").exists():
        state = _load_checkpoint(run.model, optimizer, scheduler, ckpt_dir)
        print(f"resumed from step {state['step']} (best dev macro-F1 {state['best_f1']:.4f})")

    rng = np.random.default_rng(config.seed)
    lengths = [len(w) for w in run.windows]
    run.model.train()
    bar = tqdm(total=total_steps, initial=state["step"], desc="train", disable=not progress)
    step, stop = 0, False
    for epoch in range(config.epochs):
        for batch in shuffled_batches(lengths, config.batch_size, rng):
            step += 1
            if step <= state["step"]:
                continue  # fast-forward a resumed run through the same batch order
            loss = loss_fn(run.batch_logits(batch), torch.from_numpy(run.targets[batch]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] = step
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", epoch=epoch)
            if step % eval_every == 0 or step == total_steps:
                f1 = _dev_macro_f1(run, meta)
                state["history"].append({"step": step, "epoch": round(step / steps_per_epoch, 2),
                                         "loss": round(loss.item(), 5), "dev_macro_f1": round(f1, 4)})
                bar.write(f"step {step}: dev macro-F1 {f1:.4f} (tuned thresholds)")
                _keep_if_best(run.model, state, f1, work_dir)
                _save_checkpoint(run.model, optimizer, scheduler, state, ckpt_dir)
                if state["bad_evals"] > config.patience * config.evals_per_epoch:
                    bar.write("early stopping: dev macro-F1 stopped improving")
                    stop = True
            if stop or step >= total_steps:
                stop = True
                break
        if stop:
            break
    bar.close()
    return state


def _dev_macro_f1(run: _Run, meta: TaggerMeta) -> float:
    """Dev macro-F1 at thresholds tuned on dev: what early stopping and best-weights selection use.

    It is the project's one macro-F1 (labels without a dev positive are left
    out), the same number the gate and the reports use.
    """
    from training.thresholds import tune_thresholds

    probs = sigmoid(run.dev_logits(meta))
    return macro_f1(run.y_dev, (probs >= tune_thresholds(run.y_dev, probs)).astype(int))


def _keep_if_best(model, state: dict, f1: float, work_dir: Path) -> None:
    """Save the trainable weights on a new best dev F1; otherwise count one more evaluation without progress."""
    if f1 > state["best_f1"]:
        state["best_f1"], state["bad_evals"] = f1, 0
        _save_trainable(model, work_dir / "best.safetensors")
    else:
        state["bad_evals"] += 1


def _calibrate_and_save(
    run: _Run,
    meta: TaggerMeta,
    splits: dict[str, list[dict]],
    config: TaggerConfig,
    state: dict,
    work_dir: Path,
    output_dir: Path,
    started: float,
) -> tuple[dict[str, Any], float]:
    """Restore the best weights, calibrate (temperature on dev; the stack for an ensemble), report dev/test, save."""
    from policylens.metrics import multilabel_report
    from training.thresholds import fit_temperature, tune_thresholds

    model, tokenizer, taxonomy, y_dev = run.model, run.tokenizer, meta.taxonomy, run.y_dev
    if (work_dir / "best.safetensors").exists():
        model.load_state_dict(_load_safetensors(work_dir / "best.safetensors"), strict=False)
    dev_texts = [r["text"] for r in run.dev_rows]
    dev_logits = run.paragraph_logits(dev_texts, meta)
    meta.temperature = [float(t) for t in fit_temperature(dev_logits, y_dev)]
    lexical = _fit_ensemble(meta, splits, config, dev_logits, y_dev) if config.ensemble else None
    if lexical is None:
        meta.thresholds = [float(t) for t in tune_thresholds(y_dev, sigmoid(dev_logits / np.asarray(meta.temperature)))]

    def probs(texts: list[str], logits: np.ndarray) -> np.ndarray:
        if lexical is None:
            return sigmoid(logits / np.asarray(meta.temperature))
        # from the stored (rounded) weights, so these scores are exactly what the saved model gives
        return combiner_from_dict(meta.stack).probs(logits, lexical.decision_function(texts))

    thresholds = np.asarray(meta.thresholds)
    dev_probs = probs(dev_texts, dev_logits)
    metrics: dict[str, Any] = {"dev": multilabel_report(y_dev.astype(int), (dev_probs >= thresholds).astype(int), taxonomy.ids)}
    if splits.get("test"):
        test_texts = [r["text"] for r in splits["test"]]
        y_test = np.asarray([r["targets"] for r in splits["test"]], dtype=int)
        run.test_logits = run.paragraph_logits(test_texts, meta)
        run.test_probs = probs(test_texts, run.test_logits)
        metrics["test"] = multilabel_report(y_test, (run.test_probs >= thresholds).astype(int), taxonomy.ids)
    seconds = time.time() - started
    meta.metrics = metrics
    meta.training = {
        **meta.training,  # the stack's provenance, when there is one
        "config": asdict(config),
        "backbone_dir": str(run.backbone_dir),
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
    save_tagger(model, tokenizer, meta, output_dir, lexical=lexical)
    return metrics, seconds


def _batch4_rows(splits: dict[str, list[dict]], taxonomy: Taxonomy) -> list[dict]:
    """The noisier batch 4 (../shared/data/train_silver_b4.jsonl) as extra training rows, when present: only
    rows from documents outside dev and test, and only labels this taxonomy knows."""
    from policylens.dataset import load_labelled
    from policylens.paths import SILVER_B4_PATH

    if not SILVER_B4_PATH.exists():
        return []
    held = {r["doc_id"] for name in ("dev", "test") for r in splits.get(name, [])}
    rows = [r for r in load_labelled([SILVER_B4_PATH], taxonomy, drop_unknown_labels=True) if r["doc_id"] not in held]
    for row in rows:
        row["targets"] = taxonomy.multi_hot(row["labels"])
    return rows


def _fit_ensemble(meta: TaggerMeta, splits: dict[str, list[dict]], config: TaggerConfig,
                  dev_logits: np.ndarray, y_dev: np.ndarray) -> LexicalModel:
    """Fit the lexical model on the training split and set the combiner and thresholds from the recipe (without
    one, or for a logistic stack's labels it lacks, fitted on dev)."""
    from training.baselines import TfidfBaseline
    from training.stack import STACK_RECIPE_PATH, Recipe, read_recipe, stack_for

    labels = meta.taxonomy.ids
    train = splits["train"] + (_batch4_rows(splits, meta.taxonomy) if config.lexical_with_b4 else [])
    lexical = TfidfBaseline(label_names=labels, word_ngram_range=config.lexical_word_ngrams).fit([r["text"] for r in train], [r["targets"] for r in train]).model_
    if config.stack_recipe is None:
        recipe_path = STACK_RECIPE_PATH if STACK_RECIPE_PATH.exists() else None
    else:
        recipe_path = Path(config.stack_recipe) if config.stack_recipe else None
    recipe = read_recipe(recipe_path) if recipe_path else Recipe()  # no recipe: a logistic stack fitted on dev
    dev_lexical = lexical.decision_function([r["text"] for r in splits["dev"]])
    stack, thresholds, from_dev = stack_for(labels, recipe, dev_logits, dev_lexical, y_dev)
    meta.stack, meta.thresholds = stack.to_dict(), [float(t) for t in thresholds]
    meta.training["stack"] = {"recipe": str(recipe_path) if recipe_path else None, "combine": recipe.combine,
                              "fitted_on_dev": from_dev}
    return lexical


# --- checkpoints: only trainable weights + optimiser; frozen weights come back from the backbone


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


def _load_checkpoint(model, optimizer, scheduler, ckpt_dir: Path) -> dict:
    """Restore what `_save_checkpoint` wrote into the live objects; returns the run state."""
    import torch

    state = json.loads((ckpt_dir / "state.json").read_text())
    model.load_state_dict(_load_safetensors(ckpt_dir / "model.safetensors"), strict=False)
    optimizer.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(ckpt_dir / "scheduler.pt", weights_only=True))
    return state
