"""The keyed PRF alone (AES-256 CBC-MAC over encoded tuples): 10M tuples, h = 2, one core.

Run: ``python -m pytest benchmarks/test_bench_prf.py -s``.
"""

from __future__ import annotations

import numpy as np

from conftest import traced_peak_mib
from fingerprint.prf import KeyedPRF, encode_tuples

N_TUPLES = 10_000_000


def test_prf_10m_tuples(benchmark):
    rng = np.random.default_rng(0)
    blocks = encode_tuples(rng.integers(0, 50_000, size=(N_TUPLES, 2)), rng.integers(0, 50_000, size=N_TUPLES))
    prf = KeyedPRF(bytes(32))
    values = benchmark.pedantic(prf.values_of_blocks, args=(blocks,), rounds=3, warmup_rounds=1)
    assert values.shape == (N_TUPLES,) and values.dtype == np.uint64
    rate = N_TUPLES / benchmark.stats.stats.median
    peak = traced_peak_mib(prf.values_of_blocks, blocks)
    benchmark.extra_info.update(tuples_per_s=rate, peak_traced_mib=peak)
    print(f"\nPRF: {rate / 1e6:.1f}M tuples/s, peak traced {peak:,.0f} MiB (10M tuples, h = 2)")
