"""The owner's tokenizer: many texts -> one flat token array plus offsets.

Two kinds are supported:

* a Hugging Face ``tokenizers`` tokenizer (``tokenizer.json``), the core dependency;
* a tiktoken rank file (lines of ``<base64 token> <rank>``, as OpenAI and Qwen ship), through
  the optional extra ``fingerprint[tiktoken]``, with a split pattern (Qwen's by default).

Batches are encoded by the libraries' native code on all cores; the result is two numpy
arrays, so nothing downstream loops over tokens in Python.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

from .errors import InputError

__all__ = ["TokenizerWrapper", "TiktokenTokenizer", "load_tokenizer", "token_bytes_table", "QWEN_PATTERN"]

#: The pre-tokenization pattern of Qwen's tiktoken tokenizers (the default for rank files).
QWEN_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")


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
        rows: list[list[int]] = []
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        for start in range(0, len(texts), batch_size):
            rows.extend(enc.ids for enc in encode(list(texts[start:start + batch_size]),
                                                  add_special_tokens=False))
        return _flatten(rows)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def decode_batch(self, rows: Sequence[Sequence[int]]) -> list[str]:
        return self._tok.decode_batch([[int(i) for i in r] for r in rows], skip_special_tokens=False)


def _flatten(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    if not rows:
        return np.zeros(0, dtype=np.int64), offsets
    return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(offsets[-1])), offsets


class TiktokenTokenizer:
    """A tiktoken BPE from a rank file; same interface as :class:`TokenizerWrapper`."""

    def __init__(self, path: str | os.PathLike[str], *, pattern: str = QWEN_PATTERN) -> None:
        try:
            import tiktoken
        except ImportError:
            raise InputError(f"{path}: reading tiktoken rank files needs the optional extra: "
                             f"pip install 'fingerprint[tiktoken]'") from None
        ranks: dict[bytes, int] = {}
        try:
            with open(path, "rb") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    token, rank = line.split()
                    ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise InputError(f"{path} line {lineno}: not a tiktoken rank line "
                             f"('<base64 token> <rank>')") from None
        except OSError as exc:
            raise InputError(f"{path}: cannot read tokenizer: {exc.strerror}") from None
        if not ranks:
            raise InputError(f"{path}: tiktoken rank file is empty")
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:  # byte-level BPE needs every single byte as a token, or encoding some texts fails
            raise InputError(f"{path}: not a complete tiktoken rank file: {len(missing)} of the 256 single-byte base "
                             f"tokens are missing (first: byte 0x{missing[0]:02x})")
        self._enc = tiktoken.Encoding(name=Path(path).stem, pat_str=pattern, mergeable_ranks=ranks,
                                      special_tokens={})
        self._vocab_size = max(ranks.values()) + 1
        self.source = str(path)
        #: The pre-tokenization regex (what a worker needs to load the same tokenizer again).
        self.pattern = pattern

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode_batch(self, texts: Sequence[str], *, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        rows: list[list[int]] = []
        threads = os.cpu_count() or 1
        for start in range(0, len(texts), batch_size):
            rows.extend(self._enc.encode_ordinary_batch(list(texts[start:start + batch_size]),
                                                        num_threads=threads))
        return _flatten(rows)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._enc.decode([int(i) for i in ids])

    def decode_batch(self, rows: Sequence[Sequence[int]]) -> list[str]:
        return [self.decode(r) for r in rows]


Tokenizer_ = TokenizerWrapper | TiktokenTokenizer


def _byte_level_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: byte-level BPE symbol -> byte value."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
          + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_bytes_table(tokenizer: Tokenizer_) -> list[bytes]:
    """The bytes of every token id (byte-level BPE symbols decoded; tiktoken ranks as they are)."""
    enc = getattr(tokenizer, "_enc", None)
    if enc is not None:
        return [enc.decode_single_token_bytes(i) for i in range(tokenizer.vocab_size)]
    assert isinstance(tokenizer, TokenizerWrapper)
    backend = tokenizer.backend
    dec = _byte_level_decoder()
    out = []
    for i in range(tokenizer.vocab_size):
        piece = backend.id_to_token(i)
        if piece is not None and all(ch in dec for ch in piece):
            out.append(bytes(dec[ch] for ch in piece))
        else:
            out.append(tokenizer.decode([i]).encode("utf-8"))
    return out


def load_tokenizer(path: str | os.PathLike[str], *, tiktoken_pattern: str | None = None) -> Tokenizer_:
    """Load a ``tokenizer.json`` or a tiktoken rank file.

    Raises :class:`InputError` naming the file if it does not load.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: tokenizer file not found")
    with open(path, "rb") as fh:
        head = fh.read(256).lstrip()
    if not head.startswith(b"{"):
        return TiktokenTokenizer(path, pattern=tiktoken_pattern or QWEN_PATTERN)
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        raise InputError(f"{path}: not a loadable tokenizer.json ({exc})") from None
    return TokenizerWrapper(tok, source=str(path))
