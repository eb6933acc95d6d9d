"""`fingerprint strength` on 1,000 responses (the CI guard's budget: 60 s on this machine).

The CLI run includes the distillation proxy (``fingerprint.apps.radioactivity.TrigramProxy``);
the in-process run splits the time between the guard's own metrics (``measure_strength``
without a proxy: the verify pipeline, per-response detection, the mixture fit) and the proxy.

Run: ``python -m pytest benchmarks/test_bench_strength.py -s``.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest

from conftest import run_measured
from fingerprint.apps.radioactivity import TrigramProxy
from fingerprint.corpus import read_exchanges
from fingerprint.keys import FingerprintKey
from fingerprint.sim.distill import corpus_prompts
from fingerprint.sim.generate import generate
from fingerprint.sim.teacher import build_teacher
from fingerprint.strength import Thresholds, evaluate, measure_strength


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_strength")
    teacher = build_teacher()
    key = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size)
    key_path = key.save(d / "k.json")
    rng = np.random.default_rng(0)
    prompts, _ = corpus_prompts(teacher, 1000, length=12, rng=rng)
    answers = generate(teacher.model, prompts, 150, rng, scheme=key.scheme_object(), batch_size=500)
    path = d / "release.jsonl"
    with open(path, "w") as fh:
        for i, (p, a) in enumerate(zip(prompts, answers)):
            fh.write(json.dumps({"id": i, "prompt": teacher.tokenizer.decode(p),
                                 "response": teacher.tokenizer.decode(a)}) + "\n")
    return d, teacher, key, key_path, path


def test_strength_1000_responses(benchmark, release):
    d, teacher, _key, key_path, path = release
    cmd = [sys.executable, "-m", "fingerprint.cli", "strength", str(path), "--key", str(key_path),
           "--tokenizer", teacher.tokenizer.source, "--quiet", "--json", str(d / "s.json")]

    wall, peak_mib = benchmark.pedantic(run_measured, args=(cmd,), rounds=1, iterations=1)
    benchmark.extra_info.update(wall_s=wall, peak_rss_mib=peak_mib)
    doc = json.loads((d / "s.json").read_text())
    assert doc["passed"], doc["checks"]
    print(f"\nstrength: 1,000 responses x 150 tokens, distillation proxy included: {wall:.1f} s, "
          f"peak RSS {peak_mib:,.0f} MiB; log10 p {doc['metrics']['log10_pvalue']:.1f}, proxy log10 p "
          f"{doc['metrics']['radioactivity_log10_pvalue']:.1f}")


def test_strength_metrics_and_proxy_in_process(benchmark, release):
    _d, teacher, key, _key_path, path = release
    responses = read_exchanges([path], require_prompt=False)

    metrics = benchmark.pedantic(measure_strength, args=(responses, teacher.tokenizer, key), rounds=1, iterations=1)
    proxy = TrigramProxy()
    tokens, offsets = teacher.tokenizer.encode_batch(responses.responses)
    t0 = time.perf_counter()
    radio = proxy(key, tokens, offsets)
    proxy_s = time.perf_counter() - t0
    core_s = benchmark.stats.stats.mean
    benchmark.extra_info.update(core_s=core_s, proxy_s=proxy_s)
    assert evaluate(metrics, Thresholds()).passed and radio < -6
    print(f"\nstrength in process: metrics without the proxy {core_s:.1f} s; {proxy.description}: {proxy_s:.1f} s")
