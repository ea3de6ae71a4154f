"""The self-describing tagger directory: what sits next to the weights, how it is saved and found.

A tagger directory holds a standard transformers sequence-classification
checkpoint (safetensors + config + tokenizer) and `policylens.json`, which
carries everything else a predictor needs: taxonomy, calibrated thresholds,
windowing settings, and where the model came from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from policylens.encoders.e5 import PASSAGE_PREFIX
from policylens.io import InputError, publish_dir, temp_dir_beside, write_json
from policylens.metrics import markdown_table
from policylens.taxonomy import Taxonomy

META_FILE = "policylens.json"
BACKENDS = ("torch", "onnx")


@dataclass
class TaggerMeta:
    taxonomy: Taxonomy
    thresholds: list[float]  # per label, applied to calibrated probabilities
    temperature: list[float]  # per label, logits are divided by it before the sigmoid
    max_length: int = 256
    stride: int = 64
    prefix: str = PASSAGE_PREFIX
    pooling: str = "max"  # how window logits of a long paragraph are combined
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    version: str = ""

    def __post_init__(self) -> None:
        n = len(self.taxonomy)
        if len(self.thresholds) != n or len(self.temperature) != n:
            raise ValueError(f"thresholds/temperature must have one value per label ({n})")
        if self.pooling not in ("max", "mean"):
            raise ValueError(f"pooling must be 'max' or 'mean', got {self.pooling!r}")
        if not 8 <= self.max_length <= 512 or not 0 <= self.stride < self.max_length // 2:
            raise ValueError(f"bad windowing: max_length={self.max_length}, stride={self.stride}")

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["taxonomy"] = self.taxonomy.to_dict()
        return row

    def save(self, model_dir: str | Path) -> None:
        write_json(Path(model_dir) / META_FILE, self.to_dict())

    @classmethod
    def load(cls, model_dir: str | Path) -> "TaggerMeta":
        path = Path(model_dir) / META_FILE
        if not path.exists():
            raise InputError(f"{model_dir}: not a policylens tagger (no {META_FILE}); train one with `policylens train`")
        obj = json.loads(path.read_text(encoding="utf-8"))
        obj["taxonomy"] = Taxonomy.from_dict(obj["taxonomy"], origin=str(path))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in obj.items() if k in known})


def model_settings(model_dir: str | Path) -> dict[str, Any]:
    """The optional `inference` block of policylens.json (e.g. {"backend": "onnx"}); TaggerMeta ignores it."""
    path = Path(model_dir) / META_FILE
    try:
        block = json.loads(path.read_text(encoding="utf-8")).get("inference") or {}
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}
    return block if isinstance(block, dict) else {}


def set_default_backend(model_dir: str | Path, backend: str) -> None:
    """Record the backend a Predictor uses for this model when none is asked for (policylens.json `inference`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = Path(model_dir) / META_FILE
    obj = json.loads(path.read_text(encoding="utf-8"))
    obj["inference"] = {**(obj.get("inference") or {}), "backend": backend}
    write_json(path, obj)


def model_version(model_dir: str | Path, meta: TaggerMeta) -> str:
    """meta.version, or a hash of policylens.json for models saved without one."""
    if meta.version:
        return meta.version
    return "sha-" + hashlib.sha256((Path(model_dir) / META_FILE).read_bytes()).hexdigest()[:12]


def save_tagger(model, tokenizer, meta: TaggerMeta, output_dir: str | Path) -> Path:
    """Write the whole model directory beside `output_dir`, then swap it in."""
    tmp = temp_dir_beside(output_dir)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    meta.save(tmp)
    write_json(tmp / "metrics.json", meta.metrics)
    (tmp / "README.md").write_text(model_card(meta), encoding="utf-8")
    return publish_dir(tmp, output_dir)


def model_card(meta: TaggerMeta) -> str:
    cfg = meta.training.get("config", {})
    lines = [
        f"# policylens paragraph tagger {meta.version}",
        "",
        "Multi-label tagger for Chinese industrial-policy paragraphs (none allowed).",
        "",
        "## Labels",
        "",
        "| id | 中文 | English | threshold | temperature |",
        "|---|---|---|---|---|",
    ]
    for label, t, temp in zip(meta.taxonomy.labels, meta.thresholds, meta.temperature):
        lines.append(f"| `{label.id}` | {label.name_zh} | {label.name_en} | {t:.2f} | {temp:.2f} |")
    lines += [
        "",
        "## Training",
        "",
        f"- backbone: `{meta.training.get('backbone_dir')}`",
        f"- epochs {cfg.get('epochs')}, batch {cfg.get('batch_size')}, lr {cfg.get('learning_rate')}, "
        f"max_length {meta.max_length} (stride {meta.stride}, window logits pooled by {meta.pooling}), "
        f"frozen word embeddings: {cfg.get('freeze_embeddings')}",
        f"- data fingerprint `{meta.data.get('fingerprint', '')[:16]}`, sizes {meta.data.get('sizes')}",
        f"- training time {meta.training.get('seconds')} s, peak RSS {meta.training.get('peak_rss_mb')} MB",
        "",
        "## Scores",
        "",
    ]
    if meta.metrics:
        lines.append(markdown_table({split: report for split, report in meta.metrics.items()}, meta.taxonomy.ids))
    lines += [
        "",
        "Thresholds were tuned and temperatures fitted on the dev split; test scores use them unchanged.",
        "Load with `inference.predictor.Predictor(dir)` or any transformers sequence-classification API.",
        "",
    ]
    return "\n".join(lines)


def read_pointer(pointer: Path) -> Path:
    """The model dir named by a registry pointer file (a path; or JSON with a "path" key).

    A relative path is taken relative to the pointer's folder (like a symlink),
    else relative to the current directory when only that exists.
    """
    raw = pointer.read_text(encoding="utf-8").strip()
    if raw.startswith("{"):
        raw = str(json.loads(raw).get("path", "")).strip()
    if not raw:
        raise InputError(f"{pointer}: empty registry pointer (expected a model directory path)")
    path = Path(raw).expanduser()
    if path.is_absolute():
        return path
    beside = pointer.parent / path
    return beside if beside.exists() or not path.exists() else path.resolve()


def follow_pointer(path: str | Path) -> Path:
    """`path` itself, or the model dir a registry pointer file names (e.g. `models/registry/CURRENT`)."""
    path = Path(path)
    return read_pointer(path) if path.is_file() else path


def resolve_model_dir(model_dir: str | Path) -> Path:
    """The tagger dir (or the one a registry pointer names), or an InputError that says how to get one."""
    model_dir = follow_pointer(model_dir)
    if not (model_dir / META_FILE).exists():
        raise InputError(f"no tagger at {model_dir}: train one with `policylens train` or pass --model DIR")
    return model_dir
