"""A tokenised text classification dataset held in memory as tensors."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class TextInfo:
    """What a model needs to know of a text task: classes, vocabulary size, sequence length."""

    num_classes: int
    vocab_size: int
    max_len: int


class TextDataset(Dataset):
    """Token ids [N, S], attention mask [N, S], token types [N, S] and labels [N] (int64).

    An item is (input_ids, label): spikebridge's text models take the token ids alone
    (docs/text.md). ``tensors()`` gives all four, named as Hugging Face models take them.
    """

    def __init__(self, input_ids, attention_mask, token_type_ids, labels, info: TextInfo):
        self.input_ids = input_ids
        self.attention_mask = attention_mask
        self.token_type_ids = token_type_ids
        self.labels = labels
        self.info = info

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.input_ids[index], int(self.labels[index])

    def batch(self, indices: torch.Tensor, generator=None):
        """Token ids [B, S] and labels [B] of ``indices`` (``make_loader`` fetches batches so)."""
        return self.input_ids.index_select(0, indices), self.labels.index_select(0, indices)

    def tensors(self) -> dict[str, torch.Tensor]:
        """{"input_ids", "attention_mask", "token_type_ids", "labels"}."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "token_type_ids": self.token_type_ids, "labels": self.labels}
