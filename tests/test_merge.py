"""Mergeable evidence: shards of one corpus, merged in any order and grouping, give exactly what
one pass over the whole corpus gives -- the same evidence arrays and counts, and through
``verify_evidence`` the same test (bit for bit), counts, decoys and per-response scores.

Corpora are drawn from a tiny vocabulary so that tuples repeat across shards (the global
de-duplication is what is under test), with empty and one-token texts and prompts that share
windows with their responses (so prompt exclusion drops tuples).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fingerprint import FingerprintKey, ParameterError, VerifyOptions, merge, text_evidence, verify_evidence
from fingerprint.windows import WindowFilter

V = 64  # the keys' (and the evidence's) vocabulary; corpora use only the first few ids
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---- corpora and shards ---------------------------------------------------------------------------

def flat(texts: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.array([t for text in texts for t in text], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum([len(t) for t in texts]))).astype(np.int64)
    return tokens, offsets


@st.composite
def corpora(draw, max_texts: int = 9, max_len: int = 14):
    """(responses, prompts): lists of id lists over a tiny alphabet; prompts are often cut from
    their own response (so prompt exclusion bites), sometimes random, sometimes empty."""
    alphabet = draw(st.integers(2, 5))
    ids = st.integers(0, alphabet - 1)
    n = draw(st.integers(1, max_texts))
    lengths = st.one_of(st.sampled_from([0, 1]), st.integers(0, max_len))
    texts = []
    for _ in range(n):
        size = draw(lengths)
        texts.append(draw(st.lists(ids, min_size=size, max_size=size)))
    prompts = []
    for t in texts:
        kind = draw(st.sampled_from(["copy", "random", "empty"]))
        if kind == "copy" and t:
            a = draw(st.integers(0, len(t) - 1))
            b = draw(st.integers(a, len(t)))
            prompts.append(t[a:b])
        elif kind == "random":
            prompts.append(draw(st.lists(ids, max_size=6)))
        else:
            prompts.append([])
    return texts, prompts


def cuts_strategy(n_texts: int):
    """Sorted cut points 0 = c0 < c1 < ... < ck = n_texts (shard i: texts c_i..c_{i+1} - 1), at
    least two shards when there are two texts (shards without texts: test_empty_shard_merges_in_either_order)."""
    if n_texts < 2:
        return st.just([0, n_texts])
    return st.sets(st.integers(1, n_texts - 1), min_size=1, max_size=5).map(lambda c: [0, *sorted(c), n_texts])


def shard_evidence(texts, prompts, cuts, h: int, *, use_prompts: bool = True, window_filter=None):
    tokens, offsets = flat(texts)
    p_tokens, p_offsets = flat(prompts)
    out = []
    for a, b in zip(cuts, cuts[1:]):
        lo, hi = int(offsets[a]), int(offsets[b])
        plo, phi = int(p_offsets[a]), int(p_offsets[b])
        out.append(text_evidence(tokens[lo:hi], offsets[a:b + 1] - lo, context_width=h, vocab_size=V,
                                 prompt_tokens=p_tokens[plo:phi] if use_prompts else None,
                                 prompt_offsets=p_offsets[a:b + 1] - plo if use_prompts else None,
                                 window_filter=window_filter, text_start=a, token_start=lo))
    return out


def single_pass(texts, prompts, h: int, *, use_prompts: bool = True, window_filter=None):
    tokens, offsets = flat(texts)
    p_tokens, p_offsets = flat(prompts)
    return text_evidence(tokens, offsets, context_width=h, vocab_size=V,
                         prompt_tokens=p_tokens if use_prompts else None,
                         prompt_offsets=p_offsets if use_prompts else None, window_filter=window_filter)


def random_merge(draw, shards):
    """Merge ``shards`` (in corpus order) through a drawn tree of ``merge`` calls: each call gets a
    contiguous run of shards (or of already merged runs) in a drawn order."""

    def combine(group):
        if len(group) == 1:
            return group[0] if draw(st.booleans()) else merge(group[0])
        cut_points = sorted(draw(st.sets(st.integers(1, len(group) - 1), min_size=1, max_size=len(group) - 1)))
        bounds = [0, *cut_points, len(group)]
        parts = [combine(group[a:b]) for a, b in zip(bounds, bounds[1:])]
        parts = [parts[i] for i in draw(st.permutations(list(range(len(parts)))))]
        return merge(*parts)

    return combine(list(shards))


# ---- comparisons ----------------------------------------------------------------------------------

ARRAYS = ("blocks", "dedup_ids", "positions", "text_index", "text_tokens", "text_numbers")


def assert_same_evidence(got, want) -> None:
    assert (got.mode, got.context_width, got.vocab_size) == (want.mode, want.context_width, want.vocab_size)
    for name in ARRAYS:
        g, w = getattr(got, name), getattr(want, name)
        assert g.shape == w.shape, name
        assert g.dtype == w.dtype, name
        assert np.array_equal(g, w), name
    assert (got.weights is None) == (want.weights is None)
    assert got.counts == want.counts
    assert got.counts.dropped == want.counts.dropped
    assert got.text_ids == want.text_ids
    assert (got.text_start, got.token_start) == (want.text_start, want.token_start)
    assert len(got) == len(want) and got.n_texts == want.n_texts and got.n_tokens == want.n_tokens


def bits(x: float) -> str:
    return float(x).hex()


def assert_same_result(got, want) -> None:
    assert len(got.results) == len(want.results)
    assert (got.n_texts, got.n_tokens) == (want.n_texts, want.n_tokens)
    for g, w in zip(got.results, want.results):
        assert bits(g.test.log10_pvalue) == bits(w.test.log10_pvalue)
        assert bits(g.test.statistic) == bits(w.test.statistic)
        assert g.test.n == w.test.n
        assert g.test == w.test or (math.isnan(g.test.effect.value) and math.isnan(w.test.effect.value))
        assert bits(g.holm_log10_pvalue) == bits(w.holm_log10_pvalue)
        assert g.counts == w.counts
        assert g.verdict == w.verdict and g.reason == w.reason
        assert (g.decoys is None) == (w.decoys is None)
        if w.decoys is not None:
            for f in ("k", "seed", "passed"):
                assert getattr(g.decoys, f) == getattr(w.decoys, f)
            for f in ("empirical_pvalue", "ks_pvalue", "log10_pvalue_mean", "log10_pvalue_sd", "effect_mean",
                      "effect_sd", "min_log10_pvalue"):
                a, b = getattr(g.decoys, f), getattr(w.decoys, f)
                assert bits(a) == bits(b) or (math.isnan(a) and math.isnan(b)), f
            assert np.array_equal(g.decoys.log10_pvalues, w.decoys.log10_pvalues)
        gr, wr = g.responses, w.responses
        assert gr.ids == wr.ids
        for f in ("n_tokens", "n_scored", "statistic", "log10_pvalue"):
            assert np.array_equal(getattr(gr, f), getattr(wr, f)), f
        assert len(g.trajectory) == len(w.trajectory)
        for tg, tw in zip(g.trajectory, w.trajectory):
            assert np.array_equal(np.array(tuple(vars(tg).values()), dtype=float),
                                  np.array(tuple(vars(tw).values()), dtype=float), equal_nan=True)


# ---- keys --------------------------------------------------------------------------------------

def make_key(kind: str, h: int, *, lefthash: bool = False) -> FingerprintKey:
    """A key of scheme ``kind`` whose fingerprint window is ``h`` tokens (hf-synthid: h >= 1).

    Secrets are fixed per scheme (not per example), so the schemes' per-secret tables (hf-kgw
    selfhash's permutation of 2**15 entries) stay in their caches across examples."""
    if kind == "greenlist":
        scheme, params = "greenlist", {"context_width": h}
    elif kind == "hf-kgw":  # lefthash: a one-token window; selfhash: transformers' context width - 1 tokens
        scheme, params = "hf-kgw", ({"seeding": "lefthash"} if h == 1 and lefthash
                                    else {"seeding": "selfhash", "context_width": h + 1})
    elif kind == "hf-synthid":
        scheme, params = "hf-synthid", {"ngram_len": h + 1, "depth": 6, "sampling_table_size": 256}
    else:
        raise AssertionError(kind)
    size = 48 if scheme == "hf-synthid" else 32
    return FingerprintKey(hashlib.shake_256(f"test_merge:{kind}".encode()).digest(size), scheme, params, V)


KINDS = ["greenlist", "hf-kgw", "hf-synthid"]


# ---- the property ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=35, **SETTINGS)
@given(data=st.data())
def test_merged_shards_equal_the_single_pass(kind, data):
    texts, prompts = data.draw(corpora())
    h = data.draw(st.integers(1 if kind == "hf-synthid" else 0, 3), label="h")
    use_prompts = data.draw(st.booleans(), label="prompts")
    cuts = data.draw(cuts_strategy(len(texts)), label="cuts")
    key = make_key(kind, h, lefthash=data.draw(st.booleans(), label="lefthash"))
    assert key.scheme_object().context_width == h

    whole = single_pass(texts, prompts, h, use_prompts=use_prompts)
    shards = shard_evidence(texts, prompts, cuts, h, use_prompts=use_prompts)
    merged = random_merge(data.draw, shards)
    assert_same_evidence(merged, whole)

    opts = VerifyOptions(n_decoys=3)
    assert_same_result(verify_evidence(merged, key, options=opts), verify_evidence(whole, key, options=opts))


@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_merge_is_commutative_and_associative(data):
    texts, prompts = data.draw(corpora())
    h = data.draw(st.integers(0, 3), label="h")
    # three contiguous, non-empty shards need at least three texts; pad with fixed ones
    texts, prompts = texts + [[0, 1, 0, 1], [1, 0, 1]], prompts + [[0, 1], []]
    n = len(texts)
    c1 = data.draw(st.integers(1, n - 2), label="c1")
    c2 = data.draw(st.integers(c1 + 1, n - 1), label="c2")
    a, b, c = shard_evidence(texts, prompts, [0, c1, c2, n], h)
    whole = single_pass(texts, prompts, h)
    left = merge(merge(a, b), c)
    right = merge(a, merge(b, c))
    for candidate in (left, right, merge(c, a, b), merge(b, c, a), merge(c, merge(a, b)), merge(merge(b, c), a)):
        assert_same_evidence(candidate, left)
    assert_same_evidence(left, whole)


def test_merge_of_repeated_text_deduplicates_globally():
    """A text repeated in every shard is scored once overall; the extra copies are counted."""
    text = [0, 1, 2, 3, 1, 2]
    texts, prompts = [text] * 4, [[]] * 4
    shards = shard_evidence(texts, prompts, [0, 1, 2, 3, 4], 2)
    assert all(len(s) == 4 for s in shards)  # each shard alone scores its four distinct tuples
    merged = merge(*shards)
    assert len(merged) == 4
    assert merged.counts.dropped["duplicate_tuple"] == 12
    assert merged.counts.scored == 4 and merged.counts.tokens_read == 24
    assert_same_evidence(merged, single_pass(texts, prompts, 2))


def test_overlapping_or_mismatched_shards_raise():
    texts = [[0, 1, 2, 3], [1, 2, 3, 0], [2, 3, 0, 1], [3, 0, 1, 2]]
    prompts = [[]] * 4
    a, b = shard_evidence(texts, prompts, [0, 2, 4], 1)
    with pytest.raises(ParameterError, match="overlap"):
        merge(a, a)
    # shard b' covers texts 1..3 (overlaps a, which covers 0..1)
    tokens, offsets = flat(texts)
    overlapping = text_evidence(tokens[4:], offsets[1:] - 4, context_width=1, vocab_size=V, text_start=1,
                                token_start=4)
    with pytest.raises(ParameterError, match="overlap"):
        merge(a, overlapping)
    with pytest.raises(ParameterError, match="overlap"):
        merge(overlapping, b, a)
    # the same texts again, numbered after the first copy but with the token range of the first
    again = text_evidence(tokens[8:], offsets[2:] - 8, context_width=1, vocab_size=V, text_start=2, token_start=0)
    with pytest.raises(ParameterError):
        merge(a, again)
    other_h = shard_evidence(texts, prompts, [0, 2, 4], 2)[1]
    with pytest.raises(ParameterError):
        merge(a, other_h)
    with pytest.raises(ParameterError):
        merge()


def test_hf_kgw_seed_deduplication_after_the_merge():
    """hf-kgw scores (seed, token) once: windows that share a seed in different shards are one item,
    so the scheme's de-duplication must see the merged evidence -- and does, as in one pass."""
    key = make_key("hf-kgw", 1)  # selfhash, transformers' context width 2: seed = min over (window, token)
    texts = [[a, b, a, b, b] for a in range(4) for b in range(4)]
    prompts = [[] for _ in texts]
    whole = single_pass(texts, prompts, 1)
    merged = merge(*shard_evidence(texts, prompts, list(range(len(texts) + 1)), 1))
    assert_same_evidence(merged, whole)
    opts = VerifyOptions(n_decoys=3)
    got, want = verify_evidence(merged, key, options=opts), verify_evidence(whole, key, options=opts)
    assert_same_result(got, want)
    extra = got.results[0].counts.dropped["duplicate_tuple"] - merged.counts.dropped["duplicate_tuple"]
    assert extra > 0  # the scheme's own (seed, token) de-duplication dropped tuples distinct as (window, token)
    assert got.results[0].counts.scored == len(merged) - extra


@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_window_filter_per_shard_equals_one_pass(data):
    texts, prompts = data.draw(corpora())
    h = data.draw(st.integers(0, 3), label="h")
    served, _ = data.draw(corpora(max_texts=5))
    s_tokens, s_offsets = flat(served)
    wf = WindowFilter.from_tokens(s_tokens, s_offsets, h, vocab_size=V)
    cuts = data.draw(cuts_strategy(len(texts)), label="cuts")
    whole = single_pass(texts, prompts, h, window_filter=wf)
    merged = random_merge(data.draw, shard_evidence(texts, prompts, cuts, h, window_filter=wf))
    assert_same_evidence(merged, whole)
    if h and len(wf) == 0:
        assert len(whole) == 0
    key = make_key("greenlist", h)
    opts = VerifyOptions(n_decoys=3)
    assert_same_result(verify_evidence(merged, key, options=opts), verify_evidence(whole, key, options=opts))


def test_empty_shard_merges_in_either_order():
    """A shard holding no texts (an empty partition) changes nothing, whatever the order."""
    texts, prompts = [[0, 1, 2, 1, 0], [2, 1, 0]], [[], []]
    whole = single_pass(texts, prompts, 1)
    empty, first, second = shard_evidence(texts, prompts, [0, 0, 1, 2], 1)
    assert empty.n_texts == 0
    assert_same_evidence(merge(empty, first, second), whole)
    assert_same_evidence(merge(first, second, empty), whole)


def test_merge_of_non_adjacent_shards_then_the_gap():
    texts = [[0, 1, 0, 1], [1, 0, 1, 0, 1], [0, 0, 1, 1]]
    prompts = [[], [], []]
    a, b, c = shard_evidence(texts, prompts, [0, 1, 2, 3], 1)
    whole = single_pass(texts, prompts, 1)
    assert_same_evidence(merge(a, b, c), whole)
    assert_same_evidence(merge(merge(a, c), b), whole)
    assert_same_evidence(merge(b, merge(c, a)), whole)
