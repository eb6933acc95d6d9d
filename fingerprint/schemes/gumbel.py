"""Gumbel-max fingerprint (Aaronson, 2023).

For each window the key gives uniforms ``r_v`` over the vocabulary; the token sampled is
``argmax_v r_v ** (1 / p_v)``, which is distributed exactly as ``p`` over keys (no change
in quality) yet favours tokens with large ``r``. The score of a tuple is ``-ln(1 - r)``,
Exp(1) under H0, so the sum over ``n`` distinct tuples is Gamma(n, 1).

The choice is a deterministic function of the window and the distribution: ``rng`` is not
used by :meth:`GumbelScheme.sample`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..prf import to_unit_interval
from ..stats import GammaNull, NullModel, WeightedExponentialNull
from .base import Scheme, apply_temperature_top_p, check_contexts, check_logits, sample_from_logp

__all__ = ["GumbelScheme"]


class GumbelScheme(Scheme):
    """Gumbel-max scheme; parameter ``context_width`` (h, default 2)."""

    name = "gumbel"
    defaults = {"context_width": 2}

    @classmethod
    def _validate(cls, params: dict[str, Any]) -> dict[str, Any]:
        return params

    def _tuple_scores(self, values: np.ndarray) -> np.ndarray:
        return -np.log1p(-to_unit_interval(values))

    def null(self, n_items: int, *, blocks: np.ndarray | None = None,
             weights: np.ndarray | None = None) -> NullModel:
        """Gamma(n, 1) for the score sum; a weighted Exp(1) sum with weights."""
        if weights is not None:
            return WeightedExponentialNull(weights)
        return GammaNull(n_items)

    def sample(self, logits: np.ndarray, contexts: np.ndarray, rng: np.random.Generator, *,
               temperature: float = 1.0, top_p: float = 1.0) -> np.ndarray:
        logits = check_logits(logits, self.vocab_size)
        logp = apply_temperature_top_p(logits, temperature, top_p)
        contexts, full = check_contexts(contexts, logits.shape[0], self.context_width, self.vocab_size)
        out = np.empty(logits.shape[0], dtype=np.int64)
        if (~full).any():
            out[~full] = sample_from_logp(logp[~full], rng)
        if full.any():
            r = to_unit_interval(self._row_values(contexts[full]))
            p = np.exp(logp[full])
            with np.errstate(divide="ignore"):
                # argmax r^(1/p) = argmax ln(r) / p; tokens with p = 0 get -inf
                keyed = np.where(p > 0, np.log(r) / np.where(p > 0, p, 1.0), -np.inf)
            out[full] = keyed.argmax(axis=1)
        return out
