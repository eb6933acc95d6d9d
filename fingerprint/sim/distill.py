"""Distillation: students trained on a mixture of clean text and a teacher's fingerprinted
responses.

``rho`` is the fraction of the student's training tokens that are fingerprinted teacher
responses (``rho = 0`` is the control: a student that never saw them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ParameterError
from ..schemes import Scheme
from .generate import generate, generate_split
from .ngram import NgramLM
from .teacher import Teacher

__all__ = ["FingerprintedData", "fingerprinted_responses", "mixture", "distill_student", "corpus_prompts"]


@dataclass
class FingerprintedData:
    """The teacher's fingerprinted answers: ``prompts[i]`` -> ``responses[i]`` (token arrays)."""

    prompts: list[np.ndarray]
    responses: list[np.ndarray]

    @property
    def n_tokens(self) -> int:
        return int(sum(r.size for r in self.responses))


def corpus_prompts(teacher: Teacher, n: int, *, length: int, rng: np.random.Generator,
                   exclude: Sequence[int] = ()) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` prompts: the first ``length`` tokens of random corpus paragraphs (not in
    ``exclude``). Returns the prompts and the paragraph indices used."""
    lengths = np.diff(teacher.offsets)
    ok = np.flatnonzero(lengths >= length)
    ok = np.setdiff1d(ok, np.asarray(exclude, dtype=np.int64))
    if ok.size < n:
        raise ParameterError(f"the corpus has only {ok.size} paragraphs of >= {length} tokens, {n} wanted")
    chosen = rng.choice(ok, size=n, replace=False)
    return [teacher.tokens[teacher.offsets[i]:teacher.offsets[i] + length] for i in chosen], chosen


def fingerprinted_responses(teacher: Teacher, scheme: Scheme, n_tokens: int, *, rng: np.random.Generator,
                            response_tokens: int = 200, prompt_tokens: int = 8,
                            batch_size: int = 64, parts: int = 1) -> FingerprintedData:
    """Ask the teacher ``ceil(n_tokens / response_tokens)`` corpus prompts, sampling through
    the fingerprint scheme: the data a distiller would harvest.

    ``parts`` > 1 splits the prompts over that many processes (:func:`generate_split`: the
    output depends on ``parts``, not on the machine). ``batch_size`` rows per sampling step: 64
    keeps the ``(b, V)`` temporaries in cache; at 512 (32-64 MB each) every step's arrays are
    fresh memory maps and a third of the time goes to page faults."""
    n = max(1, -(-n_tokens // response_tokens))
    prompts, _ = corpus_prompts(teacher, n, length=prompt_tokens, rng=rng)
    if parts > 1:
        responses = generate_split(teacher.model, prompts, response_tokens, rng, parts=parts, scheme=scheme,
                                   batch_size=batch_size)
    else:
        responses = generate(teacher.model, prompts, response_tokens, rng, scheme=scheme, batch_size=batch_size)
    return FingerprintedData(prompts, responses)


def mixture(clean_tokens: np.ndarray, clean_offsets: np.ndarray, data: FingerprintedData,
            rho: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Training texts with a fraction ``rho`` of fingerprinted tokens.

    All clean text is used when there is enough fingerprinted data; otherwise the clean part
    is cut so that the fraction holds. Returns tokens ``(N,)``, offsets ``(T + 1,)`` and the
    fraction actually reached.
    """
    if not 0 <= rho <= 1:
        raise ParameterError(f"rho must be in [0, 1], got {rho!r}")
    clean_n = int(clean_tokens.size)
    fp_total = data.n_tokens
    if rho == 0:
        n_clean, n_fp = clean_n, 0
    elif rho == 1:
        n_clean, n_fp = 0, fp_total
    else:
        n_fp = int(round(rho * clean_n / (1 - rho)))
        n_clean = clean_n
        if n_fp > fp_total:
            n_fp = fp_total
            n_clean = int(round(fp_total * (1 - rho) / rho))
    # whole clean paragraphs up to n_clean tokens, whole responses up to n_fp tokens
    n_par = int(np.searchsorted(clean_offsets, n_clean, side="right")) - 1
    parts_tok = [clean_tokens[:clean_offsets[n_par]]]
    lens = list(np.diff(clean_offsets[:n_par + 1]))
    taken = 0
    for r in data.responses:
        if taken >= n_fp:
            break
        parts_tok.append(r)
        lens.append(r.size)
        taken += r.size
    tokens = np.concatenate(parts_tok) if parts_tok else np.zeros(0, np.int64)
    offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
    reached = taken / tokens.size if tokens.size else 0.0
    return tokens, offsets, reached


def distill_student(clean_tokens: np.ndarray, clean_offsets: np.ndarray, data: FingerprintedData, rho: float,
                    *, vocab_size: int, order: int = 3) -> tuple[NgramLM, float]:
    """An n-gram student trained on the rho-mixture; returns it and the fraction reached."""
    tokens, offsets, reached = mixture(clean_tokens, clean_offsets, data, rho)
    return NgramLM.fit(tokens, offsets, vocab_size=vocab_size, order=order), reached
