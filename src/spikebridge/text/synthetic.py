"""A synthetic sentiment task, made offline from a small grammar (no real text is involved).

A sentence is one clause or two joined by a connective; a clause is

    <subject> is [not | never] [very | really | quite | so | truly] <adjective>

and its sentiment is the adjective's polarity, flipped by a negation. The sentence's label is
the sentiment of its main clause: the only clause, the one *after* "but", or the one *before*
"although" ("the plot is dull although the music is great" is negative). The same words occur
in both clauses, so a bag of words is at chance on two-clause sentences: a model must read the
order of the words, which is what attention is for. Its vocabulary is its own (every word is
one token, ids as a BERT WordPiece vocabulary with the special tokens first), and everything is
deterministic from a seed. Test sentences never occur in the training split.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError, check_int
from .dataset import TextDataset, TextInfo

NAME = "synthetic-sentiment"
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SUBJECTS = ("the movie", "the film", "the plot", "the acting", "the story", "the music", "the ending", "the cast",
            "the script", "the show")
NEGATIONS = ("not", "never")
INTENSIFIERS = ("very", "really", "quite", "so", "truly")
POSITIVE = ("good", "great", "fun", "brilliant", "charming", "clever", "lovely", "moving", "funny", "superb")
NEGATIVE = ("bad", "dull", "boring", "awful", "weak", "clumsy", "tedious", "bland", "silly", "poor")
CONNECTIVES = ("but", "although")
MAX_LEN = 16  # [CLS] + two clauses of at most 6 words + a connective + [SEP] = 15 tokens
SIZES = {"train": 10000, "test": 2000}
VOCAB = SPECIALS + tuple(sorted({w for phrase in SUBJECTS for w in phrase.split()}
                                | {"is", *NEGATIONS, *INTENSIFIERS, *POSITIVE, *NEGATIVE, *CONNECTIVES}))
INFO = TextInfo(num_classes=2, vocab_size=len(VOCAB), max_len=MAX_LEN)


def clause(rng: np.random.Generator) -> tuple[list[str], int]:
    """A random clause and its sentiment (1 positive, 0 negative)."""
    positive = bool(rng.integers(2))
    negated = bool(rng.integers(2))
    words = SUBJECTS[rng.integers(len(SUBJECTS))].split() + ["is"]
    if negated:
        words.append(NEGATIONS[rng.integers(len(NEGATIONS))])
    if rng.integers(2):
        words.append(INTENSIFIERS[rng.integers(len(INTENSIFIERS))])
    words.append((POSITIVE if positive else NEGATIVE)[rng.integers(len(POSITIVE))])
    return words, int(positive != negated)


def sentence(rng: np.random.Generator) -> tuple[str, int]:
    """A random sentence and its label: one clause, "A but B" (B's sentiment) or "A although B"
    (A's sentiment), each a third of the time."""
    (first, a), form = clause(rng), int(rng.integers(3))
    if form == 0:
        return " ".join(first), a
    second, b = clause(rng)
    return " ".join(first + [CONNECTIVES[form - 1]] + second), b if form == 1 else a


def sentences(split: str, seed: int = 0) -> tuple[list[str], list[int]]:
    """The split's sentences and labels: SIZES[split] of them, drawn from a generator seeded by
    (seed, split); test sentences that occur in the training split are drawn again."""
    if split not in SIZES:
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    check_int(seed, "seed", 0)
    rng = np.random.default_rng([seed, list(SIZES).index(split)])
    seen = set(sentences("train", seed)[0]) if split == "test" else set()
    texts, labels = [], []
    while len(texts) < SIZES[split]:
        text, label = sentence(rng)
        if text not in seen:
            texts.append(text)
            labels.append(label)
    return texts, labels


def encode(texts: list[str]) -> torch.Tensor:
    """Token ids [N, MAX_LEN]: [CLS] words [SEP], padded with [PAD] (id 0)."""
    index = {w: i for i, w in enumerate(VOCAB)}
    ids = torch.zeros(len(texts), MAX_LEN, dtype=torch.long)
    for row, text in enumerate(texts):
        tokens = [index["[CLS]"]] + [index[w] for w in text.split()] + [index["[SEP]"]]
        ids[row, :len(tokens)] = torch.tensor(tokens)
    return ids


def synthetic_sentiment(split: str = "train", seed: int = 0) -> TextDataset:
    """The synthetic sentiment task's ``split`` ("train": 10000 sentences, "test": 2000)."""
    texts, labels = sentences(split, seed)
    ids = encode(texts)
    return TextDataset(ids, (ids != 0).long(), torch.zeros_like(ids), torch.tensor(labels), INFO)
