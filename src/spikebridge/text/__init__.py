"""Text classification data: GLUE-style TSV tasks (SST-2, QNLI, QQP; ``glue``) and an offline
synthetic sentiment task (``synthetic``), as in-memory ``TextDataset``s (docs/text.md).

    get_text_dataset(name, split, root)   a named task's split, as the training pipeline reads it
    text_info(name, root)                 its classes, vocabulary size and sequence length
"""
from __future__ import annotations

from ..errors import DataError
from . import glue, synthetic
from .dataset import TextDataset, TextInfo
from .glue import load_glue
from .synthetic import synthetic_sentiment

TEXT_DATASETS = (synthetic.NAME, *glue.TASKS)


def _glue_root(name: str, root):
    if root is None:
        raise DataError(f"{name} needs --data-root DIR holding GLUE's train.tsv and dev.tsv and the tokenizer's "
                        "vocab.txt (GLUE is not downloaded)")
    return root


def get_text_dataset(name: str, split: str, root=None) -> TextDataset:
    """Split "train" or "test" of a task of TEXT_DATASETS; a GLUE task reads ``root`` (its TSV
    files and vocab.txt, at glue.DEFAULT_MAX_LEN tokens)."""
    if name == synthetic.NAME:
        return synthetic_sentiment(split)
    return load_glue(name, _glue_root(name, root), split)


def text_info(name: str, root=None) -> TextInfo:
    """The TextInfo of a task of TEXT_DATASETS."""
    if name == synthetic.NAME:
        return synthetic.INFO
    return glue.glue_info(name, _glue_root(name, root))


__all__ = ["TEXT_DATASETS", "TextDataset", "TextInfo", "get_text_dataset", "load_glue", "synthetic_sentiment",
           "text_info"]
