"""Keyed pseudo-random function over (context window, token) tuples.

Construction
------------
Each tuple ``(w_1, ..., w_h, t)`` of token ids is laid out as little-endian uint32 words
``[tag | h, w_1, ..., w_h, t]``, zero-padded to a multiple of four words (16-byte AES
blocks), and run through AES-256 CBC-MAC with a zero IV. All messages for one context
width have the same length and the width is in the first word, so this is a secure PRF
(CBC-MAC is a PRF on fixed-length messages). The output is the low 64 bits of the final
cipher block, read as a little-endian uint64.

The AES key is derived from the 256-bit secret with keyed BLAKE2b and a per-purpose
personalisation string, so the same secret never feeds two constructions.

Seeing any number of outputs (green lists, scores) reveals nothing about the AES key
beyond what AES itself leaks, i.e. nothing usable.

Every block of every tuple goes through OpenSSL's AES in a single ECB call per block
column, so the work is array code: about 20M tuples per second per core with AES-NI.
The result is bit-identical on every platform and numpy version (fixed test vectors in
``tests/test_prf.py``).
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import ParameterError, TokenError

__all__ = ["KeyedPRF", "encode_tuples", "to_unit_interval", "MAX_CONTEXT_WIDTH", "TOKEN_LIMIT"]

#: Tuples carry at most this many context tokens.
MAX_CONTEXT_WIDTH = 64
#: Token ids must be below this (they are stored as uint32).
TOKEN_LIMIT = 2**32
_TAG = 0x46500000  # "FP" in the top bytes of the header word; h in the low bytes

_AES_KEY_PERSON = b"fingerprint.prf1"


def _derive_aes_key(secret: bytes) -> bytes:
    return hashlib.blake2b(b"aes-256 tuple prf", key=secret, digest_size=32,
                           person=_AES_KEY_PERSON).digest()


class KeyedPRF:
    """AES-256 CBC-MAC over ``(window, token)`` tuples, vectorized.

    Parameters
    ----------
    secret:
        At least 16 bytes of secret key material (a :class:`~fingerprint.keys.FingerprintKey`
        holds 32).
    """

    __slots__ = ("_aes_key", "_cipher")

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, (bytes, bytearray)) or len(secret) < 16:
            raise ParameterError("PRF secret must be at least 16 bytes")
        self._aes_key = _derive_aes_key(bytes(secret))
        # a factory: each call takes its own encryptor context (safe across threads)
        self._cipher = Cipher(algorithms.AES(self._aes_key), modes.ECB())

    def __repr__(self) -> str:
        return "KeyedPRF(<secret hidden>)"

    def tuple_values(self, windows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Pseudo-random 64-bit values of tuples.

        Parameters
        ----------
        windows:
            Shape ``(n, h)``, integer token ids of each tuple's context window, oldest first;
            ``h`` may be 0.
        tokens:
            Shape ``(n,)``, integer token id following each window.

        Returns
        -------
        numpy.ndarray
            Shape ``(n,)``, dtype uint64: independent uniform 64-bit values, one per tuple.
        """
        return self.values_of_blocks(encode_tuples(windows, tokens))

    def values_of_blocks(self, blocks: np.ndarray) -> np.ndarray:
        """PRF values ``(n,)`` uint64 of tuples already laid out by :func:`encode_tuples`.

        Encoding once and keying many times is how decoy keys share the work.
        """
        return self._cbc_mac(blocks)

    def row_values(self, windows: np.ndarray, vocab_size: int) -> np.ndarray:
        """Values of every token of the vocabulary after each window (the embed side).

        Parameters
        ----------
        windows:
            Shape ``(b, h)``, integer token ids of each row's context window.
        vocab_size:
            Number of token ids ``V``; tokens ``0 .. V-1`` are evaluated.

        Returns
        -------
        numpy.ndarray
            Shape ``(b, V)``, dtype uint64; equals ``tuple_values`` of each (window, token).
        """
        windows = np.asarray(windows)
        b, h = windows.shape
        template = _row_template(h, vocab_size)
        words = np.empty((b, vocab_size, template.shape[1]), dtype="<u4")
        words[:] = template  # header and token words; only the window words differ per row
        if h:
            words[:, :, 1:h + 1] = windows[:, None, :]
        return self.values_of_blocks(words.reshape(b * vocab_size, -1, 4)).reshape(b, vocab_size)

    def _cbc_mac(self, blocks: np.ndarray) -> np.ndarray:
        """CBC-MAC of ``blocks`` (shape ``(n, k, 4)`` uint32) -> low 64 bits, shape ``(n,)``."""
        n, k, _ = blocks.shape
        if n == 0:
            return np.zeros(0, dtype=np.uint64)
        encryptor = self._cipher.encryptor()
        # update_into needs room for one extra block; buffers are passed without copies
        out = np.empty(n * 4 + 4, dtype="<u4")
        state = out[:n * 4].reshape(n, 4)
        for j in range(k):
            if j:
                chained = np.bitwise_xor(state, blocks[:, j, :])
            else:
                chained = np.ascontiguousarray(blocks[:, 0, :])
            encryptor.update_into(memoryview(chained).cast("B"),
                                  memoryview(out).cast("B"))  # type: ignore[arg-type]
        encryptor.finalize()
        return state.view("<u8")[:, 0].astype(np.uint64, copy=False)  # a strided view: no copy on little-endian machines


@functools.lru_cache(maxsize=16)
def _row_template(h: int, vocab_size: int) -> np.ndarray:
    """Words ``(V, 4k)`` of the tuples ``(window, t)`` for every token t, the window words zero:
    what :meth:`KeyedPRF.row_values` copies per row before writing the window in. Read-only."""
    n_blocks = -(-(h + 2) // 4)
    words = np.zeros((vocab_size, n_blocks * 4), dtype="<u4")
    words[:, 0] = _TAG | h
    words[:, h + 1] = np.arange(vocab_size, dtype=np.uint32)
    words.flags.writeable = False
    return words


def encode_tuples(windows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Lay out tuples as AES blocks: windows ``(n, h)`` and tokens ``(n,)`` ->
    ``(n, k, 4)`` little-endian uint32 with ``k = ceil((h + 2) / 4)``. Key-independent."""
    windows = np.asarray(windows)
    tokens = np.asarray(tokens)
    if windows.ndim != 2 or tokens.ndim != 1 or windows.shape[0] != tokens.shape[0]:
        raise TokenError(
            f"windows must have shape (n, h) and tokens shape (n,); got {windows.shape} "
            f"and {tokens.shape}")
    h = windows.shape[1]
    if h > MAX_CONTEXT_WIDTH:
        raise ParameterError(f"context width h={h} exceeds the maximum {MAX_CONTEXT_WIDTH}")
    n = tokens.shape[0]
    n_blocks = -(-(h + 2) // 4)
    words = np.zeros((n, n_blocks * 4), dtype="<u4")
    words[:, 0] = _TAG | h
    if h:
        words[:, 1:h + 1] = windows
    words[:, h + 1] = tokens
    return words.reshape(n, n_blocks, 4)


def to_unit_interval(values: np.ndarray) -> np.ndarray:
    """Map uint64 PRF values to floats uniform on the open interval (0, 1).

    Uses the top 52 bits: ``((v >> 12) + 0.5) / 2**52``, exactly representable, so 0 and 1
    are never produced (53 bits would round the largest value to 1.0). Shape is preserved;
    dtype float64.
    """
    top = (np.asarray(values, dtype=np.uint64) >> np.uint64(12)).astype(np.float64)
    return (top + 0.5) * (2.0 ** -52)
