import numpy as np
import pytest

from fingerprint.errors import TokenError
from fingerprint.keys import FingerprintKey
from fingerprint.windows import (WindowFilter, first_occurrence_mask, ngram_ids, select_tuples,
                                 tuple_table)

SCHEMES = [("greenlist", {"delta": 2.0}), ("gumbel", {}), ("tournament", {})]


def flat(texts):
    tokens = np.concatenate([np.asarray(t, dtype=np.int64) for t in texts]) if texts else np.zeros(0, int)
    offsets = np.concatenate(([0], np.cumsum([len(t) for t in texts]))).astype(np.int64)
    return tokens, offsets


def test_first_occurrence_mask_keeps_earliest():
    ids = np.array([5, 3, 5, 9, 3, 3, 1], dtype=np.uint64)
    assert first_occurrence_mask(ids).tolist() == [True, True, False, True, False, False, True]
    assert first_occurrence_mask(np.zeros(0, np.uint64)).size == 0


def test_table_positions_and_windows():
    tokens, offsets = flat([[1, 2, 3, 4], [5, 6], [7]])
    t = tuple_table(tokens, offsets, 2, vocab_size=10)
    assert t.positions.tolist() == [2, 3]
    assert t.windows().tolist() == [[1, 2], [2, 3]]
    assert t.next_tokens().tolist() == [3, 4]
    t0 = tuple_table(tokens, offsets, 0, vocab_size=10)
    assert len(t0) == 7 and t0.windows().shape == (7, 0)


def test_ids_exact_and_hashed_agree_on_equality():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, 5000)
    ends = np.arange(10, 5000)
    for vocab in (64, 2**31):  # packed (4 * 6 bits) and hashed (4 * 31 bits > 64)
        ids = ngram_ids(tokens, ends, 4, vocab)
        grams = [tuple(tokens[e - 3:e + 1]) for e in ends]
        same_ids = ids[:, None] == ids[None, :200]
        same_grams = np.array([[g == h for h in grams[:200]] for g in grams])
        assert np.array_equal(same_ids, same_grams)


@pytest.mark.parametrize("name,params", SCHEMES)
def test_repeated_text_counts_once(teacher, name, params):
    key = FingerprintKey.generate(name, vocab_size=teacher.vocab_size, **params)
    scheme = key.scheme_object()
    text = teacher.tokens[teacher.offsets[100]:teacher.offsets[100] + 300]
    once = scheme.score(*flat([text]))
    many = scheme.score(*flat([text] * 100))
    r_once = scheme.test(once.scores[select_tuples(once.table).mask])
    sel = select_tuples(many.table)
    r_many = scheme.test(many.scores[sel.mask])
    assert r_once == r_many
    assert sel.counts.duplicate_tuple == 99 * len(once.table) + (len(once.table) - sel.counts.scored)


def test_copied_prompt_is_not_evidence(teacher):
    """A clean model that copies a fingerprinted prompt verbatim must not look fingerprinted."""
    from fingerprint.sim.generate import generate

    rng = np.random.default_rng(3)
    key = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size, delta=4.0)
    scheme = key.scheme_object()
    seeds = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i] + 8] for i in range(200, 220)]
    marked = generate(teacher.model, seeds, 150, rng, scheme=scheme)  # fingerprinted prompts
    plain = generate(teacher.model, marked, 60, rng)  # an unfingerprinted suspect answering them
    responses = [np.concatenate([m, p]) for m, p in zip(marked, plain)]  # echoes the prompt first
    tokens, offsets = flat(responses)
    p_tokens, p_offsets = flat(marked)
    scored = scheme.score(tokens, offsets)
    naive = scheme.test(scored.scores[select_tuples(scored.table).mask])
    assert naive.log10_pvalue < -10  # without the rule the copy looks guilty
    sel = select_tuples(scored.table, prompt_tokens=p_tokens, prompt_offsets=p_offsets)
    result = scheme.test(scored.scores[sel.mask])
    assert result.log10_pvalue > -3
    assert sel.counts.prompt_window >= sum(len(m) - 2 for m in marked)


def test_prompt_exclusion_is_per_exchange():
    tokens, offsets = flat([[1, 2, 3, 4], [1, 2, 3, 4]])
    p_tokens, p_offsets = flat([[1, 2, 3], []])
    t = tuple_table(tokens, offsets, 2, vocab_size=10)
    sel = select_tuples(t, prompt_tokens=p_tokens, prompt_offsets=p_offsets)
    # text 0: window (1,2) is in its prompt, (2,3) too; text 1's identical tuples survive once
    assert sel.mask.tolist() == [False, False, True, True]
    assert sel.counts.prompt_window == 2 and sel.counts.duplicate_tuple == 0


def test_prompt_exclusion_h0_uses_tokens():
    tokens, offsets = flat([[1, 2, 3]])
    p_tokens, p_offsets = flat([[2]])
    t = tuple_table(tokens, offsets, 0, vocab_size=10)
    sel = select_tuples(t, prompt_tokens=p_tokens, prompt_offsets=p_offsets)
    assert sel.mask.tolist() == [True, False, True]


def test_window_filter_selects_windows_not_tuples():
    served, s_off = flat([[1, 2, 3, 9]])
    wf = WindowFilter.from_tokens(served, s_off, 2, vocab_size=10)
    assert len(wf) == 2  # windows (1,2), (2,3)
    tokens, offsets = flat([[1, 2, 5, 7, 2, 3, 8]])
    t = tuple_table(tokens, offsets, 2, vocab_size=10)
    sel = select_tuples(t, window_filter=wf)
    # (1,2)->5 kept although the served text had (1,2)->3: the token does not matter
    assert t.next_tokens(sel.mask).tolist() == [5, 8]
    assert sel.counts.window_filter == 3


def test_counts_add_up():
    rng = np.random.default_rng(1)
    texts = [rng.integers(0, 20, n) for n in (0, 1, 5, 50, 50)]
    texts.append(texts[-1])
    tokens, offsets = flat(texts)
    p_tokens, p_offsets = flat([rng.integers(0, 20, 10) for _ in texts])
    t = tuple_table(tokens, offsets, 2, vocab_size=20)
    wf = WindowFilter.from_tokens(*flat([rng.integers(0, 20, 100)]), 2, vocab_size=20)
    c = select_tuples(t, prompt_tokens=p_tokens, prompt_offsets=p_offsets, window_filter=wf).counts
    assert c.tokens_read == tokens.size
    assert c.no_full_window + c.prompt_window + c.window_filter + c.duplicate_tuple + c.scored == c.tokens_read


@pytest.mark.parametrize("tokens,offsets,match", [
    (np.array([1.0, 2.0]), np.array([0, 2]), "integer"),
    (np.array([1, -2]), np.array([0, 2]), "token id -2 at position 1"),
    (np.array([1, 10]), np.array([0, 2]), "token id 10 at position 1 .text 0. is outside the vocabulary"),
    (np.array([[1, 2]]), np.array([0, 2]), "flat"),
    (np.array([1, 2]), np.array([0, 3]), "offsets"),
    (np.array([1, 2]), np.array([0, 2, 1]), "offsets"),
])
def test_bad_tokens(tokens, offsets, match):
    with pytest.raises(TokenError, match=match):
        tuple_table(tokens, offsets, 2, vocab_size=10)


def test_empty_texts_are_fine():
    t = tuple_table(np.zeros(0, np.int64), np.array([0, 0, 0]), 2, vocab_size=10)
    sel = select_tuples(t)
    assert len(t) == 0 and sel.counts.scored == 0


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 5), max_size=300))
def test_first_occurrence_matches_unique(values):
    ids = np.array(values, dtype=np.uint64)
    expected = np.zeros(ids.size, dtype=bool)
    if ids.size:
        expected[np.unique(ids, return_index=True)[1]] = True
    assert np.array_equal(first_occurrence_mask(ids), expected)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(0, 7), max_size=12), max_size=8), st.integers(0, 3))
def test_selection_scores_each_distinct_tuple_once(texts, h):
    tokens, offsets = flat(texts)
    t = tuple_table(tokens, offsets, h, vocab_size=8)
    sel = select_tuples(t)
    kept = {tuple(w) + (int(x),) for w, x in zip(t.windows(sel.mask).tolist(), t.next_tokens(sel.mask))}
    every = {tuple(w) + (int(x),) for w, x in zip(t.windows().tolist(), t.next_tokens())}
    assert kept == every and sel.counts.scored == len(every)


def test_first_occurrence_small_and_hashed_ids_agree_with_unique():
    """Both paths: ids small enough to pack with their position, and 64-bit hashed ids."""
    rng = np.random.default_rng(3)
    for ids in (rng.integers(0, 3000, size=20_000).astype(np.uint64),
                rng.integers(2**62, 2**63, size=20_000, dtype=np.int64).astype(np.uint64)[rng.integers(0, 20_000,
                                                                                                        size=20_000)]):
        _, first = np.unique(ids, return_index=True)
        expected = np.zeros(ids.size, dtype=bool)
        expected[first] = True
        assert np.array_equal(first_occurrence_mask(ids), expected)
