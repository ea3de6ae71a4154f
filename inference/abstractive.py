"""Optional abstractive mode: any local or hub seq2seq / causal LM writes the summary.

Map-reduce keeps every call inside the generator's input limit: the document
is cut at paragraph boundaries into chunks that fit, each chunk is summarised,
the partial summaries are joined (recursively if still too long) and
summarised once more. The extractive summary stays in Summary.sentences as the
evidence with source pointers, and is the fallback whenever no generator is
configured or it cannot be loaded; the reason goes into Summary.notes.
No quality is claimed for any particular model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from policylens.chinese import normalize
from policylens.document import Document

if TYPE_CHECKING:
    from inference.summarize import Summary

PROMPT = "请用简体中文概括下面这段政策文本的要点：\n{text}"
PLAIN_PROMPT = "文本：{text}\n摘要："


class GeneratorUnavailable(RuntimeError):
    """The generator could not be loaded or run; the message says why."""


@dataclass
class GeneratorConfig:
    """Decoding and chunking settings."""

    max_input_tokens: int = 512  # per call; capped by the model's own limit
    max_new_tokens: int = 160
    num_beams: int = 1
    max_rounds: int = 3  # reduce rounds before giving up on shrinking further

    def __post_init__(self) -> None:
        if self.max_input_tokens < 16 or self.max_new_tokens < 1 or self.num_beams < 1 or self.max_rounds < 1:
            raise ValueError("max_input_tokens >= 16, max_new_tokens, num_beams, max_rounds >= 1")


class AbstractiveGenerator:
    """A loaded generator: AutoModelForSeq2SeqLM or AutoModelForCausalLM (chat template when it has one)."""

    def __init__(self, model: Any, tokenizer: Any, name: str, config: GeneratorConfig | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.config = config or GeneratorConfig()
        self.seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
        budget = self.config.max_input_tokens
        if limit:  # a causal LM's window also holds the prompt and the answer
            budget = min(budget, int(limit) - (0 if self.seq2seq else self.config.max_new_tokens) - 16)
        self.input_budget = max(budget, 16)

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, config: GeneratorConfig | None = None) -> "AbstractiveGenerator":
        """Local dir or hub id (offline: only what is cached). Raises GeneratorUnavailable with the reason."""
        try:
            from transformers import (
                AutoConfig,
                AutoModelForCausalLM,
                AutoModelForSeq2SeqLM,
                AutoTokenizer,
            )

            name = str(name_or_path)
            model_config = AutoConfig.from_pretrained(name)
            tokenizer = AutoTokenizer.from_pretrained(name)
            auto = AutoModelForSeq2SeqLM if getattr(model_config, "is_encoder_decoder", False) else AutoModelForCausalLM
            model = auto.from_pretrained(name)
            model.eval()
        except Exception as err:
            raise GeneratorUnavailable(f"cannot load generator {str(name_or_path)!r}: {type(err).__name__}: "
                                       f"{str(err).splitlines()[0] if str(err) else ''}") from None
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return cls(model, tokenizer, name, config)

    # -- one call ----------------------------------------------------------

    def _prompt_ids(self, text: str) -> list[int]:
        tok = self.tokenizer
        if self.seq2seq:
            return tok(text, truncation=True, max_length=self.input_budget)["input_ids"]
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template([{"role": "user", "content": PROMPT.format(text=text)}],
                                          add_generation_prompt=True, tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        else:
            ids = tok(PLAIN_PROMPT.format(text=text))["input_ids"]
        return list(ids)[-self.input_budget :]

    def generate(self, text: str) -> str:
        """Summary of one chunk that fits the input budget."""
        import torch

        ids = self._prompt_ids(text)
        input_ids = torch.tensor([ids])
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                max_new_tokens=self.config.max_new_tokens, num_beams=self.config.num_beams, do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = out[0] if self.seq2seq else out[0][len(ids) :]
        return normalize(self.tokenizer.decode(new, skip_special_tokens=True))

    # -- map-reduce --------------------------------------------------------

    def n_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chunks(self, pieces: Sequence[str]) -> list[str]:
        """Greedy packing of paragraphs into chunks under the input budget (a long paragraph is cut)."""
        out: list[str] = []
        current, size = [], 0
        for piece in pieces:
            n = self.n_tokens(piece)
            while n > self.input_budget:  # rare: one paragraph longer than the window
                cut = max(1, int(len(piece) * self.input_budget / n * 0.9))
                out.append(piece[:cut])
                piece = piece[cut:]
                n = self.n_tokens(piece)
            if current and size + n > self.input_budget:
                out.append("\n".join(current))
                current, size = [], 0
            current.append(piece)
            size += n
        if current:
            out.append("\n".join(current))
        return out

    def summarize_texts(self, pieces: Sequence[str]) -> str:
        """Map each chunk to a partial summary, reduce until one call fits, summarise once more."""
        pieces = [p for p in pieces if p.strip()]
        if not pieces:
            return ""
        for _ in range(self.config.max_rounds):
            chunks = self.chunks(pieces)
            if len(chunks) == 1:
                return self.generate(chunks[0])
            pieces = [p for p in (self.generate(c) for c in chunks) if p.strip()] or pieces[:1]
        return self.generate(self.chunks(pieces)[0])


def add_abstract(document: Document, summary: "Summary", generator: "AbstractiveGenerator | str | os.PathLike") -> None:
    """Fill summary.abstract from the generator (map-reduce over the document's body
    paragraphs, or over the domain's sentences for a domain summary); on any failure
    leave the extractive summary in place and say why in summary.notes."""
    try:
        if not isinstance(generator, AbstractiveGenerator):
            generator = AbstractiveGenerator.load(generator)
        if summary.domain is not None:
            pieces = [s.text for s in summary.sentences]
        else:
            pieces = [p.text for p in document.paragraphs if p.kind in ("body", "heading")]
        if not pieces:
            return
        summary.abstract = generator.summarize_texts(pieces) or None
        summary.generator = generator.name
        if summary.abstract is None:
            summary.notes.append(f"generator {generator.name!r} returned nothing; showing the extractive summary")
    except GeneratorUnavailable as err:
        summary.notes.append(f"{err}; showing the extractive summary")
    except Exception as err:  # a generator failing mid-run must not lose the extractive result
        summary.notes.append(f"generation failed ({type(err).__name__}: {err}); showing the extractive summary")
