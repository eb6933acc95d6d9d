"""Context windows over flat token arrays, and the rules that keep the null exact.

Texts come as one flat token array plus offsets: text ``i`` is
``tokens[offsets[i]:offsets[i + 1]]``. A *tuple* is ``(window, token)`` where the window is
the ``h`` tokens before the token inside the same text; tokens with fewer than ``h``
predecessors in their text are not scored.

Selection rules (see DESIGN.md), applied in this order:

1. **prompt exclusion**: a tuple whose window occurs in the prompt of the same exchange is
   dropped (for ``h = 0``, whose window is empty, a tuple whose token occurs in the prompt);
2. **window filter** (optional): only tuples whose window is in a given set are kept; the
   filter selects windows, never tuples;
3. **de-duplication**: each distinct tuple is scored once across the whole corpus (its
   first occurrence in corpus order).

All ids used here are *unkeyed*: which tuples survive never depends on the key, so the
key's PRF values of the survivors are independent uniforms under H0. Ids are exact
(bit-packed) when ``(h + 1) * ceil(log2 V) <= 64``, else a 64-bit hash; a hash collision
can only drop a tuple, never add one, and does not depend on the key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import TokenError
from .prf import TOKEN_LIMIT

__all__ = [
    "TupleTable",
    "ScoredTuples",
    "DropCounts",
    "Selection",
    "WindowFilter",
    "tuple_table",
    "check_tokens",
    "select_tuples",
    "first_occurrence_mask",
    "ngram_ids",
    "row_ids",
    "is_member",
    "text_keyed_ids",
]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer (an unkeyed bijective mixer) on a uint64 array."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def row_ids(matrix: np.ndarray) -> np.ndarray:
    """Unkeyed 64-bit hash ids of the rows of an integer matrix ``(n, k)`` -> ``(n,)`` uint64."""
    ids = np.full(matrix.shape[0], np.uint64(matrix.shape[1]), dtype=np.uint64)
    for j in range(matrix.shape[1]):  # loop over columns, not rows
        ids = _splitmix64(ids ^ matrix[:, j].astype(np.uint64))
    return ids


def check_tokens(tokens: np.ndarray, offsets: np.ndarray, vocab_size: int | None = None,
                 *, what: str = "tokens") -> tuple[np.ndarray, np.ndarray]:
    """Validate a flat token array ``(N,)`` and offsets ``(T + 1,)``; return int64 copies/views.

    Raises :class:`~fingerprint.errors.TokenError` naming the first bad value.
    """
    tokens = np.asarray(tokens)
    offsets = np.asarray(offsets)
    if tokens.ndim != 1:
        raise TokenError(f"{what} must be a flat 1-D array, got shape {tokens.shape}")
    if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
        raise TokenError(f"{what} must be integer token ids, got dtype {tokens.dtype}")
    if offsets.ndim != 1 or offsets.size < 1 or (offsets.size and not np.issubdtype(offsets.dtype, np.integer)):
        raise TokenError(f"{what} offsets must be a 1-D integer array of length T + 1, got "
                         f"shape {offsets.shape} dtype {offsets.dtype}")
    offsets = offsets.astype(np.int64, copy=False)
    if offsets[0] != 0 or offsets[-1] != tokens.size or (np.diff(offsets) < 0).any():
        raise TokenError(f"{what} offsets must start at 0, never decrease and end at "
                         f"len(tokens)={tokens.size}; got start {offsets[0]}, end {offsets[-1]}")
    tokens = tokens.astype(np.int64, copy=False)
    if tokens.size:
        lo, hi = int(tokens.min()), int(tokens.max())
        limit = TOKEN_LIMIT if vocab_size is None else vocab_size
        if lo < 0 or hi >= limit:
            bad_pos = int(np.flatnonzero((tokens < 0) | (tokens >= limit))[0])
            text = int(np.searchsorted(offsets, bad_pos, side="right") - 1)
            raise TokenError(f"{what}: token id {int(tokens[bad_pos])} at position {bad_pos} "
                             f"(text {text}) is outside the vocabulary [0, {limit})")
    return tokens, offsets


def ngram_ids(tokens: np.ndarray, ends: np.ndarray, width: int, vocab_size: int) -> np.ndarray:
    """Unkeyed 64-bit ids of the n-grams ``tokens[end - width + 1 : end + 1]`` for each end.

    Shapes: tokens ``(N,)``, ends ``(n,)`` -> ``(n,)`` uint64. Exact (bit-packed) when
    ``width * ceil(log2 vocab_size) <= 64``; a 64-bit hash otherwise. ``width = 0`` gives 0.
    """
    n = ends.shape[0]
    if width == 0:
        return np.zeros(n, dtype=np.uint64)
    bits = max(1, int(vocab_size - 1).bit_length())
    exact = width * bits <= 64
    ids = np.zeros(n, dtype=np.uint64)
    for j in range(width):  # loop over the window's columns, not over tokens
        col = tokens[ends - (width - 1 - j)].astype(np.uint64)
        if exact:
            ids |= col << np.uint64(bits * j)
        else:
            ids = _splitmix64(ids ^ col)
    return ids


def _first_by_argsort(ids: np.ndarray) -> np.ndarray:
    mask = np.zeros(ids.size, dtype=bool)
    order = np.argsort(ids)
    s = ids[order]
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    mask[np.minimum.reduceat(order, starts)] = True
    return mask


def first_occurrence_mask(ids: np.ndarray) -> np.ndarray:
    """Mark the first occurrence (in array order) of every distinct id.

    Shape ``(n,)`` -> ``(n,)`` bool. Sort-based (``np.unique`` and stable index sorts are many
    times slower here). Ids small enough to share a uint64 with their position (exact window
    ids, h <= 1) take one value sort of the packed pairs. Larger (hashed) ids take a value sort
    that finds the repeated ids; when few ids repeat, only those go through an index sort.
    """
    n = ids.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    ids = np.ascontiguousarray(ids).astype(np.uint64, copy=False)
    bits = max(1, (n - 1).bit_length())
    if int(ids.max()) < 1 << (64 - bits):
        return _first_by_packed_sort(ids, bits)
    s = np.sort(ids)
    same = s[1:] == s[:-1]
    if not same.any():
        return np.ones(n, dtype=bool)
    repeated = s[1:][same]
    repeated = repeated[np.concatenate(([True], repeated[1:] != repeated[:-1]))]
    if repeated.size > 1 << 16:  # membership search is fast only while the set stays in cache
        return _first_by_argsort(ids)
    idx = np.flatnonzero(is_member(ids, repeated))
    mask = np.ones(n, dtype=bool)
    mask[idx] = _first_by_argsort(ids[idx])
    return mask


def _first_by_packed_sort(ids: np.ndarray, bits: int) -> np.ndarray:
    """First occurrences of ids ``< 2**(64 - bits)``, ``bits`` enough for every position."""
    n = ids.size
    shift = np.uint64(bits)
    packed = np.sort((ids << shift) | np.arange(n, dtype=np.uint64))
    value = packed >> shift
    start = np.empty(n, dtype=bool)
    start[0] = True
    np.not_equal(value[1:], value[:-1], out=start[1:])
    if start.all():
        return np.ones(n, dtype=bool)
    mask = np.zeros(n, dtype=bool)
    mask[(packed[start] & np.uint64((1 << bits) - 1)).astype(np.int64)] = True
    return mask


def _sorted_distinct(ids: np.ndarray) -> np.ndarray:
    s = np.sort(ids)
    if s.size:
        s = s[np.concatenate(([True], s[1:] != s[:-1]))]
    return s


def is_member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if sorted_set.size == 0:
        return np.zeros(values.shape, dtype=bool)
    idx = np.searchsorted(sorted_set, values)
    idx[idx == sorted_set.size] = 0
    return sorted_set[idx] == values


def text_keyed_ids(ids: np.ndarray, text_index: np.ndarray) -> np.ndarray:
    """Unkeyed ids ``(n,)`` of (id, text) pairs: the same id in another text gets another value."""
    return _splitmix64(ids ^ _splitmix64(text_index.astype(np.uint64)))


@dataclass(frozen=True, eq=False)
class TupleTable:
    """Every scorable ``(window, token)`` tuple of a corpus, in corpus order.

    Attributes
    ----------
    tokens:
        ``(N,)`` int64, all texts' token ids concatenated.
    offsets:
        ``(T + 1,)`` int64 text boundaries.
    context_width:
        ``h``, tokens per window.
    vocab_size:
        ``V``; token ids are in ``[0, V)``.
    positions:
        ``(n,)`` int64 index into ``tokens`` of each tuple's token (those with a full window).
    text_index:
        ``(n,)`` int64 text of each tuple.
    window_ids, tuple_ids:
        ``(n,)`` uint64 unkeyed ids of the window and of the whole tuple.
    """

    tokens: np.ndarray
    offsets: np.ndarray
    context_width: int
    vocab_size: int
    positions: np.ndarray
    text_index: np.ndarray
    window_ids: np.ndarray
    tuple_ids: np.ndarray

    @property
    def n_tokens(self) -> int:
        """Tokens read, whether or not they have a full window."""
        return int(self.tokens.size)

    @property
    def n_texts(self) -> int:
        return int(self.offsets.size - 1)

    def __len__(self) -> int:
        return int(self.positions.size)

    def windows(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Context windows ``(n, h)`` int64 (of the tuples where ``mask`` is true)."""
        pos = self.positions if mask is None else self.positions[mask]
        h = self.context_width
        if h == 0:
            return np.zeros((pos.size, 0), dtype=np.int64)
        return self.tokens[pos[:, None] + np.arange(-h, 0)]

    def next_tokens(self, mask: np.ndarray | None = None) -> np.ndarray:
        """The scored token of each tuple, ``(n,)`` int64."""
        pos = self.positions if mask is None else self.positions[mask]
        return self.tokens[pos]


def _full_window_mask(offsets: np.ndarray, n_tokens: int, h: int) -> np.ndarray:
    """``(N,)`` bool: token has at least ``h`` predecessors inside its own text."""
    mask = np.ones(n_tokens, dtype=bool)
    starts, ends = offsets[:-1], offsets[1:]
    for j in range(h):  # loop over window columns, not tokens
        idx = starts + j
        mask[idx[idx < ends]] = False
    return mask


def _all_ngram_ids(tokens: np.ndarray, width: int, vocab_size: int) -> np.ndarray:
    """Ids of the n-grams ending at every position ``>= width - 1``; ``(N,)`` uint64, with
    zeros where no n-gram ends. Uses slices, not gathers (several times faster)."""
    n = tokens.size
    ids = np.zeros(n, dtype=np.uint64)
    if width == 0 or n < width:
        return ids
    bits = max(1, int(vocab_size - 1).bit_length())
    t64 = tokens.astype(np.uint64)
    out = ids[width - 1:]
    if width * bits <= 64:
        for j in range(width):
            col = t64[j:n - width + 1 + j]
            if j:
                out |= col << np.uint64(bits * j)
            else:
                out |= col
    else:
        for j in range(width):
            out[:] = _splitmix64(out ^ t64[j:n - width + 1 + j])
    return ids


def tuple_table(tokens: np.ndarray, offsets: np.ndarray, context_width: int, *,
                vocab_size: int) -> TupleTable:
    """Build the :class:`TupleTable` of a corpus (validates the tokens against ``vocab_size``)."""
    tokens, offsets = check_tokens(tokens, offsets, vocab_size)
    h = int(context_width)
    positions = np.flatnonzero(_full_window_mask(offsets, tokens.size, h))
    text_index = np.repeat(np.arange(offsets.size - 1, dtype=np.int64), np.diff(offsets))[positions]
    tuple_ids = _all_ngram_ids(tokens, h + 1, vocab_size)[positions]
    bits = max(1, int(vocab_size - 1).bit_length())
    if h == 0:
        window_ids = np.zeros(positions.size, dtype=np.uint64)
    elif (h + 1) * bits <= 64:  # exact packing: the window is the low h fields of the tuple
        window_ids = tuple_ids & np.uint64((1 << (bits * h)) - 1)
    else:
        window_ids = _all_ngram_ids(tokens, h, vocab_size)[positions - 1]
    return TupleTable(tokens, offsets, h, int(vocab_size), positions, text_index,
                      window_ids, tuple_ids)


@dataclass(frozen=True, eq=False)
class ScoredTuples:
    """A :class:`TupleTable` with one keyed score per tuple (``scores``: ``(n,)``)."""

    table: TupleTable
    scores: np.ndarray


@dataclass(frozen=True)
class DropCounts:
    """What happened to every token read; the fields add up to ``tokens_read``."""

    tokens_read: int
    no_full_window: int
    prompt_window: int
    window_filter: int
    duplicate_tuple: int
    scored: int

    def as_dict(self) -> dict[str, int]:
        return {
            "no_full_window": self.no_full_window,
            "prompt_window": self.prompt_window,
            "window_filter": self.window_filter,
            "duplicate_tuple": self.duplicate_tuple,
        }


@dataclass(frozen=True, eq=False)
class Selection:
    """Which tuples of a table are scored: ``mask`` ``(n,)`` bool, and the counts."""

    mask: np.ndarray
    counts: DropCounts


class WindowFilter:
    """A set of context windows (e.g. from the owner's served outputs) that scoring is
    restricted to. Built from windows only, so it never selects tuples by their token."""

    def __init__(self, window_ids: np.ndarray, context_width: int) -> None:
        self.context_width = int(context_width)
        self._ids = _sorted_distinct(np.asarray(window_ids, dtype=np.uint64))

    @classmethod
    def from_tokens(cls, tokens: np.ndarray, offsets: np.ndarray, context_width: int, *,
                    vocab_size: int) -> "WindowFilter":
        """All windows that precede a token in the given texts (``(N,)`` + ``(T + 1,)``)."""
        table = tuple_table(tokens, offsets, context_width, vocab_size=vocab_size)
        return cls(table.window_ids, context_width)

    def __len__(self) -> int:
        return int(self._ids.size)

    def contains(self, window_ids: np.ndarray) -> np.ndarray:
        """Membership of window ids ``(n,)`` -> ``(n,)`` bool."""
        if self.context_width == 0:
            return np.ones(window_ids.shape, dtype=bool)
        return is_member(window_ids, self._ids)


def select_tuples(table: TupleTable, *, prompt_tokens: np.ndarray | None = None,
                  prompt_offsets: np.ndarray | None = None,
                  window_filter: WindowFilter | None = None,
                  deduplicate: bool = True) -> Selection:
    """Apply prompt exclusion, the optional window filter and de-duplication.

    ``prompt_tokens`` ``(M,)`` with ``prompt_offsets`` ``(T + 1,)`` give the prompt of each of
    the table's ``T`` texts (an empty prompt is fine).
    """
    h = table.context_width
    keep = np.ones(len(table), dtype=bool)
    n_prompt = 0
    if prompt_tokens is not None or prompt_offsets is not None:
        if prompt_tokens is None or prompt_offsets is None:
            raise TokenError("prompt_tokens and prompt_offsets must be given together")
        p_tokens, p_offsets = check_tokens(prompt_tokens, prompt_offsets, table.vocab_size,
                                           what="prompt tokens")
        if p_offsets.size != table.offsets.size:
            raise TokenError(f"got prompts for {p_offsets.size - 1} texts but {table.n_texts} responses")
        width = max(h, 1)  # h = 0: the window is empty, so exclude tokens seen in the prompt
        lengths = np.diff(p_offsets)
        text_of = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
        in_text = np.arange(p_tokens.size, dtype=np.int64) - p_offsets[text_of]
        ends = np.flatnonzero(in_text >= width - 1)
        prompt_keys = _sorted_distinct(text_keyed_ids(ngram_ids(p_tokens, ends, width, table.vocab_size),
                                                  text_of[ends]))
        own = table.window_ids if h else table.tuple_ids
        in_prompt = is_member(text_keyed_ids(own, table.text_index), prompt_keys)
        n_prompt = int(in_prompt.sum())
        keep &= ~in_prompt
    n_filter = 0
    if window_filter is not None:
        if window_filter.context_width != h:
            raise TokenError(f"window filter has h={window_filter.context_width}, scheme has h={h}")
        outside = keep & ~window_filter.contains(table.window_ids)
        n_filter = int(outside.sum())
        keep &= ~outside
    n_dup = 0
    if deduplicate:
        idx = np.flatnonzero(keep)
        first = first_occurrence_mask(table.tuple_ids[idx])
        n_dup = int(idx.size - first.sum())
        keep[idx[~first]] = False
    counts = DropCounts(
        tokens_read=table.n_tokens,
        no_full_window=table.n_tokens - len(table),
        prompt_window=n_prompt,
        window_filter=n_filter,
        duplicate_tuple=n_dup,
        scored=int(keep.sum()),
    )
    return Selection(mask=keep, counts=counts)
