"""Reading with distributions: the suspect's next-token distributions on the owner's texts.

The owner feeds its own texts (served outputs, or any fingerprinted texts) to the suspect and
reads, at every position, the suspect's distribution over the next token (from open weights:
the full distribution, kept to its top ``K`` tokens; over HTTP: the top-k logprobs a server
returns for prompt tokens). At each distinct window ``w`` of the fed texts (its first position
across the corpus) the statistic weighs the fingerprint score of every candidate ``v``:

    S = sum_w e_w sum_v c_w(v) / ||c_w|| * score(w, v)

with ``c_w(v) = p_suspect(v | w)``, or, given the owner's own model as a reference (which never
saw the key), ``c_w(v) = max(p_suspect(v | w) - p_reference(v | w), 0)``: the mass the suspect
puts on ``v`` beyond what the owner's model does, which removes the part of the score every
model that reads the same texts shares. Each window's candidate weights are scaled to unit norm,
so every window carries the same null variance, and then multiplied by an optional window
weight ``e_w >= 0`` fixed before any key is used (:data:`WINDOW_WEIGHTINGS`): ``exposure``, how
often the window occurs in the fed texts (:func:`exposure_weights`: a student learned most where
it saw most), ``sqrt-exposure``, its square root (:func:`sqrt_exposure_weights`: the precision of
a window mean), or ``entropy``, the suspect's entropy at the window (:func:`entropy_weights`: a
fingerprint can move mass only where the suspect is uncertain). With fixed weights the null
below is unchanged: it conditions on all weights.

**Null.** Under H0 the suspect (and the reference) never learned from the key, so the weights
are independent of it and the scores of distinct (window, token) pairs are independent draws
of the scheme's null: conditional on the weights, ``S`` is a weighted sum of independent
variables with known weights, whose tail the scheme's weighted null gives (the Lugannani-Rice
saddlepoint, checked against decoy keys in every run). transformers' schemes have their own:
hf-kgw's flags of one seed are negatively associated (a fixed-size green list), which the
independent weighted null dominates; hf-synthid's weighted null runs over the key's shifts
(:class:`~fingerprint.stats.WeightedShiftNull`); each scheme's
:meth:`~fingerprint.schemes.Scheme.reading_problem` says when fingerprinted fed texts cannot be
read with it. Two rules keep it valid when the fed
texts carry the fingerprint themselves:

* **a pair that occurs in any fed text is never scored**: the fingerprinted sampler chose
  those tokens, so they are green more often than gamma;
* **weights are never negative**: at a fed window, the sampler's choice of one token makes
  every other token's flag green with probability *at most* gamma, which lowers a sum with
  non-negative weights (conservative) but would raise one with negative weights. This is why the
  reference-model weights are clipped at zero.

With fed texts the owner sampled *without* the fingerprint (``fed_texts_clean``) the null is
exact and the first rule is switched off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError, ParameterError
from ..prf import encode_tuples
from ..windows import first_occurrence_mask, is_member, ngram_ids, row_ids
from .evidence import Evidence, ItemCounts, keep_first_positions

__all__ = ["PositionDistributions", "distribution_evidence", "read_distributions", "exposure_weights",
           "sqrt_exposure_weights", "entropy_weights", "WINDOW_WEIGHTINGS", "WINDOW_AGGREGATES"]


@dataclass(frozen=True)
class PositionDistributions:
    """A model's next-token candidates at every position of one fed text.

    ``tokens`` ``(L,)``: the fed text in the owner's ids (``-1`` where a token has no owner id).
    ``candidates`` ``(L, K)``: at position ``j``, the owner ids of the model's top-``K`` next-token
    predictions given ``tokens[:j]`` (``-1``: unmapped, or padding). ``probs`` ``(L, K)``: their
    probabilities. ``reference_probs`` ``(L, K)`` or None: the owner's reference model's
    probabilities of the same candidates.
    """

    tokens: np.ndarray
    candidates: np.ndarray
    probs: np.ndarray
    reference_probs: np.ndarray | None = None

    def __post_init__(self) -> None:
        L = self.tokens.shape[0]
        if self.tokens.ndim != 1 or self.candidates.ndim != 2 or self.candidates.shape[0] != L:
            raise ParameterError(f"tokens (L,) and candidates (L, K) must agree, got {self.tokens.shape} and "
                                 f"{self.candidates.shape}")
        if self.probs.shape != self.candidates.shape:
            raise ParameterError(f"probs must have the candidates' shape {self.candidates.shape}, got {self.probs.shape}")
        if self.reference_probs is not None and self.reference_probs.shape != self.candidates.shape:
            raise ParameterError(f"reference_probs must have the candidates' shape {self.candidates.shape}, got "
                                 f"{self.reference_probs.shape}")


def distribution_evidence(texts: Sequence[PositionDistributions], *, context_width: int, vocab_size: int,
                          exclude_fed_pairs: bool = True, window_weights: Sequence[np.ndarray] | None = None,
                          text_ids: Sequence[str] | None = None, aggregate: str = "first") -> Evidence:
    """Evidence of reading with distributions (mode ``"reading"``, weighted items).

    ``texts``: one :class:`PositionDistributions` per fed text (``L`` positions each).
    ``window_weights``: per text an ``(L,)`` array of finite non-negative weights ``e_w`` of the
    window ending before each position (fixed before any key is used: :func:`exposure_weights`,
    :func:`entropy_weights`), or None (every window weighs 1). A window is scored at its first
    position, with that position's weight; it multiplies the window's unit-norm candidate
    weights (a window of weight 0 is not scored, counted as ``zero_weight_windows``).
    ``aggregate``: ``"first"`` reads each distinct window at its first position; ``"mean"``
    averages the suspect's (and the reference's) probability of each candidate over every
    position of the window (0 where it is not among the top K there) before the reference is
    subtracted and the window normed (:data:`WINDOW_AGGREGATES`): a student's learned bias at a
    window, measured over all its contexts instead of one. Either way the weights are a function
    of the model outputs alone, fixed before any key is used, so the null is the same.
    """
    if aggregate not in WINDOW_AGGREGATES:
        raise ParameterError(f"aggregate must be one of {', '.join(WINDOW_AGGREGATES)}, got {aggregate!r}")
    h = int(context_width)
    if h < 1:
        raise ParameterError("reading with distributions needs a context width h >= 1")
    if window_weights is not None and len(window_weights) != len(texts):
        raise ParameterError(f"window_weights has {len(window_weights)} arrays for {len(texts)} texts")
    counts = {"positions": 0, "unmapped_tokens": 0, "no_full_window": 0, "duplicate_window": 0,
              "unmapped_candidates": 0, "pair_in_fed_text": 0, "duplicate_candidates": 0, "zero_weight_candidates": 0,
              "zero_mass_windows": 0}
    rows_w, rows_t, rows_c, rows_r, rows_e, rows_pos, rows_text, fed = [], [], [], [], [], [], [], []
    read = 0
    lengths = []
    for ti, t in enumerate(texts):
        seq = np.asarray(t.tokens, dtype=np.int64)
        L = seq.size
        lengths.append(L)
        counts["positions"] += L
        counts["unmapped_tokens"] += int((seq < 0).sum())
        if L > h:
            pairs = np.lib.stride_tricks.sliding_window_view(seq, h + 1)
            fed.append(row_ids(pairs[(pairs >= 0).all(axis=1)]))
            wins = pairs[:, :h]  # window before position j = h .. L-1
            ok = (wins >= 0).all(axis=1)
            counts["no_full_window"] += int((~ok).sum()) + h
            j = np.flatnonzero(ok) + h
            weight = np.ones(j.size) if window_weights is None else np.asarray(window_weights[ti], float)[j]
            if window_weights is not None and not (np.isfinite(weight).all() and (weight >= 0).all()):
                raise ParameterError(f"window_weights of text {ti} has a negative or non-finite weight")
            c = np.asarray(t.probs, dtype=np.float64)[j]
            if aggregate == "mean":  # the reference is subtracted after averaging
                r = (np.zeros_like(c) if t.reference_probs is None
                     else np.asarray(t.reference_probs, dtype=np.float64)[j])
                rows_r.append(np.where(np.isfinite(r), r, 0.0))
            elif t.reference_probs is not None:
                c = np.maximum(c - np.asarray(t.reference_probs, dtype=np.float64)[j], 0.0)
            c = np.where(np.isfinite(c), c, 0.0)
            rows_w.append(wins[ok])
            rows_t.append(np.asarray(t.candidates, dtype=np.int64)[j])
            rows_c.append(c)
            rows_e.append(weight)
            rows_pos.append(read + j)
            rows_text.append(np.full(j.size, ti, dtype=np.int64))
        else:
            counts["no_full_window"] += L
        read += L
    if not rows_w or not sum(x.shape[0] for x in rows_w):
        raise InputError("no position of the fed texts has a full window to read")
    windows = np.concatenate(rows_w)
    cands = np.concatenate(rows_t)
    weights = np.concatenate(rows_c)
    e_win = np.concatenate(rows_e)
    pos = np.concatenate(rows_pos)
    text = np.concatenate(rows_text)
    k = cands.shape[1]
    if aggregate == "mean":
        return _mean_evidence(windows, cands, weights, np.concatenate(rows_r), e_win, pos, text, fed, counts, h,
                              vocab_size, exclude_fed_pairs, window_weights is not None, read, lengths, text_ids,
                              len(texts))
    # one position per distinct window across the corpus (its first)
    first = keep_first_positions(row_ids(windows), pos)
    counts["duplicate_window"] = int((~first).sum())
    windows, cands, weights, pos, text = windows[first], cands[first], weights[first], pos[first], text[first]
    e_win = e_win[first]
    # expand to (window, candidate) items
    n = pos.size
    w_items = np.repeat(windows, k, axis=0)
    t_items = cands.ravel()
    c_items = weights.ravel()
    pos_items = np.repeat(pos, k)
    text_items = np.repeat(text, k)
    keep = t_items >= 0
    counts["unmapped_candidates"] = int((~keep).sum())
    if t_items[keep].size and int(t_items[keep].max()) >= vocab_size:
        raise InputError(f"a candidate id {int(t_items[keep].max())} is outside the key's vocabulary {vocab_size}")
    pair = row_ids(np.concatenate([w_items, t_items[:, None]], axis=1))
    if exclude_fed_pairs:
        fed_ids = np.unique(np.concatenate(fed)) if fed else np.zeros(0, np.uint64)
        in_fed = keep & is_member(pair, fed_ids)
        counts["pair_in_fed_text"] = int(in_fed.sum())
        keep &= ~in_fed
    # the same candidate twice at one window (a duplicated top-k row, or two of the model's tokens
    # mapped to one owner id) counts once: windows are distinct by now, so a pair can repeat only
    # within one position, and its first (most probable) occurrence is kept
    idx = np.flatnonzero(keep)
    dup = ~first_occurrence_mask(pair[idx]) if idx.size else np.zeros(0, bool)
    counts["duplicate_candidates"] = int(dup.sum())
    if dup.any():
        keep[idx[dup]] = False
    zero = keep & (c_items <= 0)
    counts["zero_weight_candidates"] = int(zero.sum())
    keep &= ~zero
    # per-window unit norm, then the window's own weight e_w (after the norm: it must not cancel)
    norms = np.zeros(n)
    np.add.at(norms, np.repeat(np.arange(n), k)[keep], c_items[keep] ** 2)
    norms = np.sqrt(norms)
    counts["zero_mass_windows"] = int((norms == 0).sum())
    if window_weights is not None:
        zero_e = keep & np.repeat(e_win == 0, k)
        counts["zero_weight_windows"] = int(((e_win == 0) & (norms > 0)).sum())
        keep &= ~zero_e
    scaled = c_items[keep] / np.repeat(norms, k)[keep] * np.repeat(e_win, k)[keep]
    dropped = {key: v for key, v in counts.items() if key != "positions"}
    n_items = int(keep.sum())
    ids = tuple(text_ids) if text_ids is not None else tuple(str(i) for i in range(len(texts)))
    return Evidence("reading", h, vocab_size, encode_tuples(w_items[keep], t_items[keep]), pair[keep],
                    pos_items[keep], text_items[keep], scaled, ItemCounts(read, n_items, dropped), ids,
                    np.array(lengths, dtype=np.int64), np.arange(len(texts), dtype=np.int64))


def _mean_evidence(windows: np.ndarray, cands: np.ndarray, probs: np.ndarray, ref: np.ndarray, e_pos: np.ndarray,
                   pos: np.ndarray, text: np.ndarray, fed: list[np.ndarray], counts: dict[str, int], h: int,
                   vocab_size: int, exclude_fed_pairs: bool, weighted: bool, read: int, lengths: list[int],
                   text_ids: Sequence[str] | None, n_texts: int) -> Evidence:
    """:func:`distribution_evidence` with ``aggregate="mean"``: ``windows`` ``(N, h)``, ``cands``,
    ``probs`` and ``ref`` ``(N, K)`` (``ref`` zeros without a reference), ``e_pos``, ``pos`` and
    ``text`` ``(N,)`` of every position with a full window, in position order."""
    n_pos, k = cands.shape
    wid = row_ids(windows)
    w_uniq, w_first, w_inv, w_count = np.unique(wid, return_index=True, return_inverse=True, return_counts=True)
    counts["window_repeats_averaged"] = int(n_pos - w_uniq.size)
    flat = cands.ravel()
    valid = flat >= 0
    counts["unmapped_candidates"] = int((~valid).sum())
    if flat[valid].size and int(flat[valid].max()) >= vocab_size:
        raise InputError(f"a candidate id {int(flat[valid].max())} is outside the key's vocabulary {vocab_size}")
    # a candidate twice at one position (two of the model's tokens mapped to one owner id) counts once
    order = np.argsort(cands, axis=1, kind="stable")
    srt = np.take_along_axis(cands, order, axis=1)
    again = np.zeros_like(cands, dtype=bool)
    np.put_along_axis(again, order[:, 1:], srt[:, 1:] == srt[:, :-1], axis=1)
    counts["duplicate_candidates"] = int((again.ravel() & valid).sum())
    valid &= ~again.ravel()
    group = np.repeat(w_inv.ravel(), k)[valid]  # each entry's window
    pair_all = row_ids(np.concatenate([windows[np.repeat(np.arange(n_pos), k)[valid]], flat[valid, None]], axis=1))
    pairs, p_first, p_inv = np.unique(pair_all, return_index=True, return_inverse=True)
    p_inv = p_inv.ravel()
    p_group = group[p_first]
    occurrences = w_count[p_group].astype(np.float64)
    mean_s = np.bincount(p_inv, weights=probs.ravel()[valid], minlength=pairs.size) / occurrences
    mean_r = np.bincount(p_inv, weights=ref.ravel()[valid], minlength=pairs.size) / occurrences
    c = np.maximum(mean_s - mean_r, 0.0)
    keep = np.ones(pairs.size, dtype=bool)
    if exclude_fed_pairs:
        fed_ids = np.unique(np.concatenate(fed)) if fed else np.zeros(0, np.uint64)
        in_fed = is_member(pairs, fed_ids)
        counts["pair_in_fed_text"] = int(in_fed.sum())
        keep &= ~in_fed
    zero = keep & (c <= 0)
    counts["zero_weight_candidates"] = int(zero.sum())
    keep &= ~zero
    norms = np.sqrt(np.bincount(p_group[keep], weights=c[keep] ** 2, minlength=w_uniq.size))
    counts["zero_mass_windows"] = int((norms == 0).sum())
    e_win = e_pos[w_first]
    if weighted:
        counts["zero_weight_windows"] = int(((e_win == 0) & (norms > 0)).sum())
        keep &= e_win[p_group] > 0
    idx = np.flatnonzero(keep)
    g = p_group[idx]
    item_pos = pos[w_first[g]]
    cand = flat[valid][p_first[idx]]
    order_items = np.lexsort((cand, item_pos))
    idx, g, item_pos, cand = idx[order_items], g[order_items], item_pos[order_items], cand[order_items]
    scaled = c[idx] / norms[g] * e_win[g]
    dropped = {key: v for key, v in counts.items() if key not in ("positions", "duplicate_window")}
    ids = tuple(text_ids) if text_ids is not None else tuple(str(i) for i in range(n_texts))
    return Evidence("reading", h, vocab_size, encode_tuples(windows[w_first[g]], cand), pairs[idx], item_pos,
                    text[w_first[g]], scaled, ItemCounts(read, int(idx.size), dropped), ids,
                    np.array(lengths, dtype=np.int64), np.arange(n_texts, dtype=np.int64))


#: How :func:`distribution_evidence` reads a window that occurs at several positions.
WINDOW_AGGREGATES = {
    "first": "the window is read at its first position",
    "mean": "the model's probabilities at the window are averaged over all its positions",
}


#: The window weightings ``verify --window-weights`` offers, name -> what ``e_w`` is.
WINDOW_WEIGHTINGS = {
    "uniform": "every distinct window weighs 1",
    "exposure": "each window weighs the number of times it occurs in the fed texts followed by a token",
    "sqrt-exposure": "each window weighs the square root of that number (the precision of a window mean over its "
                     "occurrences)",
    "entropy": "each window weighs the suspect's entropy over its top-K candidates there",
}


def exposure_weights(texts: Sequence[np.ndarray], context_width: int) -> list[np.ndarray]:
    """Exposure of every position's window: how many times the ``h`` tokens before it occur in
    ``texts`` followed by a token (the training examples a student that read the texts got for
    that window).

    ``texts``: ``T`` arrays ``(L_t,)`` of owner ids (``-1``: unknown; a window holding one has no
    exposure). Returns ``T`` float64 arrays ``(L_t,)``: at position ``j >= h`` the number of
    positions ``(t', j')`` of all texts whose window ``text_t'[j' - h:j']`` equals
    ``text_t[j - h:j]`` (itself included, so at least 1); 0 at positions ``j < h`` and at windows
    with an unknown token. Counts do not depend on any key: fixed weights for
    :func:`distribution_evidence`. Vectorized: one ``np.unique`` over the windows' ids.
    """
    h = int(context_width)
    if h < 1:
        raise ParameterError("exposure weights need a context width h >= 1")
    seqs = [np.asarray(t, dtype=np.int64).reshape(-1) for t in texts]
    out = [np.zeros(q.size) for q in seqs]
    lengths = np.array([q.size for q in seqs], dtype=np.int64)
    if not seqs or lengths.sum() == 0:
        return out
    flat = np.concatenate(seqs)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    text_of = np.repeat(np.arange(lengths.size), lengths)
    in_text = np.arange(flat.size) - starts[text_of]
    # the window before position j ends at j - 1: every token with h - 1 tokens before it in its text
    ends = np.flatnonzero(in_text >= h - 1)
    ends = ends[in_text[ends] + 1 < lengths[text_of[ends]]]  # a position follows the window in its text
    unknown = np.concatenate(([0], np.cumsum(flat < 0)))
    ends = ends[unknown[ends + 1] - unknown[ends + 1 - h] == 0]
    if ends.size == 0:
        return out
    vocab = int(flat.max()) + 1
    ids = ngram_ids(flat, ends, h, max(vocab, 2))
    _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    weight = counts[inverse.reshape(-1)].astype(np.float64)
    target = ends + 1  # the position each window is read at, in the flat layout
    for t in np.unique(text_of[target]):
        sel = text_of[target] == t
        out[int(t)][in_text[target[sel]]] = weight[sel]
    return out


def sqrt_exposure_weights(texts: Sequence[np.ndarray], context_width: int) -> list[np.ndarray]:
    """The square root of :func:`exposure_weights`, ``T`` arrays ``(L_t,)``: with
    ``aggregate="mean"`` a window's candidate probabilities are means over its ``n``
    occurrences, whose noise falls as ``1 / sqrt(n)``, so ``sqrt(n)`` weighs each window by the
    precision of its mean (on the neural benchmark it detects with fewer fed tokens than the
    linear count or uniform weights). Key-free, like the counts."""
    return [np.sqrt(w) for w in exposure_weights(texts, context_width)]


def entropy_weights(distributions: Sequence[PositionDistributions]) -> list[np.ndarray]:
    """The suspect's entropy at every position: ``-sum_v p(v) ln p(v)`` over its top-``K``
    candidates (``probs`` ``(L, K)``; non-finite or non-positive probabilities contribute 0).

    Returns one float64 array ``(L,)`` per text, non-negative (each term is, as ``p <= 1``): the
    top-``K`` part of the suspect's entropy, a lower bound of the full entropy (equal to it when
    the candidates cover the vocabulary). It depends on the suspect's distributions only, which
    under H0 are independent of the key: fixed weights for :func:`distribution_evidence`.
    """
    out = []
    for d in distributions:
        p = np.asarray(d.probs, dtype=np.float64)
        ok = np.isfinite(p) & (p > 0)
        safe = np.where(ok, p, 1.0)
        out.append(np.maximum(-(np.where(ok, safe * np.log(safe), 0.0)).sum(axis=1), 0.0))
    return out


def read_distributions(model, texts: Sequence[np.ndarray], *, top_k: int = 64, reference=None,
                       batch_size: int = 256) -> list[PositionDistributions]:
    """Teacher-force ``texts`` (owner ids, ``(L,)`` each) through ``model`` and keep its top-``K``
    next-token candidates at every position (and ``reference``'s probabilities of them).

    ``model`` and ``reference`` have ``context_size`` and ``next_logprobs(contexts (b, c)) ->
    (b, V)`` (the simulation models; a transformers checkpoint reads whole texts at once with
    :meth:`fingerprint.interop.open_weights.OpenWeightsModel.read` instead).
    Position ``j`` is predicted from ``text[:j]`` (its last ``c`` tokens, ``-1``-padded on the left).
    """
    if top_k < 1:
        raise ParameterError(f"top_k must be >= 1, got {top_k}")
    out = []
    for seq in texts:
        seq = np.asarray(seq, dtype=np.int64)
        L = seq.size
        cands = np.full((L, top_k), -1, dtype=np.int64)
        probs = np.zeros((L, top_k))
        ref = None if reference is None else np.zeros((L, top_k))
        c = int(model.context_size)
        padded = np.concatenate((np.full(c, -1, dtype=np.int64), seq))
        contexts = np.lib.stride_tricks.sliding_window_view(padded, c)[:L]  # row j: the c tokens before j
        for a in range(0, L, batch_size):
            lp = np.asarray(model.next_logprobs(np.ascontiguousarray(contexts[a:a + batch_size])))
            k = min(top_k, lp.shape[1])
            top = np.argpartition(-lp, k - 1, axis=1)[:, :k]
            cands[a:a + lp.shape[0], :k] = top
            probs[a:a + lp.shape[0], :k] = np.exp(np.take_along_axis(lp, top, axis=1))
            if reference is not None and ref is not None:
                rc = int(reference.context_size)
                rpad = np.concatenate((np.full(rc, -1, dtype=np.int64), seq))
                rctx = np.lib.stride_tricks.sliding_window_view(rpad, rc)[a:a + lp.shape[0]]
                rlp = np.asarray(reference.next_logprobs(np.ascontiguousarray(rctx)))
                ref[a:a + lp.shape[0], :k] = np.exp(np.take_along_axis(rlp, top, axis=1))
        out.append(PositionDistributions(seq, cands, probs, ref))
    return out
