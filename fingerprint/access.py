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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy import stats

from .corpus import ExchangeSet, TokenLogprobs
from .errors import InputError, ParameterError
from .keys import FingerprintKey
from .stats import Effect, TestResult, weighted_bernoulli_test, weighted_exponential_test
from .tokenize import token_bytes_table
from .windows import _is_member, _splitmix64, first_occurrence_mask, ngram_ids, row_ids

__all__ = ["VocabMapper", "AccessItems", "logprob_items", "reading_items", "AccessResult", "access_test",
           "verify_access"]


class VocabMapper:
    """Token bytes -> the owner's token id (-1 when no single owner token has those bytes)."""

    def __init__(self, tokenizer) -> None:
        self._map: dict[bytes, int] = {}
        for i, b in enumerate(token_bytes_table(tokenizer)):
            self._map.setdefault(b, i)

    def ids(self, pieces: Sequence[bytes]) -> np.ndarray:
        get = self._map.get
        return np.fromiter((get(p, -1) for p in pieces), dtype=np.int64, count=len(pieces))


@dataclass
class AccessItems:
    """Scored items: ``windows`` ``(n, h)``, ``tokens`` ``(n,)``, ``weights`` ``(n,)`` (suspect
    probabilities; 1 in reading mode), ``text_index`` and ``position`` (``(n,)``, tokens read
    before the item across the corpus, for the trajectory), plus what was dropped and why."""

    mode: str
    windows: np.ndarray
    tokens: np.ndarray
    weights: np.ndarray
    text_index: np.ndarray
    position: np.ndarray
    tokens_read: int
    n_texts: int
    counts: dict[str, int] = field(default_factory=dict)


def _prompt_windows(tokenizer, exchanges: ExchangeSet, h: int, vocab: int) -> np.ndarray:
    """Sorted unkeyed ids of (text index, window) for every window of every prompt."""
    if h == 0:
        return np.zeros(0, dtype=np.uint64)
    p_tokens, p_offsets = tokenizer.encode_batch(exchanges.prompts)
    lengths = np.diff(p_offsets)
    text_of = np.repeat(np.arange(lengths.size), lengths)
    in_text = np.arange(p_tokens.size) - p_offsets[text_of]
    ends = np.flatnonzero(in_text >= h - 1)
    ids = _splitmix64(ngram_ids(p_tokens, ends, h, vocab) ^ _splitmix64(text_of[ends].astype(np.uint64)))
    return np.sort(ids)


def logprob_items(exchanges: ExchangeSet, tokenizer, mapper: VocabMapper, h: int, vocab: int) -> AccessItems:
    """Items of the logprob statistic: per distinct window, the suspect's top-K candidates."""
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
    # prompt exclusion, then one (the first) occurrence of every window across the corpus
    wid = row_ids(windows)
    in_prompt = _is_member(_splitmix64(ngram_ids(windows.ravel(), np.arange(h - 1, windows.size, h), h, vocab)
                                    ^ _splitmix64(text.astype(np.uint64))) if h else np.zeros(0, np.uint64),
                        _prompt_windows(tokenizer, exchanges, h, vocab)) if h else np.zeros(tokens.size, bool)
    counts["prompt_window_items"] = int(in_prompt.sum())
    keep = ~in_prompt
    # first occurrence of each window (by position); all candidates of that position are kept.
    # Items come in position order and share their position's window (and prompt verdict).
    group_start = np.flatnonzero(np.concatenate(([True], pos[1:] != pos[:-1])))
    group_of = np.repeat(np.arange(group_start.size), np.diff(np.concatenate((group_start, [pos.size]))))
    heads = group_start[keep[group_start]]
    first_group = np.zeros(group_start.size, dtype=bool)
    first_group[group_of[heads[first_occurrence_mask(wid[heads])]]] = True
    dup = keep & ~first_group[group_of]
    counts["duplicate_window_items"] = int(dup.sum())
    keep &= ~dup
    # each window's weights scaled to unit norm: every window contributes the same null variance,
    # so spread-out (high-entropy) distributions, where a fingerprint can move mass, count fully
    pos_k, w_k = pos[keep], weights[keep]
    starts = np.flatnonzero(np.concatenate(([True], pos_k[1:] != pos_k[:-1])))
    norms = np.sqrt(np.add.reduceat(w_k * w_k, starts)) if w_k.size else np.zeros(0)
    w_k = w_k / np.repeat(norms, np.diff(np.concatenate((starts, [w_k.size]))))
    return AccessItems("logprobs", windows[keep], tokens[keep], w_k, text[keep], pos_k, read,
                       len(exchanges.exchanges), counts)


def reading_items(exchanges: ExchangeSet, mapper: VocabMapper, h: int, vocab: int, *,
                  exclude_fed_pairs: bool = True) -> AccessItems:
    """Items of reading mode: (window of the fed text, suspect's top-1 prediction).

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
    in_fed = _is_member(pair, fed_ids) if exclude_fed_pairs else np.zeros(pair.size, dtype=bool)
    counts["pair_in_fed_text"] = int(in_fed.sum())
    keep = ~in_fed
    idx = np.flatnonzero(keep)
    first = first_occurrence_mask(pair[idx])
    counts["duplicate_pair"] = int((~first).sum())
    keep[idx[~first]] = False
    return AccessItems("reading", windows[keep], tokens[keep], np.ones(int(keep.sum())), text[keep], pos[keep],
                       read, len(exchanges.exchanges), counts)


@dataclass(frozen=True)
class AccessResult:
    """One key's test on access items; ``decoy_ks_pvalue`` checks the decoys against U(0, 1)."""

    mode: str
    key_id: str
    test: TestResult
    n_items: int
    tokens_read: int
    counts: dict[str, int]
    decoy_log10_pvalues: np.ndarray
    decoy_ks_pvalue: float
    decoy_empirical_pvalue: float
    trajectory: list[tuple[int, int, float]]


def _item_scores(scheme, items: AccessItems) -> np.ndarray:
    return scheme.tuple_scores(items.windows, items.tokens).astype(np.float64)


def access_test(scheme, items: AccessItems, scores: np.ndarray | None = None, upto: int | None = None,
                confidence_level: float = 0.95) -> TestResult:
    """Test the first ``upto`` items (all by default) with the statistic of ``items.mode``."""
    s = _item_scores(scheme, items) if scores is None else scores
    w = items.weights
    if upto is not None:
        s, w = s[:upto], w[:upto]
    if items.mode == "reading":
        return scheme.test_totals(float(s.sum()), int(s.size), confidence_level=confidence_level)
    stat = float((w * s).sum())
    mass = float(w.sum())
    if scheme.name == "greenlist":
        g = scheme.params["gamma"]
        lp = weighted_bernoulli_test(stat, w, g)
        null, var = g, g * (1 - g)
    elif scheme.name == "tournament":
        m = scheme.params["layers"]
        lp = weighted_bernoulli_test(stat, w, 0.5, multiplicity=m)
        stat, mass = stat / m, mass
        null, var = 0.5, 0.25 / m
    else:
        lp = weighted_exponential_test(stat, w)
        null, var = 1.0, 1.0
    value = stat / mass - null if mass > 0 else math.nan
    half = stats.norm.ppf(0.5 + confidence_level / 2) * math.sqrt(var * float((w * w).sum())) / mass if mass else math.nan
    effect = Effect(value, value - half, value + half, confidence_level, "normal (weighted mass; descriptive)")
    return TestResult(f"weighted-{scheme.name}-saddlepoint", stat, int(s.size), null, min(0.0, lp), effect)


def verify_access(exchanges: ExchangeSet, tokenizer, key: FingerprintKey, *, mode: str, n_decoys: int = 100,
                  decoy_seed: int = 0, trajectory_points: int = 20, fed_texts_clean: bool = False,
                  progress: Callable[[str], None] | None = None) -> AccessResult:
    """Logprob statistic (``mode="logprobs"``) or reading mode (``mode="reading"``) for one key."""
    say = progress or (lambda _m: None)
    if mode not in ("logprobs", "reading"):
        raise ParameterError(f"mode must be 'logprobs' or 'reading', got {mode!r}")
    scheme = key.own_scheme_for(tokenizer, f"--mode {mode}")
    h = scheme.context_width
    mapper = VocabMapper(tokenizer)
    say(f"{mode}: mapping the suspect's tokens to the owner's ids")
    items = (logprob_items(exchanges, tokenizer, mapper, h, key.vocab_size) if mode == "logprobs"
             else reading_items(exchanges, mapper, h, key.vocab_size, exclude_fed_pairs=not fed_texts_clean))
    scores = _item_scores(scheme, items)
    test = access_test(scheme, items, scores)
    d_lp = np.empty(n_decoys)
    d_p = np.empty(n_decoys)
    rng = np.random.default_rng([decoy_seed, 0x72656164])
    say(f"{mode}: {n_decoys} decoy keys")
    decoy_scores = []
    for i, dkey in enumerate(key.decoys(n_decoys, seed=decoy_seed)):
        ds = dkey.scheme_object()
        sc = _item_scores(ds, items)
        res = access_test(ds, items, sc)
        d_lp[i] = res.log10_pvalue
        if mode == "reading":
            d_p[i] = float(ds.randomized_pvalues(np.array([res.statistic]), res.n if scheme.name != "tournament"
                                                 else res.n // scheme.params["layers"], rng.random(1))[0])
        else:
            d_p[i] = 10 ** res.log10_pvalue
        if i < 20:
            decoy_scores.append(sc)
    ks = float(stats.kstest(d_p, "uniform").pvalue) if n_decoys else 1.0
    empirical = (1 + int((d_lp <= test.log10_pvalue).sum())) / (n_decoys + 1)
    marks = np.unique(np.geomspace(min(100, max(items.tokens_read, 1)), max(items.tokens_read, 1),
                                   trajectory_points).round().astype(np.int64))
    traj = []
    for mark in marks:
        upto = int(np.searchsorted(items.position, mark))
        traj.append((int(mark), upto, access_test(scheme, items, scores, upto).log10_pvalue))
    return AccessResult(mode, key.key_id, test, int(scores.size), items.tokens_read, items.counts, d_lp, ks,
                        empirical, traj)
