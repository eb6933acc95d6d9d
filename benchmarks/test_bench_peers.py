"""Peers inside the pytest-benchmark run: fingerprint and transformers' WatermarkDetector on the
same ids (KGW lefthash, h = 1, gamma 0.25) at vocab 8k and 50k; the ratio is in ``extra_info``.
MarkLLM runs only through ``python benchmarks/peers.py`` (it needs its own venv).

Run: ``python -m pytest benchmarks/test_bench_peers.py -s``.
"""

from __future__ import annotations

import pytest

import peers

pytest.importorskip("transformers")


@pytest.mark.parametrize("vocab", [8192, 50257])
def test_fingerprint_vs_transformers(benchmark, vocab):
    def run() -> tuple[dict, dict, dict]:
        return (peers.worker_fingerprint(vocab, 1_000_000, 50_000, "greenlist"),
                peers.worker_fingerprint(vocab, 100_000, 50_000, "hf-kgw"),
                peers.worker_transformers(vocab, 50_000))

    own, hf_kgw, theirs = benchmark.pedantic(run, rounds=1, iterations=1)
    assert (hf_kgw["green_all"], hf_kgw["green_distinct"]) == (theirs["green_all"], theirs["green_distinct"])
    ratio = own["tokens_per_s"] / theirs["tokens_per_s"]
    benchmark.extra_info.update(fingerprint_tokens_per_s=own["tokens_per_s"],
                                hf_kgw_tokens_per_s=hf_kgw["tokens_per_s"],
                                transformers_tokens_per_s=theirs["tokens_per_s"], ratio=ratio)
    print(f"\nvocab {vocab:,}: fingerprint greenlist {own['tokens_per_s'] / 1e6:.1f}M tokens/s, hf-kgw "
          f"{hf_kgw['tokens_per_s']:,.0f}, transformers {theirs['tokens_per_s']:,.0f} -> {ratio:,.0f}x "
          f"(green counts equal: {theirs['green_all']:,} / {theirs['green_distinct']:,})")
