"""The self-describing tagger directory: what sits next to the weights.

A tagger directory holds a standard transformers sequence-classification
checkpoint (safetensors + config + tokenizer) and `policylens.json`, which
carries everything else a predictor needs: taxonomy, calibrated thresholds,
windowing settings, and where the model came from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from policylens.io import InputError, write_json
from policylens.taxonomy import Taxonomy

META_FILE = "policylens.json"


@dataclass
class TaggerMeta:
    taxonomy: Taxonomy
    thresholds: list[float]  # per label, applied to calibrated probabilities
    temperature: list[float]  # per label, logits are divided by it before the sigmoid
    max_length: int = 256
    stride: int = 64
    prefix: str = "passage: "  # e5 was trained with this prefix on passages
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
