"""The summariser's model directory: a small scorer's weights plus summarizer.json.

The scorer is a BertSum-style inter-sentence transformer over frozen e5 sentence
embeddings and hand features; training and serving both build it from here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policylens.io import InputError, publish_dir, temp_dir_beside, write_json
from policylens.paths import SUMMARIZER_DIR
from policylens.summarizer.features import FEATURE_NAMES

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "summarizer.json"

@dataclass
class ScorerConfig:
    """Shape of the inter-sentence transformer; stored with the weights."""

    embedding_dim: int = 384
    n_features: int = len(FEATURE_NAMES)
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    max_sentences: int = 64  # context window; longer inputs are scored in windows

    def __post_init__(self) -> None:
        if self.embedding_dim < 1 or self.n_features < 0:
            raise ValueError("embedding_dim must be >= 1 and n_features >= 0")
        if self.d_model < 8 or self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be >= 8 and divisible by heads ({self.heads})")
        if not 0 <= self.layers <= 6 or not 0 <= self.dropout < 1 or self.max_sentences < 2:
            raise ValueError("layers in 0..6, dropout in [0,1), max_sentences >= 2")


def build_scorer(config: ScorerConfig):
    """BertSum-style: project [embedding, features], a few transformer layers across sentences, a logit each."""
    import torch
    from torch import nn

    class SentenceScorer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Sequential(
                nn.Linear(config.embedding_dim + config.n_features, config.d_model), nn.GELU(),
                nn.Dropout(config.dropout), nn.LayerNorm(config.d_model),
            )
            self.encoder = None
            if config.layers:
                layer = nn.TransformerEncoderLayer(config.d_model, config.heads, 2 * config.d_model,
                                                   config.dropout, batch_first=True, norm_first=True)
                self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
            self.head = nn.Linear(config.d_model, 1)

        def forward(self, embeddings: torch.Tensor, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            """embeddings [B,S,E], features [B,S,F], mask [B,S] (True = real sentence) -> logits [B,S]."""
            x = self.proj(torch.cat([embeddings, features], dim=-1))
            if self.encoder is not None:
                x = self.encoder(x, src_key_padding_mask=~mask)
            return self.head(x).squeeze(-1)

    return SentenceScorer()


class SummarizerModel:
    """A trained scorer plus its config; scores the sentences of one document.

    meta (summarizer.json) also carries what serving needs besides the weights:
    `encoder` (which sentence encoder the scorer was trained on, with its fingerprint),
    `short_text_chars` (below it the lead is returned), `domain_heads` (per-domain summaries)."""

    def __init__(self, config: ScorerConfig, module: Any = None, meta: dict[str, Any] | None = None) -> None:
        self.config = config
        self.module = module if module is not None else build_scorer(config)
        self.module.eval()
        self.meta = meta or {}

    @property
    def short_text_chars(self) -> int:
        """Body length (characters) below which the lead is returned (0: never)."""
        return int(self.meta.get("short_text", {}).get("chars", 0) or 0)

    @property
    def encoder_fingerprint(self) -> str | None:
        return (self.meta.get("encoder") or {}).get("fingerprint")

    def domain_heads(self) -> Any:
        """The trained per-domain heads (policylens.summarizer.domains.DomainHeads), or None."""
        from policylens.summarizer.domains import DomainHeads

        heads = self.meta.get("domain_heads")
        return DomainHeads.from_dict(heads) if heads else None

    def scores(self, embeddings: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Sigmoid relevance per sentence; inputs beyond the context window are scored in windows."""
        import torch

        n, window = len(embeddings), self.config.max_sentences
        out = np.zeros(n, dtype=np.float32)
        if n == 0:
            return out
        self.module.eval()
        with torch.inference_mode():
            for k in range(0, n, window):
                emb = torch.from_numpy(np.ascontiguousarray(embeddings[k : k + window], dtype=np.float32))[None]
                feat = torch.from_numpy(np.ascontiguousarray(features[k : k + window], dtype=np.float32))[None]
                mask = torch.ones(emb.shape[:2], dtype=torch.bool)
                out[k : k + window] = torch.sigmoid(self.module(emb, feat, mask))[0].numpy()
        return out

    def save(self, model_dir: str | Path) -> Path:
        """Write weights and config beside `model_dir`, then swap the directory in."""
        from safetensors.torch import save_file

        tmp = temp_dir_beside(model_dir)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        write_json(tmp / CONFIG_FILE, {"scorer": asdict(self.config), "features": list(FEATURE_NAMES), **self.meta})
        return publish_dir(tmp, model_dir)

    @classmethod
    def load(cls, model_dir: str | Path) -> "SummarizerModel":
        from safetensors.torch import load_file

        model_dir = Path(model_dir)
        if not (model_dir / WEIGHTS_FILE).exists() or not (model_dir / CONFIG_FILE).exists():
            raise InputError(f"{model_dir}: not a summarizer model dir (needs {WEIGHTS_FILE} and {CONFIG_FILE})")
        meta = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        if list(meta.get("features", [])) != list(FEATURE_NAMES):
            raise InputError(f"{model_dir}: trained with other features ({meta.get('features')}); retrain it")
        config = ScorerConfig(**meta.pop("scorer"))
        model = cls(config, meta=meta)
        model.module.load_state_dict(load_file(str(model_dir / WEIGHTS_FILE)))
        model.module.eval()
        return model


def exists(model_dir: str | Path | None = None) -> bool:
    model_dir = Path(model_dir or SUMMARIZER_DIR)
    return (model_dir / WEIGHTS_FILE).exists() and (model_dir / CONFIG_FILE).exists()
