"""A smoothed n-gram language model over token ids, vectorized over a batch of contexts.

Interpolated absolute discounting with a Kneser-Ney continuation unigram:

    p_1(v)        = (N1+(., v) + 1) / (sum_u N1+(., u) + V)
    p_k(v | ctx)  = max(c(ctx, v) - D, 0) / c(ctx) + D * N1+(ctx, .) / c(ctx) * p_{k-1}(v | ctx')

where ``ctx'`` drops the oldest token and unseen contexts fall back to the lower order.
Trained from flat token arrays in seconds; ``next_logprobs`` gives full ``(b, V)``
distributions for ``b`` contexts at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ParameterError
from ..windows import check_tokens, row_ids

__all__ = ["NgramLM"]

def _context_keys(columns: np.ndarray) -> np.ndarray:
    """Hash rows of context token columns ``(n, c)`` (oldest first) to uint64 ``(n,)``."""
    return row_ids(columns)


@dataclass
class _Level:
    keys: np.ndarray      # (m,) uint64 sorted distinct context keys
    starts: np.ndarray    # (m,) int64 into next_ids / counts
    lengths: np.ndarray   # (m,) int64
    totals: np.ndarray    # (m,) float64 c(ctx)
    next_ids: np.ndarray  # (E,) int64
    counts: np.ndarray    # (E,) float64


class NgramLM:
    """Interpolated absolute-discounting n-gram model (order 2-6) over ``vocab_size`` ids."""

    def __init__(self, order: int, vocab_size: int, discount: float, unigram: np.ndarray,
                 levels: list[_Level]) -> None:
        self.order = order
        self.vocab_size = vocab_size
        self.discount = discount
        self._log_unigram = np.log(unigram)
        self._unigram = unigram
        self._levels = levels

    @property
    def context_size(self) -> int:
        return self.order - 1

    @classmethod
    def fit(cls, tokens: np.ndarray, offsets: np.ndarray, *, vocab_size: int, order: int = 3,
            discount: float = 0.75) -> "NgramLM":
        """Count n-grams of the texts ``tokens`` ``(N,)`` / ``offsets`` ``(T + 1,)``."""
        if not 2 <= order <= 6:
            raise ParameterError(f"order must be in [2, 6], got {order}")
        if not 0 < discount < 1:
            raise ParameterError(f"discount must be in (0, 1), got {discount}")
        tokens, offsets = check_tokens(tokens, offsets, vocab_size)
        lengths = np.diff(offsets)
        text_of = np.repeat(np.arange(lengths.size), lengths)
        pos_in_text = np.arange(tokens.size) - offsets[text_of]
        levels = []
        for c in range(1, order):
            pos = np.flatnonzero(pos_in_text >= c)
            cols = tokens[pos[:, None] + np.arange(-c, 0)]
            keys = _context_keys(cols)
            nxt = tokens[pos]
            order_idx = np.lexsort((nxt, keys))
            k_s, n_s = keys[order_idx], nxt[order_idx]
            new_pair = np.concatenate(([True], (k_s[1:] != k_s[:-1]) | (n_s[1:] != n_s[:-1])))
            pair_starts = np.flatnonzero(new_pair)
            pair_counts = np.diff(np.concatenate((pair_starts, [k_s.size]))).astype(np.float64)
            pair_keys, pair_next = k_s[pair_starts], n_s[pair_starts]
            new_ctx = np.concatenate(([True], pair_keys[1:] != pair_keys[:-1]))
            ctx_starts = np.flatnonzero(new_ctx)
            ctx_lengths = np.diff(np.concatenate((ctx_starts, [pair_keys.size])))
            totals = np.add.reduceat(pair_counts, ctx_starts) if ctx_starts.size else np.zeros(0)
            levels.append(_Level(pair_keys[ctx_starts], ctx_starts.astype(np.int64),
                                 ctx_lengths.astype(np.int64), totals, pair_next.astype(np.int64),
                                 pair_counts))
        continuation = np.bincount(levels[0].next_ids, minlength=vocab_size).astype(np.float64)
        unigram = (continuation + 1.0) / (continuation.sum() + vocab_size)
        return cls(order, vocab_size, discount, unigram, levels)

    def next_logprobs(self, contexts: np.ndarray) -> np.ndarray:
        """Next-token log-probabilities.

        Parameters
        ----------
        contexts:
            ``(b, order - 1)`` previous token ids, oldest first; ``-1`` where unknown
            (only the known suffix is used).

        Returns
        -------
        numpy.ndarray
            ``(b, V)`` float64 natural-log probabilities (every entry finite).
        """
        contexts = np.asarray(contexts, dtype=np.int64)
        b = contexts.shape[0]
        c_max = self.context_size
        if contexts.ndim != 2 or contexts.shape[1] != c_max:
            raise ParameterError(f"contexts must have shape (b, {c_max}), got {contexts.shape}")
        p = np.broadcast_to(self._unigram, (b, self.vocab_size)).copy()
        d = self.discount
        for c, level in enumerate(self._levels, start=1):
            cols = contexts[:, c_max - c:]
            known = (cols >= 0).all(axis=1)
            keys = _context_keys(np.maximum(cols, 0))
            idx = np.searchsorted(level.keys, keys)
            idx[idx >= level.keys.size] = 0
            found = known & (level.keys[idx] == keys) if level.keys.size else np.zeros(b, bool)
            rows = np.flatnonzero(found)
            if rows.size == 0:
                continue
            ctx = idx[rows]
            lens = level.lengths[ctx]
            totals = level.totals[ctx]
            # gather every (row, next token, count) of the found contexts without a Python loop
            flat_rows = np.repeat(rows, lens)
            within = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
            edge = np.repeat(level.starts[ctx], lens) + within
            lam = d * lens / totals
            p[rows] *= lam[:, None]
            p[flat_rows, level.next_ids[edge]] += (np.maximum(level.counts[edge] - d, 0.0)
                                                   / np.repeat(totals, lens))
        return np.log(p)

    # ---- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        arrays: dict[str, np.ndarray] = {"meta": np.array([self.order, self.vocab_size]),
                                         "discount": np.array([self.discount]),
                                         "unigram": self._unigram}
        for i, lv in enumerate(self._levels):
            for field in ("keys", "starts", "lengths", "totals", "next_ids", "counts"):
                arrays[f"l{i}_{field}"] = getattr(lv, field)
        tmp = Path(f"{path}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "NgramLM":
        with np.load(path) as z:
            order, vocab = (int(x) for x in z["meta"])
            levels = [_Level(*(z[f"l{i}_{f}"] for f in ("keys", "starts", "lengths", "totals",
                                                         "next_ids", "counts")))
                      for i in range(order - 1)]
            return cls(order, vocab, float(z["discount"][0]), z["unigram"], levels)
