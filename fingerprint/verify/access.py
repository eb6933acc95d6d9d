"""More power from more access: statistics on a suspect's logprobs and reading mode.

**Logprob statistic** (evidence collected with ``--logprobs K``). At each distinct context
window of the suspect's answers (first occurrence across the corpus; prompt windows
excluded) the statistic adds the probability mass the suspect puts on the fingerprinted side
of its top-K tokens, each window's probabilities scaled to unit norm so that every window
carries the same null variance: ``S = sum_w sum_v q_w(v) / ||q_w|| * score(w, v)``. Under H0 the scores of distinct
(window, token) pairs are independent draws of the scheme's null (Bernoulli(gamma) green
flags; m Bernoulli(1/2) g-bits; Exp(1) gumbel scores) and independent of the suspect's
probabilities, so conditional on them ``S`` is a weighted sum of independent variables with
known weights. Its tail is computed with the Lugannani-Rice saddlepoint formula (relative
error far below the test's resolution in the validity tests; checked against decoy keys in
every run). Token strings come back as bytes and are mapped to the owner's token ids; what
does not map is counted.

**Reading mode** (Sander et al. 2024; evidence collected from a completions API with
``--echo --logprobs 1``: the owner's fingerprinted texts are fed to the suspect). At every
position the suspect's top-1 prediction ``v`` is scored against the window of the input,
``(w, v)``. Windows already seen earlier in the same text are skipped and (window, predicted
token) pairs are de-duplicated globally. One more rule keeps the null valid: **a pair that
occurs in any fed text is not scored**. Those pairs were chosen by the fingerprinted sampler,
so they are green more often than gamma, and an innocent model that predicts the text well
would look guilty. Conditional on the fed texts, every other pair's flag is Bernoulli with
probability at most gamma (choosing one token at a window only lowers the others' chances of
being green), so the exact binomial tail stays valid (conservative). That rule costs most of
the power, so the better design feeds **clean** texts from the owner's model (sampled without
the fingerprint: the same windows, independent of the key): the null is then exact and the
rule is switched off (``fed_texts_clean=True``).

**Top-k reading** (evidence collected with ``--echo --logprobs K``, K > 1: the server's top-k
predictions at every prompt position). The same statistic as reading with open weights
(:mod:`.distribution`): at each distinct window of the fed texts the suspect's top-k candidates,
mapped to the owner's ids through their bytes, each weighted by its probability
``exp(logprob)``, the window's weights scaled to unit norm. The mass outside the top k is simply
not scored: the candidates and their weights are fixed by the suspect's outputs (independent of
the key under H0) and only non-negative weights on scored pairs enter the sum, so leaving pairs
out never makes the null's tail wrong, it only gives up what they would have added. This is the
default for reading evidence with K > 1 (:func:`reading_top_k`); K = 1 keeps the top-1 statistic.

**Schemes.** Every scheme is tested in the logprob mode (its :meth:`~fingerprint.schemes.Scheme.null`
with weights) and in reading mode, except where
:meth:`~fingerprint.schemes.Scheme.reading_problem` says why a key cannot be read on fed texts
fingerprinted with it (hf-kgw selfhash and hf-synthid; both read clean fed texts).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from ..corpus import ExchangeSet, TokenLogprobs
from ..errors import InputError, ParameterError
from ..keys import FingerprintKey
from ..prf import encode_tuples
from ..schemes import Scheme
from ..tokenize import token_bytes_table
from ..windows import is_member, ngram_ids, row_ids, text_keyed_ids
from .distribution import PositionDistributions, distribution_evidence
from .evidence import Evidence, ItemCounts, keep_first_positions
from .result import VerifyOptions

__all__ = ["VocabMapper", "logprob_evidence", "reading_evidence", "access_evidence", "access_scheme",
           "reading_top_k", "prompt_distributions", "topk_reading_evidence", "access_notes"]


class VocabMapper:
    """Token bytes -> the owner's token id (-1 when no single owner token has those bytes)."""

    def __init__(self, tokenizer) -> None:
        self._map: dict[bytes, int] = {}
        for i, b in enumerate(token_bytes_table(tokenizer)):
            self._map.setdefault(b, i)

    def ids(self, pieces: Sequence[bytes]) -> np.ndarray:
        get = self._map.get
        return np.fromiter((get(p, -1) for p in pieces), dtype=np.int64, count=len(pieces))


def _prompt_windows(tokenizer, exchanges: ExchangeSet, h: int, vocab: int) -> np.ndarray:
    """Sorted unkeyed ids of (text index, window) for every window of every prompt."""
    if h == 0:
        return np.zeros(0, dtype=np.uint64)
    p_tokens, p_offsets = tokenizer.encode_batch(exchanges.prompts)
    lengths = np.diff(p_offsets)
    text_of = np.repeat(np.arange(lengths.size), lengths)
    in_text = np.arange(p_tokens.size) - p_offsets[text_of]
    ends = np.flatnonzero(in_text >= h - 1)
    ids = text_keyed_ids(ngram_ids(p_tokens, ends, h, vocab), text_of[ends])
    return np.sort(ids)


def logprob_evidence(exchanges: ExchangeSet, tokenizer, mapper: VocabMapper, h: int, vocab: int) -> Evidence:
    """Evidence of the logprob statistic: per distinct window (first position across the corpus, prompt
    windows excluded), the suspect's top-K candidates, weighted by their probabilities scaled to unit
    norm per window."""
    rows_w, rows_t, rows_q, rows_text, rows_pos = [], [], [], [], []
    counts = {"positions": 0, "no_logprobs": 0, "unmapped_tokens": 0, "unmapped_candidates": 0,
              "no_full_window": 0}
    read = 0
    for ti, ex in enumerate(exchanges.exchanges):
        lp: TokenLogprobs | None = ex.logprobs
        if not lp:
            counts["no_logprobs"] += 1
            continue
        chosen = mapper.ids([b for b, _ in lp])
        counts["positions"] += len(lp)
        counts["unmapped_tokens"] += int((chosen < 0).sum())
        k = max((len(c) for _, c in lp), default=0)
        if k == 0:
            raise InputError(f"{ex.source}: logprobs carry no top-k candidates (collect with --logprobs K >= 1)")
        for j in range(h, len(lp)):
            window = chosen[j - h:j]
            if (window < 0).any():
                counts["no_full_window"] += 1
                continue
            cands = lp[j][1]
            cid = mapper.ids([b for b, _ in cands])
            q = np.exp(np.array([x for _, x in cands], dtype=np.float64))
            bad = ~np.isfinite(q)  # a NaN logprob (stored by collect as "NaN") carries no probability
            if bad.any():
                counts["nonfinite_logprobs"] = counts.get("nonfinite_logprobs", 0) + int(bad.sum())
                q[bad] = 0.0
            good = cid >= 0
            counts["unmapped_candidates"] += int((~good).sum())
            for v, qq in zip(cid[good], q[good]):
                rows_w.append(window)
                rows_t.append(v)
                rows_q.append(qq)
                rows_text.append(ti)
                rows_pos.append(read + j)
        read += len(lp)
    if not rows_t:
        raise InputError("no logprobs to score: collect the suspect's answers with --logprobs K")
    windows = np.array(rows_w, dtype=np.int64).reshape(len(rows_t), h)
    tokens = np.array(rows_t, dtype=np.int64)
    weights = np.array(rows_q)
    text = np.array(rows_text, dtype=np.int64)
    pos = np.array(rows_pos, dtype=np.int64)
    text_tokens = np.array([len(ex.logprobs or ()) for ex in exchanges.exchanges], dtype=np.int64)
    # prompt exclusion, then one (the first) position of every window across the corpus; all
    # candidates of that position are kept (they share its window and its prompt verdict)
    in_prompt = (is_member(text_keyed_ids(ngram_ids(windows.ravel(), np.arange(h - 1, windows.size, h), h, vocab),
                                          text), _prompt_windows(tokenizer, exchanges, h, vocab))
                 if h else np.zeros(tokens.size, bool))
    counts["prompt_window_items"] = int(in_prompt.sum())
    keep = ~in_prompt
    idx = np.flatnonzero(keep)
    first = keep_first_positions(row_ids(windows[idx]), pos[idx])
    counts["duplicate_window_items"] = int((~first).sum())
    keep[idx[~first]] = False
    # each window's weights scaled to unit norm: every window contributes the same null variance,
    # so spread-out (high-entropy) distributions, where a fingerprint can move mass, count fully
    pos_k, w_k = pos[keep], weights[keep]
    starts = np.flatnonzero(np.concatenate(([True], pos_k[1:] != pos_k[:-1])))
    norms = np.sqrt(np.add.reduceat(w_k * w_k, starts)) if w_k.size else np.zeros(0)
    per_item = np.repeat(norms, np.diff(np.concatenate((starts, [w_k.size]))))
    # a window whose candidates all have probability 0 (-Infinity logprobs, underflow) says nothing
    massless = np.flatnonzero(keep)[per_item == 0]
    counts["zero_mass_window_items"] = int(massless.size)
    if massless.size:
        keep[massless] = False
        pos_k, w_k, per_item = pos[keep], weights[keep], per_item[per_item > 0]
    w_k = w_k / per_item
    return _evidence("logprobs", h, vocab, windows[keep], tokens[keep], row_ids(windows[keep]), pos_k, text[keep],
                     w_k, read, counts, exchanges, text_tokens)


def reading_evidence(exchanges: ExchangeSet, mapper: VocabMapper, h: int, vocab: int, *,
                     exclude_fed_pairs: bool = True) -> Evidence:
    """Evidence of reading mode: (window of the fed text, suspect's top-1 prediction) pairs.

    ``exclude_fed_pairs=False`` is valid only when the fed texts were not produced with the
    key (e.g. the owner's model sampled without the fingerprint): then the null is exact.
    """
    seqs, preds = [], []
    counts = {"positions": 0, "no_prompt_logprobs": 0, "unmapped_tokens": 0, "unmapped_predictions": 0,
              "no_full_window": 0, "window_seen_in_text": 0, "pair_in_fed_text": 0, "duplicate_pair": 0}
    for ex in exchanges.exchanges:
        plp = ex.prompt_logprobs
        if not plp:
            counts["no_prompt_logprobs"] += 1
            seqs.append(np.zeros(0, np.int64))
            preds.append(np.zeros(0, np.int64))
            continue
        seq = mapper.ids([b for b, _ in plp])
        top1 = mapper.ids([c[0][0] if c else b"\x00\xff" for _, c in plp])
        counts["positions"] += len(plp)
        counts["unmapped_tokens"] += int((seq < 0).sum())
        counts["unmapped_predictions"] += int(sum(1 for _, c in plp if c) - (top1 >= 0).sum())
        seqs.append(seq)
        preds.append(np.where([bool(c) for _, c in plp], top1, -1))
    if not any(len(s) for s in seqs):
        raise InputError("no prompt logprobs to read: collect with --endpoint completions --echo --logprobs 1")
    # every (window, token) pair of the fed texts
    fed = []
    for seq in seqs:
        if seq.size > h:
            m = np.lib.stride_tricks.sliding_window_view(seq, h + 1)
            m = m[(m >= 0).all(axis=1)]
            fed.append(row_ids(m))
    fed_ids = np.sort(np.concatenate(fed)) if fed else np.zeros(0, np.uint64)
    rows_w, rows_t, rows_text, rows_pos = [], [], [], []
    read = 0
    for ti, (seq, pred) in enumerate(zip(seqs, preds)):
        seen: set[bytes] = set()
        for j in range(h, seq.size):
            window = seq[j - h:j]
            if (window < 0).any() or pred[j] < 0:
                counts["no_full_window"] += 1
                continue
            wkey = window.tobytes()
            if wkey in seen:
                counts["window_seen_in_text"] += 1
                continue
            seen.add(wkey)
            rows_w.append(window)
            rows_t.append(pred[j])
            rows_text.append(ti)
            rows_pos.append(read + j)
        read += seq.size
    windows = np.array(rows_w, dtype=np.int64).reshape(len(rows_t), h)
    tokens = np.array(rows_t, dtype=np.int64)
    text = np.array(rows_text, dtype=np.int64)
    pos = np.array(rows_pos, dtype=np.int64)
    pair = row_ids(np.concatenate([windows, tokens[:, None]], axis=1))
    in_fed = is_member(pair, fed_ids) if exclude_fed_pairs else np.zeros(pair.size, dtype=bool)
    counts["pair_in_fed_text"] = int(in_fed.sum())
    keep = ~in_fed
    idx = np.flatnonzero(keep)
    first = keep_first_positions(pair[idx], pos[idx])
    counts["duplicate_pair"] = int((~first).sum())
    keep[idx[~first]] = False
    return _evidence("reading", h, vocab, windows[keep], tokens[keep], pair[keep], pos[keep], text[keep], None,
                     read, counts, exchanges, np.array([q.size for q in seqs], dtype=np.int64))


def _evidence(mode: str, h: int, vocab: int, windows: np.ndarray, tokens: np.ndarray, dedup_ids: np.ndarray,
              positions: np.ndarray, text: np.ndarray, weights: np.ndarray | None, read: int,
              counts: dict[str, int], exchanges: ExchangeSet, text_tokens: np.ndarray) -> Evidence:
    dropped = {k: v for k, v in counts.items() if k != "positions"}
    return Evidence(mode, h, vocab, encode_tuples(windows, tokens), dedup_ids, positions, text, weights,
                    ItemCounts(read, int(tokens.size), dropped), tuple(e.id for e in exchanges.exchanges),
                    text_tokens, np.arange(len(exchanges.exchanges), dtype=np.int64))


def reading_top_k(exchanges: ExchangeSet) -> int:
    """The most candidates the reading evidence holds at any prompt position (the K of
    ``collect --echo --logprobs K``); 0 without prompt logprobs."""
    return max((len(c) for ex in exchanges.exchanges for _, c in (ex.prompt_logprobs or ())), default=0)


def prompt_distributions(exchanges: ExchangeSet, mapper: VocabMapper
                         ) -> tuple[list[PositionDistributions], dict[str, int]]:
    """The suspect's top-k predictions on the fed texts (prompt logprobs from ``--echo``) as one
    :class:`~fingerprint.verify.distribution.PositionDistributions` per exchange, in the owner's ids.

    Per text of ``L`` prompt tokens: ``tokens`` ``(L,)`` (``-1`` where no owner token has the
    token's bytes), ``candidates`` ``(L, K)`` (``-1``: unmapped, or padding where the server
    returned fewer than ``K``) and ``probs`` ``(L, K)`` = ``exp(logprob)`` (0 for a non-finite
    logprob). Also returns counts: ``no_prompt_logprobs`` (exchanges without them) and
    ``nonfinite_logprobs`` (candidates with no owner id are counted by the evidence, where scored).
    """
    k = reading_top_k(exchanges)
    counts = {"no_prompt_logprobs": 0, "nonfinite_logprobs": 0}
    out = []
    for ex in exchanges.exchanges:
        plp = ex.prompt_logprobs or ()
        if not plp:
            counts["no_prompt_logprobs"] += 1
        L = len(plp)
        tokens = mapper.ids([b for b, _ in plp]) if L else np.zeros(0, np.int64)
        sizes = np.fromiter((len(c) for _, c in plp), dtype=np.int64, count=L)
        flat = [cand for _, c in plp for cand in c]
        ids = mapper.ids([b for b, _ in flat])
        lps = np.fromiter((x for _, x in flat), dtype=np.float64, count=len(flat))
        probs_flat = np.exp(lps)
        bad = ~np.isfinite(probs_flat)
        counts["nonfinite_logprobs"] += int(bad.sum())
        probs_flat[bad] = 0.0
        # scatter the ragged rows into (L, K): row of each candidate and its rank within the row
        rows = np.repeat(np.arange(L), sizes)
        rank = np.arange(len(flat)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        cands = np.full((L, max(k, 1)), -1, dtype=np.int64)
        probs = np.zeros((L, max(k, 1)))
        cands[rows, rank] = ids
        probs[rows, rank] = probs_flat
        out.append(PositionDistributions(tokens, cands, probs))
    return out, counts


def topk_reading_evidence(exchanges: ExchangeSet, mapper: VocabMapper, h: int, vocab: int, *,
                          exclude_fed_pairs: bool = True,
                          window_weights: Sequence[np.ndarray] | None = None) -> Evidence:
    """Evidence of reading with the suspect's top-k predictions (``--echo --logprobs K``): the
    distribution statistic of :func:`~fingerprint.verify.distribution.distribution_evidence` on
    :func:`prompt_distributions` (weights ``p_suspect`` of the top-k candidates, unit norm per
    distinct window; the mass outside the top k is not scored, which is conservative: see the
    module docstring). ``window_weights``: per exchange an ``(L,)`` array, as there."""
    dists, extra = prompt_distributions(exchanges, mapper)
    if not any(d.tokens.size for d in dists):
        raise InputError("no prompt logprobs to read: collect with --endpoint completions --echo --logprobs K")
    ev = distribution_evidence(dists, context_width=h, vocab_size=vocab, exclude_fed_pairs=exclude_fed_pairs,
                               window_weights=window_weights, text_ids=[e.id for e in exchanges.exchanges])
    dropped = {**extra, **ev.counts.dropped}
    return replace(ev, counts=ItemCounts(ev.counts.tokens_read, ev.counts.scored, dropped))


def access_scheme(key: FingerprintKey, tokenizer, mode: str, *, fed_texts_clean: bool) -> Scheme:
    """``key``'s scheme for access mode ``mode`` (``"logprobs"`` or ``"reading"``), after the
    checks the mode needs: the key covers the tokenizer's ids, and in reading mode the scheme can
    be read on these fed texts (:meth:`~fingerprint.schemes.Scheme.reading_problem`). Raises
    :class:`InputError` or :class:`ParameterError` naming the key's scheme, the mode and why."""
    if key.vocab_size < tokenizer.vocab_size:
        raise InputError(f"key {key.key_id} has vocab_size {key.vocab_size}, smaller than the tokenizer's "
                         f"{tokenizer.vocab_size}")
    scheme = key.scheme_object()
    if mode == "reading":
        problem = scheme.reading_problem(fed_texts_clean=fed_texts_clean)
        if problem:
            raise ParameterError(f"key {key.key_id} ({key.scheme}) cannot be tested with --mode reading on fed texts "
                                 f"fingerprinted with it: {problem}")
    return scheme


def access_notes(exchanges: ExchangeSet, options: VerifyOptions) -> list[str]:
    """The sentences a report of ``options.mode`` on ``exchanges`` needs: which statistic read them."""
    if options.mode != "reading":
        return []
    k = reading_top_k(exchanges)
    if k > 1:
        return [f"reading statistic: distribution (the suspect's top {k} predictions at every position of the fed "
                f"texts; at each distinct window its candidates weigh p_suspect, scaled to unit norm per window; "
                f"the mass outside the top {k} is not scored, which keeps the null conservative)"]
    return ["reading statistic: top-1 (the suspect's most likely next token at every position of the fed texts, "
            "one binomial trial per distinct (window, prediction) pair; collect --echo --logprobs K with K > 1 "
            "for the distribution statistic)"]


def access_evidence(exchanges: ExchangeSet, tokenizer, key: FingerprintKey, options: VerifyOptions, *,
                    progress: Callable[[str], None] | None = None) -> Evidence:
    """The evidence of ``options.mode`` (``"logprobs"`` or ``"reading"``) for ``key``'s context width.

    Reading evidence with top-k predictions (K > 1, :func:`reading_top_k`) is read with the
    distribution statistic (:func:`topk_reading_evidence`), top-1 evidence with the top-1
    statistic (:func:`reading_evidence`); :func:`access_notes` says which."""
    say = progress or (lambda _m: None)
    scheme = access_scheme(key, tokenizer, options.mode, fed_texts_clean=options.fed_texts_clean)
    h = scheme.context_width
    mapper = VocabMapper(tokenizer)
    say(f"{options.mode}: mapping the suspect's tokens to the owner's ids")
    if options.mode == "logprobs":
        return logprob_evidence(exchanges, tokenizer, mapper, h, key.vocab_size)
    if reading_top_k(exchanges) > 1:
        return topk_reading_evidence(exchanges, mapper, h, key.vocab_size,
                                     exclude_fed_pairs=not options.fed_texts_clean)
    return reading_evidence(exchanges, mapper, h, key.vocab_size, exclude_fed_pairs=not options.fed_texts_clean)
