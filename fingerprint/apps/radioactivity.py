"""The distillation proxy the strength guard is given: how well a release's fingerprint survives
being distilled into a small student.

A trigram student is trained on clean text plus the release's responses, which make up a share
``rho`` of its training tokens; it answers a fixed budget of prompts from the clean corpus, and
its answers go through the verify pipeline (no decoys), scored only on windows of the release's
responses (the supervised setting: the owner knows what it served) and never on windows of the
prompt. The result is that test's log10 p-value.

:class:`TrigramProxy` packages the settings as the callable
:func:`fingerprint.strength.measure_strength` takes (``proxy(key, tokens, offsets) -> log10 p``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError, ParameterError
from ..keys import FingerprintKey
from ..sim.distill import FingerprintedData, corpus_prompts, distill_student
from ..sim.generate import generate
from ..sim.teacher import build_teacher
from ..verify import VerifyOptions, verify

__all__ = ["trigram_radioactivity", "TrigramProxy", "ANSWER_TOKENS", "QUERY_TOKENS"]

#: Tokens the student generates per query, and the length of each query.
ANSWER_TOKENS = 100
QUERY_TOKENS = 12


def trigram_radioactivity(key: FingerprintKey, tokens: np.ndarray, offsets: np.ndarray, *, rho: float = 0.05,
                          seed: int = 0, budget: int = 50_000,
                          clean_corpus: Sequence[str] | None = None) -> float:
    """log10 p-value of a trigram student distilled from the release's responses.

    Parameters
    ----------
    key:
        The release's key (its tokenizer's vocabulary must match the clean corpus tokenizer's).
    tokens, offsets:
        The release's responses: flat ids ``(N,)`` and offsets ``(T + 1,)``.
    rho:
        Share of the student's training tokens that are the release's responses, in (0, 1).
    seed:
        Seed of the queries and of the student's sampling (the result is deterministic given it).
    budget:
        Query budget in generated tokens: ``max(1, budget // 100)`` queries of
        ``ANSWER_TOKENS`` tokens each.
    clean_corpus:
        Text files of the clean corpus (default: the packaged English text).
    """
    if not 0 < rho < 1:
        raise ParameterError(f"radioactivity proxy: rho must be in (0, 1), got {rho!r}")
    if budget < 1:
        raise ParameterError(f"radioactivity proxy: the query budget must be >= 1 token, got {budget!r}")
    teacher = build_teacher(clean_corpus, vocab_size=key.vocab_size) if clean_corpus else build_teacher()
    if teacher.vocab_size != key.vocab_size:
        raise InputError(f"radioactivity proxy: the clean corpus tokenizer has {teacher.vocab_size} ids, the key "
                         f"{key.vocab_size}; skip the proxy (--no-radioactivity) or give a clean corpus for the key's tokenizer")
    tokens = np.asarray(tokens, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    responses = [tokens[offsets[i]:offsets[i + 1]] for i in range(offsets.size - 1)]
    data = FingerprintedData([np.zeros(0, np.int64)] * len(responses), responses)
    rng = np.random.default_rng(seed)
    # clean text sized so that the release's responses are a fraction rho of the student's data
    n_clean = int(data.n_tokens * (1 - rho) / rho)
    ends = np.searchsorted(teacher.offsets, n_clean)
    clean_offsets = teacher.offsets[:max(2, ends + 1)]
    clean_tokens = teacher.tokens[:clean_offsets[-1]]
    student, _ = distill_student(clean_tokens, clean_offsets, data, rho, vocab_size=key.vocab_size)
    queries, _ = corpus_prompts(teacher, max(1, budget // ANSWER_TOKENS), length=QUERY_TOKENS, rng=rng)
    answers = generate(student, queries, ANSWER_TOKENS, rng, batch_size=64)
    result = verify(answers, keys=key, prompt_tokens=queries, served_tokens=tokens, served_offsets=offsets,
                    options=VerifyOptions(n_decoys=0))
    return result.results[0].test.log10_pvalue


@dataclass(frozen=True)
class TrigramProxy:
    """:func:`trigram_radioactivity` with its settings bound: ``proxy(key, tokens, offsets)``.

    ``rho`` and ``seed`` are recorded with the strength metrics."""

    rho: float = 0.05
    seed: int = 0
    budget: int = 50_000
    clean_corpus: tuple[str, ...] | None = None

    @property
    def description(self) -> str:
        """One line for progress messages."""
        return f"trigram student at rho = {self.rho:.0%}, {self.budget:,} query tokens"

    def __call__(self, key: FingerprintKey, tokens: np.ndarray, offsets: np.ndarray) -> float:
        return trigram_radioactivity(key, tokens, offsets, rho=self.rho, seed=self.seed, budget=self.budget,
                                     clean_corpus=self.clean_corpus)
