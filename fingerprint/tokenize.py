"""The owner's tokenizer: many texts -> one flat token array plus offsets.

Wraps a Hugging Face ``tokenizers`` tokenizer (a ``tokenizer.json``). Batches are encoded
by the library's Rust code on all cores; the result is two numpy arrays, so nothing
downstream loops over tokens in Python.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

from .errors import InputError

__all__ = ["TokenizerWrapper", "load_tokenizer"]


class TokenizerWrapper:
    """A loaded tokenizer; ``vocab_size`` counts every id it can emit (added tokens too)."""

    def __init__(self, tokenizer: Tokenizer, *, source: str = "<tokenizer>") -> None:
        self._tok = tokenizer
        self.source = source

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def backend(self) -> Tokenizer:
        return self._tok

    def encode_batch(self, texts: Sequence[str], *, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Encode texts without special tokens.

        Returns
        -------
        tokens:
            ``(N,)`` int64, all texts' ids concatenated.
        offsets:
            ``(T + 1,)`` int64; text ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``.
        """
        parts: list[np.ndarray] = []
        lengths = np.zeros(len(texts), dtype=np.int64)
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start:start + batch_size])
            encodings = self._tok.encode_batch_fast(chunk, add_special_tokens=False) \
                if hasattr(self._tok, "encode_batch_fast") else \
                self._tok.encode_batch(chunk, add_special_tokens=False)
            for j, enc in enumerate(encodings):
                ids = np.asarray(enc.ids, dtype=np.int64)
                lengths[start + j] = ids.size
                parts.append(ids)
        tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        return tokens, offsets

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def decode_batch(self, rows: Sequence[Sequence[int]]) -> list[str]:
        return self._tok.decode_batch([[int(i) for i in r] for r in rows], skip_special_tokens=False)


def load_tokenizer(path: str | os.PathLike[str]) -> TokenizerWrapper:
    """Load a ``tokenizer.json``; :class:`InputError` naming the file if it does not load."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: tokenizer file not found")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        raise InputError(f"{path}: not a loadable tokenizer.json ({exc})") from None
    return TokenizerWrapper(tok, source=str(path))
