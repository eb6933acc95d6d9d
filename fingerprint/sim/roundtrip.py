"""A small end-to-end round trip: keygen, fingerprinted sampling, verification.

For each scheme: a fresh key; a teacher n-gram model answers prompts taken from the corpus
once with the fingerprint and once without; both sets of answers are scored with the key
(prompt windows excluded, tuples de-duplicated) and tested exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..keys import FingerprintKey
from ..stats import TestResult
from ..windows import DropCounts, select_tuples
from .generate import generate
from .teacher import Teacher

__all__ = ["RoundTripRow", "run_roundtrip", "score_responses"]


@dataclass(frozen=True)
class RoundTripRow:
    scheme: str
    params: dict[str, Any]
    key_id: str
    fingerprinted: TestResult
    fingerprinted_counts: DropCounts
    plain: TestResult
    plain_counts: DropCounts


def score_responses(key: FingerprintKey, prompts: Sequence[np.ndarray],
                    responses: Sequence[np.ndarray]) -> tuple[TestResult, DropCounts]:
    """Exact test of ``responses`` (token arrays) against ``key``, excluding prompt windows."""
    scheme = key.scheme_object()
    offsets = np.concatenate(([0], np.cumsum([r.size for r in responses]))).astype(np.int64)
    p_offsets = np.concatenate(([0], np.cumsum([p.size for p in prompts]))).astype(np.int64)
    tokens = np.concatenate(responses) if responses else np.zeros(0, np.int64)
    p_tokens = np.concatenate(prompts) if prompts else np.zeros(0, np.int64)
    scored = scheme.score(tokens, offsets)
    sel = select_tuples(scored.table, prompt_tokens=p_tokens, prompt_offsets=p_offsets)
    return scheme.test(scored.scores[sel.mask]), sel.counts


def run_roundtrip(teacher: Teacher, *, n_prompts: int = 8, tokens_per_response: int = 50,
                  prompt_tokens: int = 16, seed: int = 0,
                  schemes: Sequence[tuple[str, dict[str, Any]]] = (
                      ("greenlist", {"delta": 2.0}), ("gumbel", {}), ("tournament", {})),
                  progress: Callable[[str], None] | None = None) -> list[RoundTripRow]:
    """Run the round trip for each ``(scheme name, params)``; returns one row per scheme."""
    rng = np.random.default_rng(seed)
    lengths = np.diff(teacher.offsets)
    eligible = np.flatnonzero(lengths >= prompt_tokens)
    chosen = rng.choice(eligible, size=min(n_prompts, eligible.size), replace=False)
    prompts = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i] + prompt_tokens] for i in chosen]
    rows = []
    for name, params in schemes:
        if progress:
            progress(f"{name}: sampling {len(prompts)} x {tokens_per_response} tokens")
        key = FingerprintKey.generate(name, vocab_size=teacher.vocab_size, **params)
        marked = generate(teacher.model, prompts, tokens_per_response, rng, scheme=key.scheme_object())
        plain = generate(teacher.model, prompts, tokens_per_response, rng)
        fp_result, fp_counts = score_responses(key, prompts, marked)
        pl_result, pl_counts = score_responses(key, prompts, plain)
        rows.append(RoundTripRow(name, key.params, key.key_id, fp_result, fp_counts, pl_result, pl_counts))
    return rows
