"""The verify pipeline on 1M and 10M pre-tokenized ids, per scheme, on one core.

What is timed is what users run (``fingerprint.verify``, text mode, no decoys): the evidence
(tuple selection, de-duplication) from ``text_evidence``, then ``verify_evidence`` (scoring
through the scheme, the scheme's exact null, the test, Bayes factor, sufficiency, trajectory and
per-response scores). Decoys are timed by ``test_bench_decoys.py``.

Run: ``python -m pytest benchmarks/ --benchmark-columns=min,median,max``. The token rate and
the peak traced memory are in each benchmark's ``extra_info`` and printed at the end.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import traced_peak_mib
from fingerprint.keys import FingerprintKey
from fingerprint.schemes.hf_kgw import hashing_key_secret
from fingerprint.schemes.hf_synthid import synthid_keys_secret
from fingerprint.verify import KeyResult, VerifyOptions, text_evidence, verify_evidence

VOCAB = 50_000
OPTIONS = VerifyOptions(n_decoys=0)
RATES: dict[str, tuple[float, float]] = {}


def zipf_corpus(n_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_tokens`` ids with Zipf-like frequencies (as in text), in texts of 500 tokens."""
    rng = np.random.default_rng(0)
    tokens = (rng.zipf(1.2, n_tokens) - 1) % VOCAB
    return tokens.astype(np.int64), np.arange(0, n_tokens + 1, 500, dtype=np.int64)


@pytest.fixture(scope="module")
def corpora() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {n: zipf_corpus(n) for n in (1_000_000, 10_000_000)}


def verify_tokens(key: FingerprintKey, tokens: np.ndarray, offsets: np.ndarray) -> KeyResult:
    """One key on one corpus through the pipeline: evidence, then the exact test (no decoys)."""
    evidence = text_evidence(tokens, offsets, context_width=key.scheme_object().context_width, vocab_size=VOCAB)
    return verify_evidence(evidence, key, options=OPTIONS).results[0]


KEYS = {
    "greenlist": lambda: FingerprintKey(bytes(32), "greenlist", {}, VOCAB),
    "gumbel": lambda: FingerprintKey(bytes(32), "gumbel", {}, VOCAB),
    "tournament": lambda: FingerprintKey(bytes(32), "tournament", {}, VOCAB),
    "hf-kgw": lambda: FingerprintKey(hashing_key_secret(15485863), "hf-kgw", {}, VOCAB),
    "hf-synthid": lambda: FingerprintKey(synthid_keys_secret(list(range(1, 31))), "hf-synthid", {}, VOCAB),
}
CASES = [(name, n) for n in (1_000_000, 10_000_000) for name in KEYS
         if not (name == "hf-kgw" and n > 1_000_000)]  # hf-kgw: one randperm per distinct seed


@pytest.mark.parametrize("name,n_tokens", CASES)
def test_score_dedup(benchmark, corpora, name, n_tokens):
    key = KEYS[name]()
    rounds = 1 if name == "hf-kgw" else 3
    result = benchmark.pedantic(verify_tokens, args=(key, *corpora[n_tokens]), rounds=rounds,
                                warmup_rounds=0 if name == "hf-kgw" else 1)
    assert result.test.n > 0 and result.counts.tokens_read == n_tokens
    assert -6 < result.test.log10_pvalue <= 0  # the ids are independent of the key
    rate = n_tokens / benchmark.stats.stats.median
    peak = traced_peak_mib(verify_tokens, key, *corpora[n_tokens])
    benchmark.extra_info.update(tokens_per_s=rate, peak_traced_mib=peak)
    RATES[f"{name} {n_tokens // 1_000_000}M"] = (rate, peak)


def test_report_rates():
    for name, (rate, peak) in RATES.items():
        print(f"\n{name:<16} {rate / 1e6:7.2f}M tokens/s, peak traced {peak:,.0f} MiB "
              f"(verify pipeline without decoys, one core)")
