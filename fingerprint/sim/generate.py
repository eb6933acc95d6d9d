"""Sampling from a local language model, optionally through a fingerprint scheme's embed side.

The loop runs over positions, never over tokens of the batch: each step asks the model for
``(b, V)`` log-probabilities and the scheme (the same code a lab would put in its server)
for ``b`` tokens.
"""

from __future__ import annotations

import multiprocessing
from typing import Any, Protocol, Sequence

import numpy as np

from ..schemes import Scheme
from ..schemes.base import apply_temperature_top_p, sample_from_logp

__all__ = ["LanguageModel", "generate", "generate_split", "context_tail"]


class LanguageModel(Protocol):
    """Anything with a fixed context size and batched next-token log-probabilities."""

    vocab_size: int

    @property
    def context_size(self) -> int: ...

    def next_logprobs(self, contexts: np.ndarray) -> np.ndarray: ...


def context_tail(history: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """Last ``width`` tokens of each row of a right-padded history; ``-1`` where missing."""
    if width == 0:
        return np.zeros((history.shape[0], 0), dtype=np.int64)
    idx = lengths[:, None] + np.arange(-width, 0)
    out = np.take_along_axis(history, np.maximum(idx, 0), axis=1)
    out[idx < 0] = -1
    return out


def generate(model: LanguageModel, prompts: Sequence[np.ndarray], max_new_tokens: int,
             rng: np.random.Generator, *, scheme: Scheme | None = None, temperature: float = 1.0,
             top_p: float = 1.0, batch_size: int = 64, top_logprobs: int | None = None,
             top_out: list | None = None) -> list[np.ndarray]:
    """Continue each prompt by ``max_new_tokens`` tokens.

    ``prompts``: token-id arrays (may be empty). With ``scheme`` the fingerprint is embedded;
    its windows reach back into the prompt, as a server's would. Returns one int64 array of
    new tokens per prompt. With ``top_logprobs`` k, ``top_out`` receives per prompt a pair of
    arrays ``(ids (L, k), logprobs (L, k))``: the model's k best tokens at each step.
    """
    out: list[np.ndarray] = []
    c = model.context_size
    for start in range(0, len(prompts), batch_size):
        chunk = [np.asarray(p, dtype=np.int64) for p in prompts[start:start + batch_size]]
        b = len(chunk)
        lengths = np.array([p.size for p in chunk], dtype=np.int64)
        history = np.zeros((b, int(lengths.max(initial=0)) + max_new_tokens), dtype=np.int64)
        for i, p in enumerate(chunk):
            history[i, :p.size] = p
        tops = []
        for _ in range(max_new_tokens):
            logp = model.next_logprobs(context_tail(history, lengths, c))
            if top_logprobs:
                dist = apply_temperature_top_p(logp, temperature, top_p)
                ids = np.argpartition(-dist, top_logprobs, axis=1)[:, :top_logprobs]
                vals = np.take_along_axis(dist, ids, axis=1)
                order = np.argsort(-vals, axis=1)
                tops.append((np.take_along_axis(ids, order, axis=1), np.take_along_axis(vals, order, axis=1)))
            if scheme is None:
                nxt = sample_from_logp(apply_temperature_top_p(logp, temperature, top_p), rng)
            else:
                nxt = scheme.sample(logp, context_tail(history, lengths, scheme.context_width), rng,
                                    temperature=temperature, top_p=top_p)
            history[np.arange(b), lengths] = nxt
            lengths += 1
        for i, p in enumerate(chunk):
            out.append(history[i, p.size:p.size + max_new_tokens].copy())
            if top_logprobs and top_out is not None:
                top_out.append((np.stack([t[0][i] for t in tops]), np.stack([t[1][i] for t in tops])))
    return out


_SPLIT_JOB: dict[str, Any] = {}


def _generate_part(part: int) -> list[np.ndarray]:
    job = _SPLIT_JOB
    return generate(job["model"], job["parts"][part], job["max_new_tokens"], job["rngs"][part], **job["kw"])


def generate_split(model: LanguageModel, prompts: Sequence[np.ndarray], max_new_tokens: int,
                   rng: np.random.Generator, *, parts: int, scheme: Scheme | None = None,
                   temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 64) -> list[np.ndarray]:
    """:func:`generate` over ``parts`` contiguous slices of ``prompts``, each with its own
    generator spawned from ``rng``, run in that many forked processes where the platform forks.

    The result depends on ``parts`` and on ``rng``, never on the number of cores or on whether
    the slices ran in parallel (without ``fork`` they run one after the other, with the same
    output). Returns one int64 array of new tokens per prompt, in order.
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    bounds = np.linspace(0, len(prompts), parts + 1).round().astype(int)
    _SPLIT_JOB.update(model=model, max_new_tokens=max_new_tokens, rngs=rng.spawn(parts),
                      parts=[list(prompts[a:b]) for a, b in zip(bounds[:-1], bounds[1:])],
                      kw={"scheme": scheme, "temperature": temperature, "top_p": top_p, "batch_size": batch_size})
    try:
        if parts > 1 and "fork" in multiprocessing.get_all_start_methods():
            # forked children inherit the model and the job: nothing large is pickled
            with multiprocessing.get_context("fork").Pool(parts) as pool:
                results = pool.map(_generate_part, range(parts))
        else:
            results = [_generate_part(i) for i in range(parts)]
    finally:
        _SPLIT_JOB.clear()
    return [r for part in results for r in part]
