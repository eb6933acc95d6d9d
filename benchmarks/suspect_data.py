"""Build a large suspect file from real text for the verify benchmark (cached)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fingerprint.sim.english import cache_dir
from fingerprint.sim.teacher import build_teacher


def large_suspect_file(n_tokens: int = 10_000_000, seed: int = 0) -> tuple[Path, str, int]:
    """A JSONL of ``{"id", "prompt", "response"}`` holding about ``n_tokens`` tokens: corpus
    paragraphs with their words shuffled (real vocabulary and frequencies, few repeated
    n-grams). Returns (path, tokenizer path, vocabulary size)."""
    teacher = build_teacher()
    path = cache_dir() / f"bench-suspect-{n_tokens}-{seed}.jsonl"
    if not path.is_file():
        rng = np.random.default_rng(seed)
        per_copy = int(teacher.tokens.size)
        copies = -(-n_tokens // per_copy)
        tmp = path.with_suffix(".tmp")
        written = 0
        with open(tmp, "w", encoding="utf-8") as fh:
            for c in range(copies):
                for i, para in enumerate(teacher.paragraphs):
                    words = para.split()
                    rng.shuffle(words)
                    text = " ".join(words)
                    fh.write(json.dumps({"id": f"{c}-{i}", "prompt": words[0] if words else "",
                                         "response": text}) + "\n")
                    written += len(text) // 4
        tmp.replace(path)
    return path, teacher.tokenizer.source, teacher.vocab_size
