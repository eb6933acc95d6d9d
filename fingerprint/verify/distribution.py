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
model that reads the same texts shares. ``e_w >= 0`` are optional window weights fixed before
any key is used (exposure: how often the owner served the window). Each window's weights are
scaled to unit norm, so every window carries the same null variance.

**Null.** Under H0 the suspect (and the reference) never learned from the key, so the weights
are independent of it and the scores of distinct (window, token) pairs are independent draws
of the scheme's null: conditional on the weights, ``S`` is a weighted sum of independent
variables with known weights, whose tail the scheme's weighted null gives (the Lugannani-Rice
saddlepoint, checked against decoy keys in every run). Two rules keep it valid when the fed
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
from ..windows import first_occurrence_mask, is_member, row_ids
from .evidence import Evidence, ItemCounts, keep_first_positions

__all__ = ["PositionDistributions", "distribution_evidence"]


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
                          text_ids: Sequence[str] | None = None) -> Evidence:
    """Evidence of reading with distributions (mode ``"reading"``, weighted items).

    ``window_weights``: per text an ``(L,)`` array of non-negative weights of the window ending
    before each position (fixed before any key is used; e.g. exposure counts), or None.
    """
    h = int(context_width)
    if h < 1:
        raise ParameterError("reading with distributions needs a context width h >= 1")
    if window_weights is not None and len(window_weights) != len(texts):
        raise ParameterError(f"window_weights has {len(window_weights)} arrays for {len(texts)} texts")
    counts = {"positions": 0, "unmapped_tokens": 0, "no_full_window": 0, "duplicate_window": 0,
              "unmapped_candidates": 0, "pair_in_fed_text": 0, "duplicate_candidates": 0, "zero_weight_candidates": 0,
              "zero_mass_windows": 0}
    rows_w, rows_t, rows_c, rows_pos, rows_text, fed = [], [], [], [], [], []
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
            if window_weights is not None and (weight < 0).any():
                raise ParameterError(f"window_weights of text {ti} has a negative weight")
            c = np.asarray(t.probs, dtype=np.float64)[j]
            if t.reference_probs is not None:
                c = np.maximum(c - np.asarray(t.reference_probs, dtype=np.float64)[j], 0.0)
            c = np.where(np.isfinite(c), c, 0.0)
            rows_w.append(wins[ok])
            rows_t.append(np.asarray(t.candidates, dtype=np.int64)[j])
            rows_c.append(c * weight[:, None])
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
    pos = np.concatenate(rows_pos)
    text = np.concatenate(rows_text)
    k = cands.shape[1]
    # one position per distinct window across the corpus (its first)
    first = keep_first_positions(row_ids(windows), pos)
    counts["duplicate_window"] = int((~first).sum())
    windows, cands, weights, pos, text = windows[first], cands[first], weights[first], pos[first], text[first]
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
    # per-window unit norm
    norms = np.zeros(n)
    np.add.at(norms, np.repeat(np.arange(n), k)[keep], c_items[keep] ** 2)
    norms = np.sqrt(norms)
    counts["zero_mass_windows"] = int((norms == 0).sum())
    scaled = c_items[keep] / np.repeat(norms, k)[keep]
    dropped = {key: v for key, v in counts.items() if key != "positions"}
    n_items = int(keep.sum())
    ids = tuple(text_ids) if text_ids is not None else tuple(str(i) for i in range(len(texts)))
    return Evidence("reading", h, vocab_size, encode_tuples(w_items[keep], t_items[keep]), pair[keep],
                    pos_items[keep], text_items[keep], scaled, ItemCounts(read, n_items, dropped), ids,
                    np.array(lengths, dtype=np.int64), np.arange(len(texts), dtype=np.int64))


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
