"""Collection client throughput against a local server (another process) that answers at once.

Run: ``python -m pytest benchmarks/test_bench_collect.py -s``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from conftest import traced_peak_mib
from fingerprint.collect.client import ClientLimits, CollectSettings, PromptRecord, collect

N_REQUESTS = 3000


@pytest.fixture(scope="module")
def instant_server():
    proc = subprocess.Popen([sys.executable, "-m", "fingerprint.cli", "serve", "--instant", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    url = line.split(" on ", 1)[1].split(" ", 1)[0]
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.parametrize("concurrency", [64])
def test_client_throughput(benchmark, instant_server, tmp_path, concurrency):
    prompts = [PromptRecord(f"p{i}", prompt=f"prompt number {i}") for i in range(N_REQUESTS)]
    settings = CollectSettings(base_url=instant_server, model="m", sampling={"max_tokens": 8})
    counter = iter(range(100))

    def run():
        out = tmp_path / f"e{next(counter)}.jsonl"
        return asyncio.run(collect(prompts, settings, out, limits=ClientLimits(concurrency=concurrency)))

    stats = benchmark.pedantic(run, rounds=3, iterations=1)
    assert stats.collected == N_REQUESTS and stats.failed == 0
    rate = N_REQUESTS / benchmark.stats.stats.median
    peak = traced_peak_mib(run)
    benchmark.extra_info.update(requests_per_s=rate, peak_traced_mib=peak)
    print(f"\ncollect: {rate:.0f} requests/s at concurrency {concurrency} "
          f"({N_REQUESTS} requests, evidence written and chained), peak traced {peak:,.0f} MiB")
