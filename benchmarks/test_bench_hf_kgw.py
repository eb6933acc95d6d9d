"""hf-kgw (transformers' KGW watermark, reproduced bit for bit) through the verify pipeline at
forensic scale: 1M suspect ids, with and without 100 decoy keys.

What is timed is what ``fingerprint verify`` runs on token ids: ``text_evidence`` (selection,
de-duplication) then ``verify_evidence`` (the scheme's green flags and (seed, token)
de-duplication per key and per decoy key, the exact test, the decoys' empirical null,
trajectory, per-response scores). The ids are the scoring suite's: Zipf-distributed (exponent
1.2) modulo the vocabulary, in texts of 500.

Configurations (each in its own process: its peak RSS is its own, and the membership kernel is
loaded there as a user's run would load it):

* lefthash, transformers' context width 1, V = 50,257 (GPT-2) and 151,646 (Qwen): no decoys
  and 100 decoys;
* selfhash, context width 4, V = 50,257: no decoys;
* lefthash at V = 50,257 with the numpy kernel (``FINGERPRINT_HF_KGW_KERNEL=numpy``, what runs
  without numba): no decoys.

Run: ``python -m pytest benchmarks/test_bench_hf_kgw.py -s`` (about 10 minutes on 2 cores), or
one configuration: ``python benchmarks/test_bench_hf_kgw.py --vocab 50257 --decoys 100``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

N_TOKENS = 1_000_000
HASHING_KEY = 15485863
CASES = [  # (seeding, transformers' context width, vocab, decoys, kernel)
    ("lefthash", 1, 50_257, 0, "auto"),
    ("lefthash", 1, 50_257, 100, "auto"),
    ("lefthash", 1, 151_646, 0, "auto"),
    ("lefthash", 1, 151_646, 100, "auto"),
    ("selfhash", 4, 50_257, 0, "auto"),
    ("lefthash", 1, 50_257, 0, "numpy"),
]
RESULTS: dict[str, dict] = {}


def zipf_ids(vocab: int, n_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_tokens`` ids with Zipf-like frequencies, in texts of 500 (the scoring suite's corpus)."""
    rng = np.random.default_rng(0)
    tokens = ((rng.zipf(1.2, n_tokens) - 1) % vocab).astype(np.int64)
    return tokens, np.arange(0, n_tokens + 1, 500, dtype=np.int64)


def worker(seeding: str, context_width: int, vocab: int, n_decoys: int, n_tokens: int) -> dict:
    """One configuration, in this process: timings, items, result and peak RSS."""
    from fingerprint.keys import FingerprintKey
    from fingerprint.schemes.hf_kgw import hashing_key_secret
    from fingerprint.verify import VerifyOptions, text_evidence, verify_evidence

    tokens, offsets = zipf_ids(vocab, n_tokens)
    key = FingerprintKey(hashing_key_secret(HASHING_KEY), "hf-kgw",
                         {"seeding": seeding, "context_width": context_width}, vocab)
    h = key.scheme_object().context_width
    wall0, cpu0 = time.perf_counter(), time.process_time()
    evidence = text_evidence(tokens, offsets, context_width=h, vocab_size=vocab)
    wall1 = time.perf_counter()
    result = verify_evidence(evidence, key, options=VerifyOptions(n_decoys=n_decoys)).results[0]
    wall2 = time.perf_counter()
    return {"seeding": seeding, "context_width": context_width, "vocab": vocab, "decoys": n_decoys,
            "tokens": n_tokens, "items": len(evidence), "scored": result.counts.scored,
            "evidence_s": wall1 - wall0, "verify_s": wall2 - wall1, "wall_s": wall2 - wall0,
            "cpu_s": time.process_time() - cpu0, "tokens_per_s": n_tokens / (wall2 - wall0),
            "log10_pvalue": result.test.log10_pvalue,
            "decoy_ks_pvalue": result.decoys.ks_pvalue if result.decoys else None,
            "kernel": os.environ.get("FINGERPRINT_HF_KGW_KERNEL", "auto"), "cpus": len(os.sched_getaffinity(0)),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_case(seeding: str, context_width: int, vocab: int, n_decoys: int, kernel: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--seeding", seeding, "--context-width",
           str(context_width), "--vocab", str(vocab), "--decoys", str(n_decoys)]
    env = {**os.environ, "FINGERPRINT_HF_KGW_KERNEL": kernel}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _label(seeding: str, context_width: int, vocab: int, n_decoys: int, kernel: str) -> str:
    return f"{seeding} cw={context_width} V={vocab:,} decoys={n_decoys}" + ("" if kernel == "auto" else f" [{kernel}]")


@pytest.mark.parametrize("seeding,context_width,vocab,n_decoys,kernel", CASES)
def test_hf_kgw_verify_1m(benchmark, seeding, context_width, vocab, n_decoys, kernel):
    out = benchmark.pedantic(run_case, args=(seeding, context_width, vocab, n_decoys, kernel), rounds=1,
                             iterations=1)
    assert out["tokens"] == N_TOKENS and out["scored"] > 0
    assert -6 < out["log10_pvalue"] <= 0  # the ids are independent of the key
    benchmark.extra_info.update(out)
    RESULTS[_label(seeding, context_width, vocab, n_decoys, kernel)] = out


def test_report():
    for label, r in RESULTS.items():
        print(f"\n{label:<44} {r['wall_s']:7.1f} s wall ({r['cpu_s']:6.1f} s CPU, {r['cpus']} cores), "
              f"{r['tokens_per_s'] / 1e6:6.3f}M tokens/s, {r['items']:,} tuples, peak RSS {r['peak_rss_mib']:,.0f} MiB")


def main() -> int:
    p = argparse.ArgumentParser(description="one hf-kgw verify configuration; prints JSON")
    p.add_argument("--seeding", default="lefthash", choices=["lefthash", "selfhash"])
    p.add_argument("--context-width", type=int, default=1)
    p.add_argument("--vocab", type=int, default=50_257)
    p.add_argument("--decoys", type=int, default=0)
    p.add_argument("--tokens", type=int, default=N_TOKENS)
    a = p.parse_args()
    print(json.dumps(worker(a.seeding, a.context_width, a.vocab, a.decoys, a.tokens)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
