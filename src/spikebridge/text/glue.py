"""GLUE-style TSV tasks: SST-2, QNLI and QQP read from a directory holding ``train.tsv`` and
``dev.tsv`` (GLUE's layout: a header line, tab-separated fields, no quoting) and tokenised
with a Hugging Face ``transformers`` tokenizer, padded and truncated to ``max_len``.

GLUE's test labels are not public, so the "test" split is ``dev.tsv``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataError, check_int, first_line, require_transformers
from .dataset import TextDataset, TextInfo

DEFAULT_MAX_LEN = 128
FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "dev.tsv"}


@dataclass(frozen=True)
class Task:
    """The columns of one GLUE task: one or two text columns, a label column and its values."""

    text: tuple[str, ...]
    label: str
    labels: tuple[str, ...]  # the label of class i is labels[i]


TASKS = {
    "sst2": Task(("sentence",), "label", ("0", "1")),
    "qnli": Task(("question", "sentence"), "label", ("entailment", "not_entailment")),
    "qqp": Task(("question1", "question2"), "is_duplicate", ("0", "1")),
}


def task_of(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise DataError(f"unknown GLUE task {name!r}; known: {', '.join(TASKS)}") from None


def read_tsv(path, task: Task) -> tuple[list[tuple[str, ...]], list[int]]:
    """The text fields and class indices of every example of a GLUE TSV file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; a GLUE task directory holds train.tsv and dev.tsv")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    header = lines[0].split("\t") if lines else []
    missing = [c for c in (*task.text, task.label) if c not in header]
    if missing:
        raise DataError(f"{path} has no column {', '.join(map(repr, missing))}; its header is {header}")
    columns = [header.index(c) for c in task.text]
    label_column = header.index(task.label)
    texts, labels = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise DataError(f"{path} line {number}: {len(fields)} fields, its header has {len(header)}")
        if fields[label_column] not in task.labels:
            raise DataError(f"{path} line {number}: label {fields[label_column]!r} is not one of "
                            f"{', '.join(task.labels)}")
        texts.append(tuple(fields[c] for c in columns))
        labels.append(task.labels.index(fields[label_column]))
    if not labels:
        raise DataError(f"{path} holds no examples")
    return texts, labels


def tokenizer_from(tokenizer, root=None):
    """A tokenizer object as given; a path: a WordPiece ``vocab.txt`` (a lower-casing
    BertTokenizer, which is the fast one in transformers 5) or a directory saved by
    ``save_pretrained``; None: ``root``'s vocab.txt."""
    if tokenizer is None:
        if root is None or not (Path(root) / "vocab.txt").is_file():
            raise DataError(f"no tokenizer given and no vocab.txt in {root}; pass tokenizer= (a tokenizer, a "
                            "vocab.txt or a tokenizer directory)")
        tokenizer = Path(root) / "vocab.txt"
    if not isinstance(tokenizer, (str, Path)):
        return tokenizer
    path = Path(tokenizer).expanduser()
    transformers = require_transformers("a tokenizer read from a file")
    if path.is_file():
        return _wordpiece(transformers, path)
    if path.is_dir():
        try:
            return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot load a tokenizer from {path}: {first_line(exc)}") from None
    raise DataError(f"tokenizer {path} not found (give a vocab.txt, a tokenizer directory or a tokenizer object)")


def _wordpiece(transformers, path: Path):
    """BertTokenizer of a vocab.txt, checked to hold every line: transformers 5 takes the file
    as ``vocab`` and silently ignores ``vocab_file``, leaving only the special tokens."""
    tokenizer = transformers.BertTokenizer(vocab=str(path))
    lines = len(path.read_text(encoding="utf-8").splitlines())
    if len(tokenizer) < lines:
        raise DataError(f"the tokenizer read {len(tokenizer)} tokens of the {lines} lines of {path}")
    return tokenizer


def encode(tokenizer, texts: list[tuple[str, ...]], labels: list[int], num_classes: int,
           max_len: int) -> TextDataset:
    """Tokenise single texts or pairs to ``max_len`` tokens (padded, truncated) as a TextDataset."""
    columns = list(zip(*texts))
    encoded = tokenizer(*map(list, columns), padding="max_length", truncation=True, max_length=max_len,
                        return_tensors="pt")
    ids = encoded["input_ids"].long()
    mask = encoded.get("attention_mask", torch.ones_like(ids)).long()
    types = encoded.get("token_type_ids", torch.zeros_like(ids)).long()
    info = TextInfo(num_classes, len(tokenizer), max_len)
    return TextDataset(ids, mask, types, torch.tensor(labels, dtype=torch.long), info)


def load_glue(task: str, root, split: str = "train", tokenizer=None, max_len: int = DEFAULT_MAX_LEN) -> TextDataset:
    """GLUE task ``task`` ("sst2", "qnli", "qqp") from ``root``/train.tsv or dev.tsv ("dev" or
    "test"), tokenised with ``tokenizer`` (see ``tokenizer_from``) to ``max_len`` tokens."""
    spec = task_of(task)
    check_int(max_len, "max_len", 2)
    if split not in FILES:
        raise DataError(f"unknown split {split!r}; use 'train', 'dev' or 'test' (GLUE's dev.tsv)")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"GLUE directory {base} does not exist or is not a directory")
    texts, labels = read_tsv(base / FILES[split], spec)
    return encode(tokenizer_from(tokenizer, base), texts, labels, len(spec.labels), max_len)


def glue_info(task: str, root, tokenizer=None, max_len: int = DEFAULT_MAX_LEN) -> TextInfo:
    """The TextInfo of a GLUE task without reading its examples."""
    return TextInfo(len(task_of(task).labels), len(tokenizer_from(tokenizer, root)), max_len)
