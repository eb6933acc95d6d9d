"""Train (or reuse from the cache) a byte-level BPE tokenizer on a corpus."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..tokenize import TokenizerWrapper, load_tokenizer
from .english import cache_dir, corpus_digest

__all__ = ["train_bpe_tokenizer"]


def train_bpe_tokenizer(paragraphs: Sequence[str], *, vocab_size: int = 8192,
                        cache: bool = True) -> TokenizerWrapper:
    """A byte-level BPE tokenizer with ``vocab_size`` ids trained on ``paragraphs``.

    Cached as ``tokenizer-<corpus digest>-<vocab>.json`` under :func:`cache_dir`.
    """
    path = cache_dir() / f"tokenizer-{corpus_digest(paragraphs)}-{vocab_size}.json"
    if cache and path.is_file():
        loaded = load_tokenizer(path)
        assert isinstance(loaded, TokenizerWrapper)
        return loaded
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(paragraphs, trainer=trainer)
    if cache:
        tmp = Path(f"{path}.{os.getpid()}.tmp")
        tok.save(str(tmp))
        os.replace(tmp, path)
    return TokenizerWrapper(tok, source=str(path))
