"""Green-list fingerprint (Kirchenbauer et al., 2023, "A Watermark for Large Language Models").

Each (window, token) tuple is green with probability ``gamma``, independently, decided by
the keyed PRF: green iff ``value < gamma * 2**64``. (Kirchenbauer et al. fix the green list
to exactly ``gamma * V`` tokens; independent flags make distinct tuples exactly independent
Bernoulli(gamma) under H0, so the binomial null is exact.)

Embed: add ``delta`` to the tempered logits of the window's green tokens.
Score: 1 if the token is green, else 0. Test: P[Binom(n, gamma) >= green count].
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..stats import BinomialNull, NullModel, WeightedBernoulliNull
from .base import Scheme, apply_temperature_top_p, check_contexts, check_logits, sample_from_logp

__all__ = ["GreenlistScheme"]


class GreenlistScheme(Scheme):
    """Green-list scheme; parameters ``context_width`` (h, default 2), ``gamma`` (0.25),
    ``delta`` (3.0)."""

    name = "greenlist"
    defaults = {"context_width": 2, "gamma": 0.25, "delta": 3.0}

    @classmethod
    def _validate(cls, params: dict[str, Any]) -> dict[str, Any]:
        gamma, delta = params["gamma"], params["delta"]
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma < 1:
            raise ParameterError(f"gamma must be a number in (0, 1), got {gamma!r}")
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not (0 <= delta < 1e6):
            raise ParameterError(f"delta must be a finite number >= 0, got {delta!r}")
        return {**params, "gamma": float(gamma), "delta": float(delta)}

    @property
    def _threshold(self) -> np.uint64:
        return np.uint64(int(Fraction(self.params["gamma"]) * 2**64))

    def green_mask(self, values: np.ndarray) -> np.ndarray:
        """Green flags (bool, same shape) of PRF values."""
        return values < self._threshold

    def _tuple_scores(self, values: np.ndarray) -> np.ndarray:
        return self.green_mask(values).astype(np.int8)

    def total_of_blocks(self, blocks: np.ndarray) -> float:
        return float(np.count_nonzero(self.green_mask(self._prf.values_of_blocks(blocks))))

    def null(self, n_items: int, *, blocks: np.ndarray | None = None,
             weights: np.ndarray | None = None) -> NullModel:
        """Binom(n, gamma) for the green count; a weighted Bernoulli(gamma) sum with weights."""
        if weights is not None:
            return WeightedBernoulliNull(weights, self.params["gamma"])
        return BinomialNull(n_items, self.params["gamma"])

    def warp_logits(self, logits: np.ndarray, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.bias_logits(logits, contexts)

    def bias_logits(self, logits: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        """Logits ``(b, V)`` with ``delta`` added to each row's green tokens (rows with a full
        context only). ``contexts`` is ``(b, h)``; returns a new float64 array."""
        logits = check_logits(logits, self.vocab_size)
        contexts, full = check_contexts(contexts, logits.shape[0], self.context_width, self.vocab_size)
        green = self.green_mask(self._row_values(contexts)) & full[:, None]
        return logits + self.params["delta"] * green

    def sample(self, logits: np.ndarray, contexts: np.ndarray, rng: np.random.Generator, *,
               temperature: float = 1.0, top_p: float = 1.0) -> np.ndarray:
        logits = check_logits(logits, self.vocab_size)
        logp = apply_temperature_top_p(logits, temperature, top_p)
        return sample_from_logp(self.bias_logits(logp, contexts), rng)
