"""Under H0 (text independent of the key) p-values are uniform over keys, for every scheme.

2,000 keys per scheme and text; the keys are decoys from a fixed seed so the test is
deterministic. A Kolmogorov-Smirnov test against U(0, 1) must not reject at 0.01, and the
false-positive rate at alpha = 0.01 must lie in its 99% binomial interval.

Binomial p-values are discrete (valid: P[p <= a] <= a, but not exactly uniform), so the KS
test is applied to their randomized version P[X > k] + U * P[X = k], which is exactly
U(0, 1) under H0; the false-positive rate is counted on the reported p-values themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fingerprint.keys import FingerprintKey
from fingerprint.sim.generate import generate
from fingerprint.windows import select_tuples, tuple_table

N_KEYS = 2000
SCHEMES = [("greenlist", {"context_width": 2}), ("greenlist", {"context_width": 0, "gamma": 0.5}),
           ("gumbel", {}), ("tournament", {}), ("tournament", {"context_width": 4, "layers": 64})]


def null_pvalues(name, params, tokens, offsets, vocab_size, seed):
    base = FingerprintKey.generate(name, vocab_size=vocab_size, **params)
    table = tuple_table(tokens, offsets, base.params["context_width"], vocab_size=vocab_size)
    sel = select_tuples(table)
    windows, nxt = table.windows(sel.mask), table.next_tokens(sel.mask)
    results = []
    for key in base.decoys(N_KEYS, seed=seed):
        scheme = key.scheme_object()
        results.append(scheme.test(scheme.tuple_scores(windows, nxt)))
    return results, sel.counts.scored


def assert_uniform(results, alpha=0.01, seed=0):
    pvalues = np.array([10 ** r.log10_pvalue for r in results])
    if results[0].test == "binomial":
        u = np.random.default_rng(seed).random(len(results))
        k = np.array([r.statistic for r in results])
        n, p = results[0].n, results[0].null_rate
        randomized = stats.binom.sf(k, n, p) + u * stats.binom.pmf(k, n, p)
        assert np.all(randomized <= pvalues + 1e-12)
    else:
        randomized = pvalues
    assert stats.kstest(randomized, "uniform").pvalue > 0.01
    fp = int((pvalues <= alpha).sum())
    lo, hi = stats.binom.interval(0.99, pvalues.size, alpha)
    assert lo <= fp <= hi, f"{fp} false positives of {pvalues.size} at alpha={alpha}"


@pytest.mark.parametrize("name,params", SCHEMES)
def test_uniform_on_human_text(teacher, human_text, name, params):
    pvalues, n = null_pvalues(name, params, *human_text, teacher.vocab_size, seed=2026)
    assert n > 5_000
    assert_uniform(pvalues)


@pytest.mark.parametrize("name,params", SCHEMES[:1] + SCHEMES[2:4])
def test_uniform_on_unfingerprinted_model_text(teacher, name, params):
    rng = np.random.default_rng(5)
    prompts = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i] + 4] for i in range(0, 20000, 200)]
    outs = generate(teacher.model, prompts, 200, rng)
    tokens = np.concatenate(outs)
    offsets = np.arange(len(outs) + 1) * 200
    pvalues, n = null_pvalues(name, params, tokens, offsets, teacher.vocab_size, seed=2027)
    assert n > 5_000
    assert_uniform(pvalues)


def test_uniform_on_heavily_repeated_text(teacher):
    """One paragraph 300 times plus a few others: de-duplication keeps the null exact."""
    para = teacher.tokens[teacher.offsets[50]:teacher.offsets[51]]
    others = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i + 1]] for i in range(5000, 5040)]
    texts = [para] * 300 + others
    tokens = np.concatenate(texts)
    offsets = np.concatenate(([0], np.cumsum([t.size for t in texts])))
    pvalues, _ = null_pvalues("greenlist", {"context_width": 1}, tokens, offsets, teacher.vocab_size, seed=2028)
    assert_uniform(pvalues)
