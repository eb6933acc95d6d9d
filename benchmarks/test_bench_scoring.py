"""Scoring plus de-duplication of 10M pre-tokenized ids, per scheme, on one core.

Run: ``python -m pytest benchmarks/ --benchmark-columns=min,median,max``. The token rate is in
each benchmark's ``extra_info`` (``tokens_per_s``) and printed at the end.
"""

from __future__ import annotations

import numpy as np
import pytest

from fingerprint.schemes import make_scheme
from fingerprint.windows import select_tuples, tuple_table

N_TOKENS = 10_000_000
VOCAB = 50_000
RATES: dict[str, float] = {}


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray]:
    """10M ids with Zipf-like frequencies (as in text), in 20,000 texts of 500 tokens."""
    rng = np.random.default_rng(0)
    tokens = (rng.zipf(1.2, N_TOKENS) - 1) % VOCAB
    return tokens.astype(np.int64), np.arange(0, N_TOKENS + 1, 500, dtype=np.int64)


def score_and_test(scheme, tokens, offsets):
    table = tuple_table(tokens, offsets, scheme.context_width, vocab_size=scheme.vocab_size)
    sel = select_tuples(table)
    scores = scheme.tuple_scores(table.windows(sel.mask), table.next_tokens(sel.mask))
    return scheme.test(scores)


@pytest.mark.parametrize("name", ["greenlist", "gumbel", "tournament"])
def test_score_dedup_10m(benchmark, corpus, name):
    scheme = make_scheme(name, bytes(32), VOCAB)
    result = benchmark.pedantic(score_and_test, args=(scheme, *corpus), rounds=3, warmup_rounds=1)
    assert result.n > 0
    rate = N_TOKENS / benchmark.stats.stats.median
    benchmark.extra_info["tokens_per_s"] = rate
    RATES[name] = rate


def test_report_rates():
    for name, rate in RATES.items():
        print(f"\n{name:<11} {rate / 1e6:6.1f}M tokens/s (scoring + de-duplication, 10M ids, one core)")
