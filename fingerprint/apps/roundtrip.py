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
from ..sim.generate import generate
from ..sim.teacher import Teacher
from ..verify import KeyResult, VerifyOptions, verify

__all__ = ["RoundTripRow", "run_roundtrip", "score_responses"]


@dataclass(frozen=True)
class RoundTripRow:
    scheme: str
    params: dict[str, Any]
    key_id: str
    fingerprinted: KeyResult
    plain: KeyResult


def score_responses(key: FingerprintKey, prompts: Sequence[np.ndarray], responses: Sequence[np.ndarray], *,
                    alpha: float = 1e-6) -> KeyResult:
    """The pipeline's result for ``responses`` (token arrays) against ``key``, prompt windows
    excluded, without decoys (the round trip checks the exact test itself)."""
    result = verify(list(responses), keys=key, prompt_tokens=list(prompts),
                    options=VerifyOptions(alpha=alpha, n_decoys=0))
    return result.results[0]


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
        rows.append(RoundTripRow(name, key.params, key.key_id, score_responses(key, prompts, marked),
                                 score_responses(key, prompts, plain)))
    return rows
