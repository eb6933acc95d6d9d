"""Scoring plus de-duplication of 1M and 10M pre-tokenized ids, per scheme, on one core.

Run: ``python -m pytest benchmarks/ --benchmark-columns=min,median,max``. The token rate and
the peak traced memory are in each benchmark's ``extra_info`` and printed at the end.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import traced_peak_mib
from fingerprint.prf import encode_tuples
from fingerprint.schemes import make_scheme
from fingerprint.schemes.hf_kgw import hashing_key_secret
from fingerprint.schemes.hf_synthid import synthid_keys_secret
from fingerprint.windows import select_tuples, tuple_table

VOCAB = 50_000
RATES: dict[str, tuple[float, float]] = {}


def zipf_corpus(n_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_tokens`` ids with Zipf-like frequencies (as in text), in texts of 500 tokens."""
    rng = np.random.default_rng(0)
    tokens = (rng.zipf(1.2, n_tokens) - 1) % VOCAB
    return tokens.astype(np.int64), np.arange(0, n_tokens + 1, 500, dtype=np.int64)


@pytest.fixture(scope="module")
def corpora() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {n: zipf_corpus(n) for n in (1_000_000, 10_000_000)}


def score_and_test(scheme, tokens, offsets):
    table = tuple_table(tokens, offsets, scheme.context_width, vocab_size=scheme.vocab_size)
    sel = select_tuples(table)
    blocks = encode_tuples(table.windows(sel.mask), table.next_tokens(sel.mask))
    scores = scheme.scores_of_blocks(blocks)
    keep = scheme.distinct_mask(blocks)
    if scheme.null_depends_on_tuples:
        return scheme.set_null(blocks[keep]).test(float(scores[keep].sum()))
    return scheme.test(scores if keep is None else scores[keep])


SCHEMES = {
    "greenlist": lambda: make_scheme("greenlist", bytes(32), VOCAB),
    "gumbel": lambda: make_scheme("gumbel", bytes(32), VOCAB),
    "tournament": lambda: make_scheme("tournament", bytes(32), VOCAB),
    "hf-kgw": lambda: make_scheme("hf-kgw", hashing_key_secret(15485863), VOCAB),
    "hf-synthid": lambda: make_scheme("hf-synthid", synthid_keys_secret(list(range(1, 31))), VOCAB),
}
CASES = [(name, n) for n in (1_000_000, 10_000_000) for name in SCHEMES
         if not (name == "hf-kgw" and n > 1_000_000)]  # hf-kgw: one randperm per distinct seed


@pytest.mark.parametrize("name,n_tokens", CASES)
def test_score_dedup(benchmark, corpora, name, n_tokens):
    scheme = SCHEMES[name]()
    rounds = 1 if name == "hf-kgw" else 3
    result = benchmark.pedantic(score_and_test, args=(scheme, *corpora[n_tokens]), rounds=rounds,
                                warmup_rounds=0 if name == "hf-kgw" else 1)
    assert result.n > 0
    rate = n_tokens / benchmark.stats.stats.median
    peak = traced_peak_mib(score_and_test, scheme, *corpora[n_tokens])
    benchmark.extra_info.update(tokens_per_s=rate, peak_traced_mib=peak)
    RATES[f"{name} {n_tokens // 1_000_000}M"] = (rate, peak)


def test_report_rates():
    for name, (rate, peak) in RATES.items():
        print(f"\n{name:<16} {rate / 1e6:7.2f}M tokens/s, peak traced {peak:,.0f} MiB "
              f"(scoring + de-duplication + exact test, one core)")
