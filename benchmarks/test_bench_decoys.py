"""Decoy keys: 100 keys re-scoring 1M distinct tuples (encoded once), as `verify` does.

Run: ``python -m pytest benchmarks/test_bench_decoys.py -s``.
"""

from __future__ import annotations

import numpy as np

from conftest import traced_peak_mib
from fingerprint.keys import FingerprintKey
from fingerprint.prf import encode_tuples

N_TUPLES = 1_000_000
N_DECOYS = 100


def decoy_totals(key: FingerprintKey, blocks: np.ndarray) -> np.ndarray:
    return np.array([d.scheme_object().scores_of_blocks(blocks).sum(dtype=np.float64)
                     for d in key.decoys(N_DECOYS, seed=0)])


def test_100_decoys_1m_tuples(benchmark):
    rng = np.random.default_rng(0)
    blocks = encode_tuples(rng.integers(0, 50_000, size=(N_TUPLES, 2)), rng.integers(0, 50_000, size=N_TUPLES))
    key = FingerprintKey(bytes(32), "greenlist", {}, 50_000)
    totals = benchmark.pedantic(decoy_totals, args=(key, blocks), rounds=1, iterations=1)
    assert totals.shape == (N_DECOYS,) and abs(totals.mean() / N_TUPLES - 0.25) < 0.01
    wall = benchmark.stats.stats.median
    peak = traced_peak_mib(decoy_totals, key, blocks)
    benchmark.extra_info.update(wall_s=wall, tuple_scores_per_s=N_TUPLES * N_DECOYS / wall, peak_traced_mib=peak)
    print(f"\ndecoys: {N_DECOYS} keys x {N_TUPLES:,} tuples in {wall:.1f} s "
          f"({N_TUPLES * N_DECOYS / wall / 1e6:.1f}M tuple scores/s), peak traced {peak:,.0f} MiB")
