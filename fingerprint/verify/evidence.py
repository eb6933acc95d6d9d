"""Mergeable evidence: the distinct surviving items of a corpus (or of one shard of it).

An :class:`Evidence` holds what the exact test depends on -- the items that survived the
key-independent selection rules, each once, with their global position in the corpus -- and
counts of what each rule dropped. It never holds a score: scoring needs a key and happens in
:func:`fingerprint.verify.pipeline.verify_evidence`.

Shards of one corpus (contiguous ranges of its texts, numbered by ``text_start`` and
``token_start``) give evidence objects that :func:`merge` combines. ``merge`` is associative and
commutative and keeps de-duplication global: an item survives when its position is the first
position of its de-duplication id anywhere in the corpus, exactly as in one pass, so
``verify_evidence(merge(shards))`` equals the single-process result bit for bit (same counts,
same p-values). Prompt exclusion is per exchange, so it is shard-local; a window filter is a
global set given to every shard.

Modes: ``text`` (the suspect's sampled tokens: items are (window, token) tuples, de-duplicated
on the tuple), ``logprobs`` (the suspect's top-k candidates at each distinct window: items are
(window, candidate) with a weight, de-duplicated on the window: all candidates of a window's
first position are kept) and ``reading`` (the suspect's top-1 prediction on fed texts, de-duplicated
on the (window, prediction) pair).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import ParameterError, TokenError
from ..prf import encode_tuples
from ..windows import WindowFilter, first_occurrence_mask, select_tuples, tuple_table

__all__ = ["Evidence", "ItemCounts", "merge", "text_evidence", "keep_first_positions", "placed_at", "DUPLICATE_RULE",
           "MODES", "hash_buckets", "without_items", "merge_distinct", "distinct_shell"]

MODES = ("text", "logprobs", "reading")

#: The drop rule that de-duplication counts under, per mode.
DUPLICATE_RULE = {"text": "duplicate_tuple", "logprobs": "duplicate_window_items", "reading": "duplicate_pair"}


@dataclass(frozen=True)
class ItemCounts:
    """What happened to the tokens (or items) read: ``tokens_read``, ``scored`` items, and the
    number each rule dropped (``dropped``, rule name -> count, in the order the rules apply)."""

    tokens_read: int
    scored: int
    dropped: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        """The drop counts, rule name -> count."""
        return dict(self.dropped)

    def with_duplicates(self, rule: str, extra: int) -> "ItemCounts":
        """These counts after ``extra`` more items were dropped as duplicates under ``rule``."""
        dropped = dict(self.dropped)
        dropped[rule] = dropped.get(rule, 0) + extra
        return ItemCounts(self.tokens_read, self.scored - extra, dropped)


@dataclass(frozen=True, eq=False)
class Evidence:
    """Distinct surviving items of a corpus or shard, for one context width.

    Attributes
    ----------
    mode:
        ``"text"``, ``"logprobs"`` or ``"reading"``.
    context_width, vocab_size:
        ``h`` and the id range the items were checked against.
    blocks:
        ``(n, k, 4)`` uint32, the items laid out by :func:`fingerprint.prf.encode_tuples`.
    dedup_ids:
        ``(n,)`` uint64, the key-independent id each item is de-duplicated on.
    positions:
        ``(n,)`` int64, global position of the item's token (tokens read before it, corpus-wide);
        non-decreasing.
    text_index:
        ``(n,)`` int64, global index of the item's text.
    weights:
        ``(n,)`` float64 weights of a weighted statistic (logprobs), or ``None``.
    counts:
        :class:`ItemCounts` of this shard.
    text_ids:
        Ids of the shard's texts, in order; ``text_tokens`` ``(T,)`` their token counts;
        ``text_numbers`` ``(T,)`` their global indices.
    text_start, token_start:
        Global index of the shard's first text and token.
    """

    mode: str
    context_width: int
    vocab_size: int
    blocks: np.ndarray
    dedup_ids: np.ndarray
    positions: np.ndarray
    text_index: np.ndarray
    weights: np.ndarray | None
    counts: ItemCounts
    text_ids: tuple[str, ...]
    text_tokens: np.ndarray
    text_numbers: np.ndarray
    text_start: int = 0
    token_start: int = 0

    def __len__(self) -> int:
        return int(self.positions.size)

    @property
    def n_texts(self) -> int:
        return len(self.text_ids)

    @property
    def n_tokens(self) -> int:
        return int(self.counts.tokens_read)

    @property
    def duplicate_rule(self) -> str:
        return DUPLICATE_RULE[self.mode]


def keep_first_positions(ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: items at the first position of their id; items come sorted by position,
    and all items of one position share their fate (one position, one window)."""
    if ids.size == 0:
        return np.zeros(0, dtype=bool)
    starts = np.flatnonzero(np.concatenate(([True], positions[1:] != positions[:-1])))
    if starts.size == ids.size:
        return first_occurrence_mask(ids)
    # several items per position (logprob candidates): one representative id per position group
    # is not enough (candidates differ), so find the first position of each id directly
    order = np.lexsort((positions, ids))
    s_ids = ids[order]
    head = np.concatenate(([True], s_ids[1:] != s_ids[:-1]))
    first_pos = np.repeat(positions[order][head], np.diff(np.append(np.flatnonzero(head), ids.size)))
    keep = np.empty(ids.size, dtype=bool)
    keep[order] = positions[order] == first_pos
    return keep


def text_evidence(tokens: np.ndarray, offsets: np.ndarray, *, context_width: int, vocab_size: int,
                  prompt_tokens: np.ndarray | None = None, prompt_offsets: np.ndarray | None = None,
                  window_filter: WindowFilter | None = None, text_ids: list[str] | None = None,
                  text_start: int = 0, token_start: int = 0) -> Evidence:
    """Evidence of the suspect's text (``mode="text"``).

    ``tokens`` ``(N,)`` and ``offsets`` ``(T + 1,)``: the responses; ``prompt_tokens`` ``(M,)`` with
    ``prompt_offsets`` ``(T + 1,)``: their prompts (windows seen there are not scored);
    ``window_filter``: score only windows in this set (the owner's served outputs);
    ``text_start``/``token_start``: where this shard begins in the whole corpus.
    """
    table = tuple_table(tokens, offsets, context_width, vocab_size=vocab_size)
    sel = select_tuples(table, prompt_tokens=prompt_tokens, prompt_offsets=prompt_offsets,
                        window_filter=window_filter)
    c = sel.counts
    ids = tuple(text_ids) if text_ids is not None else tuple(str(text_start + i) for i in range(table.n_texts))
    if len(ids) != table.n_texts:
        raise TokenError(f"got {len(ids)} text ids for {table.n_texts} texts")
    counts = ItemCounts(c.tokens_read, c.scored, {"no_full_window": c.no_full_window, "prompt_window": c.prompt_window,
                                                  "window_filter": c.window_filter, "duplicate_tuple": c.duplicate_tuple})
    return Evidence("text", int(context_width), int(vocab_size),
                    encode_tuples(table.windows(sel.mask), table.next_tokens(sel.mask)),
                    table.tuple_ids[sel.mask], table.positions[sel.mask] + int(token_start),
                    table.text_index[sel.mask] + int(text_start), None, counts, ids,
                    np.diff(table.offsets), np.arange(table.n_texts, dtype=np.int64) + int(text_start),
                    int(text_start), int(token_start))


def _distinct_sorted(a: np.ndarray) -> np.ndarray:
    """Distinct values of a non-decreasing array ``(n,)``."""
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if a.size else a


def _has_repeats(a: np.ndarray) -> bool:
    """Whether any value occurs twice in ``(n,)`` (a sort, not a hash table: faster here)."""
    s = np.sort(a)
    return bool(s.size > 1 and (s[1:] == s[:-1]).any())


def placed_at(ev: Evidence, text_start: int, token_start: int) -> Evidence:
    """A shard's evidence moved to begin at global text ``text_start`` and token ``token_start``
    (a shard built on its own, numbered from 0, once the sizes of the shards before it are known)."""
    dt, dk = int(text_start) - ev.text_start, int(token_start) - ev.token_start
    if dt == 0 and dk == 0:
        return ev
    return Evidence(ev.mode, ev.context_width, ev.vocab_size, ev.blocks, ev.dedup_ids, ev.positions + dk,
                    ev.text_index + dt, ev.weights, ev.counts, ev.text_ids, ev.text_tokens, ev.text_numbers + dt,
                    int(text_start), int(token_start))


def merge(*shards: Evidence) -> Evidence:
    """Combine the evidence of disjoint shards of one corpus (any order, any grouping).

    The result is what one pass over the whole corpus gives: items de-duplicated globally (first
    position wins), drop counts added, the extra duplicates counted under the mode's rule.
    """
    if not shards:
        raise ParameterError("merge needs at least one evidence object")
    first = shards[0]
    for s in shards[1:]:
        if (s.mode, s.context_width, s.vocab_size) != (first.mode, first.context_width, first.vocab_size):
            raise ParameterError(f"cannot merge evidence of mode {s.mode!r}, h={s.context_width}, V={s.vocab_size} "
                                 f"with mode {first.mode!r}, h={first.context_width}, V={first.vocab_size}")
        if (s.weights is None) != (first.weights is None):
            raise ParameterError("cannot merge weighted with unweighted evidence")
    numbers = np.concatenate([s.text_numbers for s in shards])
    if _has_repeats(numbers):
        raise ParameterError("shards overlap: some text is in more than one of them")
    if len(shards) == 1:
        return first
    # items and texts in global order, whatever order and grouping the shards came in
    pos = np.concatenate([s.positions for s in shards])
    filled = [s for s in shards if len(s)]
    # shards given in corpus order (the usual case): positions rise across every shard boundary,
    # so no position is in two shards and no reordering is needed
    in_order = all(a.positions[-1] < b.positions[0] for a, b in zip(filled[:-1], filled[1:]))
    if not in_order:
        per_shard = np.concatenate([_distinct_sorted(s.positions) for s in shards])
        if _has_repeats(per_shard):
            raise ParameterError("shards overlap: some token position is in more than one of them")

    def gathered(parts: list[np.ndarray]) -> np.ndarray:
        out = np.concatenate(parts)
        return out if in_order else out[order]

    order = None if in_order else np.argsort(pos, kind="stable")
    if order is not None:
        pos = pos[order]
    blocks = gathered([s.blocks for s in shards])
    ids = gathered([s.dedup_ids for s in shards])
    text = gathered([s.text_index for s in shards])
    weights = None if first.weights is None else gathered([s.weights for s in shards if s.weights is not None])
    keep = keep_first_positions(ids, pos)
    dropped: dict[str, int] = {}
    for s in shards:
        for rule, n in s.counts.dropped.items():
            dropped[rule] = dropped.get(rule, 0) + n
    rule = DUPLICATE_RULE[first.mode]
    extra = int(keep.size - keep.sum())
    dropped[rule] = dropped.get(rule, 0) + extra
    counts = ItemCounts(sum(s.counts.tokens_read for s in shards), int(keep.sum()), dropped)
    t_order = np.argsort(numbers, kind="stable")
    ids_all = [i for s in shards for i in s.text_ids]
    starts = [s for s in shards if s.n_texts] or list(shards)
    return Evidence(first.mode, first.context_width, first.vocab_size, blocks[keep], ids[keep], pos[keep],
                    text[keep], None if weights is None else weights[keep], counts,
                    tuple(ids_all[i] for i in t_order),
                    np.concatenate([s.text_tokens for s in shards])[t_order], numbers[t_order],
                    min(s.text_start for s in starts), min(s.token_start for s in starts))


def hash_buckets(ids: np.ndarray, n_buckets: int) -> np.ndarray:
    """Bucket of each de-duplication id, ``(n,)`` uint64 -> ``(n,)`` uint16 (``n_buckets <= 65536``)
    or int64: a fixed unkeyed multiplicative hash, so equal ids always share a bucket and any
    id set spreads evenly. De-duplicating each bucket on its own (first position wins) is
    de-duplicating the whole corpus: the seam of a hash-partitioned merge."""
    if not 1 <= n_buckets <= 1 << 32:
        raise ParameterError(f"n_buckets must be between 1 and 2**32, got {n_buckets}")
    ids = np.asarray(ids, dtype=np.uint64)
    with np.errstate(over="ignore"):
        top = (ids * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)  # the mixed high 32 bits
        b = (top * np.uint64(n_buckets)) >> np.uint64(32)  # in [0, n_buckets), no division
    return b.astype(np.uint16 if n_buckets <= 1 << 16 else np.int64)


def without_items(ev: Evidence) -> Evidence:
    """``ev`` holding no items, with its texts and counts (``counts.scored`` still the number
    of items it had): what :func:`merge_distinct` needs of a shard whose items were
    de-duplicated elsewhere."""
    empty = np.zeros(0, dtype=np.int64)
    return Evidence(ev.mode, ev.context_width, ev.vocab_size, ev.blocks[:0], ev.dedup_ids[:0], empty, empty,
                    None if ev.weights is None else ev.weights[:0], ev.counts, ev.text_ids, ev.text_tokens,
                    ev.text_numbers, ev.text_start, ev.token_start)


def merge_distinct(shards: "list[Evidence] | tuple[Evidence, ...]", blocks: np.ndarray, dedup_ids: np.ndarray,
                   positions: np.ndarray, text_index: np.ndarray, weights: np.ndarray | None = None) -> Evidence:
    """What :func:`merge` gives for ``shards`` (placed at their global offsets, items dropped:
    :func:`without_items`) whose items were de-duplicated globally elsewhere -- for example
    bucket by bucket (:func:`hash_buckets`), each bucket keeping the first global position of
    each of its ids. ``blocks`` ``(n, k, 4)``, ``dedup_ids``, ``positions``, ``text_index``
    ``(n,)`` (and ``weights``) are the surviving items in position order; the items each shard
    had before are its ``counts.scored``, so the extra duplicates are their sum minus ``n``."""
    if not shards:
        raise ParameterError("merge_distinct needs at least one evidence object")
    if any(len(s) for s in shards):
        raise ParameterError("merge_distinct takes shards without their items (without_items)")
    shell = merge(*shards)
    n = int(positions.size)
    if not (blocks.shape[0] == dedup_ids.size == text_index.size == n) or (
            weights is not None and weights.size != n):
        raise ParameterError("merge_distinct: the item arrays differ in length")
    if n > 1 and not bool((positions[1:] >= positions[:-1]).all()):
        raise ParameterError("merge_distinct: items must come in position order")
    counts = _distinct_counts(shards, shell, n)
    return Evidence(shell.mode, shell.context_width, shell.vocab_size, blocks, dedup_ids, positions, text_index,
                    weights, counts, shell.text_ids, shell.text_tokens, shell.text_numbers, shell.text_start,
                    shell.token_start)


def _distinct_counts(shards: "list[Evidence] | tuple[Evidence, ...]", shell: Evidence, n: int) -> ItemCounts:
    before = sum(s.counts.scored for s in shards)
    if n > before:
        raise ParameterError(f"{n} distinct items, more than the shards' {before}")
    dropped = dict(shell.counts.dropped)
    rule = DUPLICATE_RULE[shell.mode]
    dropped[rule] = dropped.get(rule, 0) + before - n
    return ItemCounts(shell.counts.tokens_read, n, dropped)


def distinct_shell(shards: "list[Evidence] | tuple[Evidence, ...]", n_distinct: int) -> Evidence:
    """What :func:`merge_distinct` gives for ``shards`` (placed, without their items) and
    ``n_distinct`` surviving items, without the items themselves: the corpus' texts and counts,
    for a statistic summed where the items are (:func:`fingerprint.verify.pipeline.verify_sums`)."""
    if not shards:
        raise ParameterError("distinct_shell needs at least one evidence object")
    if any(len(s) for s in shards):
        raise ParameterError("distinct_shell takes shards without their items (without_items)")
    shell = merge(*shards)
    return replace(shell, counts=_distinct_counts(shards, shell, int(n_distinct)))
