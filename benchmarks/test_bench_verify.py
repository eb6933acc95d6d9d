"""`fingerprint verify` end to end on ~10M tokens of suspect text (JSONL in, tokenizing
included) with 100 decoys: wall time and peak memory of the whole command.

Run: ``python -m pytest benchmarks/test_bench_verify.py -s``.
"""

from __future__ import annotations

import json
import sys

from conftest import run_measured
from fingerprint.keys import FingerprintKey
from suspect_data import large_suspect_file


def test_verify_10m_tokens_100_decoys(benchmark, tmp_path):
    suspect, tokenizer, vocab = large_suspect_file(10_000_000)
    key = FingerprintKey.generate("greenlist", vocab_size=vocab).save(tmp_path / "k.json")
    report = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "fingerprint.cli", "verify", str(suspect), "--key", str(key),
           "--tokenizer", tokenizer, "--decoys", "100", "--json", str(report), "--quiet"]

    wall, peak_mib = benchmark.pedantic(run_measured, args=(cmd,), rounds=1, iterations=1)
    doc = json.loads(report.read_text())
    assert doc["n_tokens"] > 9_000_000 and doc["decoys"]["k"] == 100
    benchmark.extra_info.update(wall_s=wall, peak_rss_mib=peak_mib, n_tokens=doc["n_tokens"],
                                n_scored=doc["n_scored"])
    print(f"\nverify: {doc['n_tokens']:,} tokens, {doc['n_scored']:,} tuples, 100 decoys: "
          f"{wall:.1f} s wall, peak RSS {peak_mib:,.0f} MiB")
