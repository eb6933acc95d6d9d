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
