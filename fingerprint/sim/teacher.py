"""The embedded default teacher: a BPE tokenizer and an n-gram model on a real corpus, cached."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..tokenize import TokenizerWrapper
from .bpe import train_bpe_tokenizer
from .english import cache_dir, corpus_digest, load_corpus
from .ngram import NgramLM

__all__ = ["Teacher", "build_teacher"]


@dataclass
class Teacher:
    """A tokenizer, a language model over its ids, and the tokenized corpus it was fit on.

    ``tokens`` ``(N,)`` and ``offsets`` ``(T + 1,)`` hold the corpus paragraphs' token ids.
    """

    paragraphs: list[str]
    tokenizer: TokenizerWrapper
    model: NgramLM
    tokens: np.ndarray
    offsets: np.ndarray

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size


def build_teacher(corpus_paths: Sequence[str | os.PathLike[str]] | None = None, *,
                  vocab_size: int = 8192, order: int = 3) -> Teacher:
    """Build (or reuse from :func:`cache_dir`) the teacher for a corpus."""
    paragraphs = load_corpus(corpus_paths)
    tokenizer = train_bpe_tokenizer(paragraphs, vocab_size=vocab_size)
    tokens, offsets = tokenizer.encode_batch(paragraphs)
    path = cache_dir() / f"ngram-{corpus_digest(paragraphs)}-{vocab_size}-{order}.npz"
    if path.is_file():
        model = NgramLM.load(path)
    else:
        model = NgramLM.fit(tokens, offsets, vocab_size=tokenizer.vocab_size, order=order)
        model.save(path)
    return Teacher(paragraphs, tokenizer, model, tokens, offsets)
