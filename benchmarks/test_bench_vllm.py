"""vllm-gumbel (vLLM's native watermark, reproduced bit for bit in numpy): scoring throughput, one core.

What is timed:

* ``score``: the scheme scoring the distinct tuples of 1M and 10M pre-tokenized ids (Zipf,
  vocab 50k, texts of 500, vLLM's default context width 4), as ``verify`` scores them for every
  key and decoy key: vLLM's Philox4x32-10 context absorption and candidate call per tuple, the
  24-bit mantissa, ``-ln(1 - m / 2**24)``. Tokens/s counts the ids read (the tuples scored are
  about 98% of them);
* ``verify``: the whole pipeline on 1M ids without decoys (``text_evidence`` then
  ``verify_evidence``: selection, de-duplication, scoring, the exact null, Bayes factor,
  trajectory, per-response p-values), one key and the dual key (whose exact tail is a series).

numpy runs on one core. Run: ``python -m pytest benchmarks/test_bench_vllm.py -s``.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import traced_peak_mib
from fingerprint.keys import FingerprintKey
from fingerprint.schemes.vllm_gumbel import vllm_key_secret
from fingerprint.verify import KeyResult, VerifyOptions, text_evidence, verify_evidence

VOCAB = 50_000
VLLM_KEY = 0x0123456789ABCDEF
RATES: dict[str, tuple[float, float]] = {}
PARAMS = {"one key": {}, "dual key": {"algorithm": "dual_key_gumbel"}}


def zipf_corpus(n_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_tokens`` ids with Zipf-like frequencies (as in text), in texts of 500 tokens."""
    rng = np.random.default_rng(0)
    tokens = (rng.zipf(1.2, n_tokens) - 1) % VOCAB
    return tokens.astype(np.int64), np.arange(0, n_tokens + 1, 500, dtype=np.int64)


@pytest.fixture(scope="module")
def corpora() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {n: zipf_corpus(n) for n in (1_000_000, 10_000_000)}


def key_of(name: str) -> FingerprintKey:
    return FingerprintKey(vllm_key_secret(VLLM_KEY), "vllm-gumbel", PARAMS[name], VOCAB)


@pytest.mark.parametrize("name,n_tokens", [("one key", 1_000_000), ("one key", 10_000_000),
                                           ("dual key", 1_000_000)])
def test_score(benchmark, corpora, name, n_tokens):
    scheme = key_of(name).scheme_object()
    evidence = text_evidence(*corpora[n_tokens], context_width=scheme.context_width, vocab_size=VOCAB)
    scores = benchmark.pedantic(scheme.scores_of_blocks, args=(evidence.blocks,), rounds=3, warmup_rounds=1)
    assert scores.shape == (len(evidence),) and np.isfinite(scores).all()
    assert abs(scores.mean() - 1) < 0.01  # the ids are independent of the key
    rate = n_tokens / benchmark.stats.stats.median
    peak = traced_peak_mib(scheme.scores_of_blocks, evidence.blocks)
    benchmark.extra_info.update(tokens_per_s=rate, tuples=len(evidence), peak_traced_mib=peak)
    RATES[f"score, {name}, {n_tokens // 1_000_000}M"] = (rate, peak)


def verify_tokens(key: FingerprintKey, tokens: np.ndarray, offsets: np.ndarray) -> KeyResult:
    evidence = text_evidence(tokens, offsets, context_width=key.scheme_object().context_width, vocab_size=VOCAB)
    return verify_evidence(evidence, key, options=VerifyOptions(n_decoys=0)).results[0]


@pytest.mark.parametrize("name", list(PARAMS))
def test_verify(benchmark, corpora, name):
    key = key_of(name)
    result = benchmark.pedantic(verify_tokens, args=(key, *corpora[1_000_000]), rounds=3, warmup_rounds=1)
    assert result.counts.tokens_read == 1_000_000 and -6 < result.test.log10_pvalue <= 0
    rate = 1_000_000 / benchmark.stats.stats.median
    peak = traced_peak_mib(verify_tokens, key, *corpora[1_000_000])
    benchmark.extra_info.update(tokens_per_s=rate, peak_traced_mib=peak)
    RATES[f"verify, {name}, 1M"] = (rate, peak)


def test_report_rates():
    for name, (rate, peak) in RATES.items():
        print(f"\nvllm-gumbel {name:<22} {rate / 1e6:7.2f}M tokens/s, peak traced {peak:,.0f} MiB (one core)")
