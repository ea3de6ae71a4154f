"""Hidden states of the frozen lower layers, computed once instead of every epoch."""

from __future__ import annotations

import numpy as np

from policylens.encoders.windows import length_sorted_batches, pad_batch
from training.tagger.config import TaggerConfig


class LowerLayerCache:
    """Hidden states after the frozen lowest `k` layers, computed once per window.

    Only for BERT sequence-classification models (the default backbone); the
    upper layers, pooler and classifier then train on these cached states.
    """

    def __init__(self, model, k: int) -> None:
        self.model, self.k = model, k
        self.bert = model.bert

    @staticmethod
    def supports(model, config: TaggerConfig) -> bool:
        from transformers import BertForSequenceClassification

        return isinstance(model, BertForSequenceClassification) and config.freeze_embeddings and config.freeze_layers > 0

    def _mask(self, hidden, mask):
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.bert.config, inputs_embeds=hidden, attention_mask=mask)

    def encode(self, windows: list[list[int]], pad_id: int, batch_size: int = 64) -> list:
        import torch

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

    def encode_texts(
        self, texts: list[str], windows: list[list[int]], owners: np.ndarray, pad_id: int, bank: dict | None
    ) -> list:
        """States of `windows` (owned by `texts`), reusing and filling `bank` (text -> its windows' states).

        Cross-validation folds share one bank, so each paragraph's lower layers run once
        per experiment instead of once per fold.
        """
        if bank is None:
            return self.encode(windows, pad_id)
        first: dict[str, int] = {}  # a text missing from the bank -> the paragraph whose windows fill it
        for o in owners:
            text = texts[int(o)]
            if text not in bank and text not in first:
                first[text] = int(o)
        todo = [i for i, o in enumerate(owners) if first.get(texts[int(o)]) == int(o)]
        for i, state in zip(todo, self.encode([windows[i] for i in todo], pad_id) if todo else []):
            bank.setdefault(texts[int(owners[i])], []).append(state)
        states, position = [], {}
        for o in owners:  # a paragraph's windows are contiguous and in order
            k = position.get(int(o), 0)
            states.append(bank[texts[int(o)]][k])
            position[int(o)] = k + 1
        return states

    def last_hidden(self, states: list, batch: np.ndarray):
        """The last layer's hidden states of a batch of cached windows (padded), and their attention mask."""
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
        return hidden, mask

    def logits(self, states: list, batch: np.ndarray):
        """Classifier logits from cached states (with grad through the upper layers)."""
        hidden, _ = self.last_hidden(states, batch)
        return self.model.classifier(self.model.dropout(self.bert.pooler(hidden)))

    def window_logits(self, states: list, batch_size: int = 64) -> np.ndarray:
        import torch

        out = np.zeros((len(states), self.model.config.num_labels), dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            for batch in length_sorted_batches([s.shape[0] for s in states], batch_size):
                out[batch] = self.logits(states, batch).numpy()
        self.model.train(was_training)
        return out
