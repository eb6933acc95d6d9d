"""What the owner holds after collecting the first ``n`` suspect tokens.

The experiments report p-values against the number of suspect tokens collected. Each point is a
full run of the verify pipeline on the evidence as it stood then (the first ``n`` tokens, the
last text cut short), so every point is exactly what ``fingerprint verify`` would report on that
collection. Every selection rule of the pipeline (prompt exclusion per text, first occurrence
across the corpus, a global window filter) keeps, on a prefix, exactly the items of the whole
corpus that lie in that prefix, so these points equal prefixes of one run.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fingerprint.corpus import ExchangeSet

__all__ = ["token_prefix", "exchange_prefix"]


def token_prefix(tokens: np.ndarray, offsets: np.ndarray, prompt_tokens: np.ndarray, prompt_offsets: np.ndarray,
                 n_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n_tokens`` of responses ``tokens`` ``(N,)`` / ``offsets`` ``(T + 1,)`` and the
    prompts (``(M,)`` / ``(T + 1,)``) of the texts they touch: ``(tokens, offsets, prompt_tokens,
    prompt_offsets)`` with ``T' + 1`` offsets each, ``T'`` the number of texts starting before
    ``n_tokens``."""
    if n_tokens >= tokens.size:
        return tokens, offsets, prompt_tokens, prompt_offsets
    t = int(np.searchsorted(offsets, n_tokens, side="left"))
    return (tokens[:n_tokens], np.append(offsets[:t], n_tokens), prompt_tokens[:prompt_offsets[t]],
            prompt_offsets[:t + 1])


def exchange_prefix(exchanges: ExchangeSet, n_tokens: int, field: str) -> ExchangeSet:
    """The exchanges whose per-token records ``field`` (``"logprobs"``: the suspect's answers;
    ``"prompt_logprobs"``: texts fed in reading mode) start before position ``n_tokens`` of the
    corpus, the last one cut to end there."""
    out, read = [], 0
    for ex in exchanges.exchanges:
        if read >= n_tokens:
            break
        records = getattr(ex, field)
        if records:
            out.append(dataclasses.replace(ex, **{field: records[:n_tokens - read]}))
            read += len(records)
        else:
            out.append(ex)
    return ExchangeSet(exchanges=out)
