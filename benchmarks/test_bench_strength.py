"""`fingerprint strength` on 1,000 responses (the CI guard's budget: 60 s on this machine).

Run: ``python -m pytest benchmarks/test_bench_strength.py -s``.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from conftest import run_measured
from fingerprint.keys import FingerprintKey
from fingerprint.sim.distill import corpus_prompts
from fingerprint.sim.generate import generate
from fingerprint.sim.teacher import build_teacher


def test_strength_1000_responses(benchmark, tmp_path):
    teacher = build_teacher()
    key = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size)
    key_path = key.save(tmp_path / "k.json")
    rng = np.random.default_rng(0)
    prompts, _ = corpus_prompts(teacher, 1000, length=12, rng=rng)
    answers = generate(teacher.model, prompts, 150, rng, scheme=key.scheme_object(), batch_size=500)
    path = tmp_path / "release.jsonl"
    with open(path, "w") as fh:
        for i, (p, a) in enumerate(zip(prompts, answers)):
            fh.write(json.dumps({"id": i, "prompt": teacher.tokenizer.decode(p),
                                 "response": teacher.tokenizer.decode(a)}) + "\n")
    cmd = [sys.executable, "-m", "fingerprint.cli", "strength", str(path), "--key", str(key_path),
           "--tokenizer", teacher.tokenizer.source, "--quiet", "--json", str(tmp_path / "s.json")]

    wall, peak_mib = benchmark.pedantic(run_measured, args=(cmd,), rounds=1, iterations=1)
    benchmark.extra_info.update(wall_s=wall, peak_rss_mib=peak_mib)
    print(f"\nstrength: 1,000 responses x 150 tokens, distillation proxy included: {wall:.1f} s, "
          f"peak RSS {peak_mib:,.0f} MiB")
