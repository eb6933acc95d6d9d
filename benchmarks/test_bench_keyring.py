"""Keyring verification at scale: 25,000 cohort keys against 1M distinct tuples.

The whole of ``verify_keyring`` (key derivation, one AES pass per cohort key over the tuples
encoded once, every cohort's exact p-value and Clopper-Pearson interval, Holm and BH over all
cohorts, 100 decoy cohorts), in its own process so its peak RSS is its own.

Run: ``python -m pytest benchmarks/test_bench_keyring.py -s`` (about 1.5 minutes), or the
measured part alone: ``python benchmarks/test_bench_keyring.py``.
"""

from __future__ import annotations

import sys
import time

N_TUPLES = 1_000_000
N_COHORTS = 25_000
VOCAB = 50_000


def run() -> None:
    import numpy as np

    from fingerprint.keyring import Keyring
    from fingerprint.verify import VerifyOptions
    from fingerprint.verify.evidence import text_evidence
    from fingerprint.verify.keyring import verify_keyring

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB, N_TUPLES + 2)
    ev = text_evidence(tokens, np.array([0, tokens.size]), context_width=2, vocab_size=VOCAB)
    ring = Keyring.from_seed("bench", "greenlist", vocab_size=VOCAB, cohorts=N_COHORTS)
    t0 = time.perf_counter()
    result = verify_keyring(ev, ring, options=VerifyOptions(n_decoys=100))
    wall = time.perf_counter() - t0
    assert len(ev) >= 0.999 * N_TUPLES and len(result.cohorts) == N_COHORTS
    print(f"{wall:.2f} {len(ev)} {result.verdict} {result.global_log10_pvalue:.3f}")


def test_25k_cohort_keys_1m_tuples(benchmark):
    from conftest import run_measured

    wall, rss = benchmark.pedantic(run_measured, args=([sys.executable, __file__],), rounds=1, iterations=1)
    benchmark.extra_info.update(process_wall_s=wall, peak_rss_mib=rss,
                                key_tuple_scores_per_s=N_COHORTS * N_TUPLES / wall)
    assert rss > 0
    print(f"\nkeyring: {N_COHORTS:,} cohort keys x {N_TUPLES:,} tuples: {wall:.1f} s for the whole process "
          f"({N_COHORTS * N_TUPLES / wall / 1e6:.0f}M key-tuple scores/s), peak RSS {rss:,.0f} MiB")


if __name__ == "__main__":
    run()
