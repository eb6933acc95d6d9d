"""Shared fixtures: a real teacher (BPE tokenizer + n-gram model on packaged English text)."""

from __future__ import annotations

import numpy as np
import pytest

from fingerprint.sim.teacher import Teacher, build_teacher


@pytest.fixture(scope="session")
def teacher() -> Teacher:
    return build_teacher()


@pytest.fixture(scope="session")
def human_text(teacher: Teacher) -> tuple[np.ndarray, np.ndarray]:
    """About 60k tokens of real English (fortunes and the Jargon File), as tokens + offsets."""
    paras = [p for p in teacher.paragraphs if not p.startswith(("Genesis", "Exodus"))][3000:4500]
    return teacher.tokenizer.encode_batch(paras)


@pytest.fixture(autouse=True)
def deterministic_key_secrets(request, monkeypatch):
    """Keys made in-process by a test come from a stream seeded by the test's name, so every run
    of the suite sees the same keys (and the same statistics). Keys made by subprocesses still
    use the OS CSPRNG."""
    import hashlib

    import fingerprint.keys as keys

    counter = iter(range(1 << 30))

    def token_bytes(n: int) -> bytes:
        return hashlib.blake2b(f"{request.node.nodeid}:{next(counter)}".encode(), digest_size=n).digest()

    monkeypatch.setattr(keys._secrets, "token_bytes", token_bytes)
