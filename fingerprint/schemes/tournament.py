"""Tournament fingerprint (SynthID-Text; Dathathri et al., 2024, Nature 634).

Each (window, token) tuple has ``m`` keyed g-bits (bit ``l`` of the PRF value is layer
``l``'s g-value). Sampling runs an ``m``-layer tournament with two contestants per match;
its output distribution is computed exactly, layer by layer:
``p_{l+1}(v) = p_l(v) * (1 + g_l(v) - E_{p_l}[g_l])``, and one token is then drawn with
``rng`` (the "vectorized tournament" of the paper).

Score: the number of 1-bits among the chosen token's ``m`` g-bits.
Test: P[Binom(m * n, 1/2) >= total 1-bits] over ``n`` distinct tuples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ParameterError
from ..stats import BinomialNull, NullModel, WeightedBernoulliNull
from .base import Scheme, apply_temperature_top_p, check_contexts, check_logits, sample_from_logp

__all__ = ["TournamentScheme", "MAX_LAYERS"]

#: One 64-bit PRF value per tuple carries at most 64 layers.
MAX_LAYERS = 64


def _popcount64(x: np.ndarray) -> np.ndarray:
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    with np.errstate(over="ignore"):
        return ((x * np.uint64(0x0101010101010101)) >> np.uint64(56)).astype(np.int64)


class TournamentScheme(Scheme):
    """Tournament scheme; parameters ``context_width`` (h, default 2), ``layers`` (m, 30)."""

    name = "tournament"
    defaults = {"context_width": 2, "layers": 30}

    @classmethod
    def _validate(cls, params: dict[str, Any]) -> dict[str, Any]:
        m = params["layers"]
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= MAX_LAYERS:
            raise ParameterError(f"layers (m) must be an integer in [1, {MAX_LAYERS}], got {m!r}")
        return {**params, "layers": int(m)}

    @property
    def _layer_mask(self) -> np.uint64:
        m = self.params["layers"]
        return np.uint64((1 << m) - 1)

    def g_bits(self, values: np.ndarray) -> np.ndarray:
        """g-values of PRF values: shape ``values.shape + (m,)``, uint8 in {0, 1}."""
        shifts = np.arange(self.params["layers"], dtype=np.uint64)
        return ((values[..., None] >> shifts) & np.uint64(1)).astype(np.uint8)

    def _tuple_scores(self, values: np.ndarray) -> np.ndarray:
        return _popcount64(values & self._layer_mask)

    def null(self, n_items: int, *, blocks: np.ndarray | None = None,
             weights: np.ndarray | None = None) -> NullModel:
        """Binom(m n, 1/2) for the 1-bits among m g-bits per tuple; weighted with weights."""
        m = self.params["layers"]
        if weights is not None:
            return WeightedBernoulliNull(weights, 0.5, multiplicity=m)
        return BinomialNull(n_items, 0.5, trials_per_item=m)

    def warp_logits(self, logits: np.ndarray, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The log of the tournament's exact output distribution (rows with a full context)."""
        logits = check_logits(logits, self.vocab_size)
        contexts, full = check_contexts(contexts, logits.shape[0], self.context_width, self.vocab_size)
        out = logits.copy()
        if full.any():
            logp = apply_temperature_top_p(logits[full], 1.0, 1.0)
            out[full] = np.maximum(self.tournament_logp(logp, contexts[full]), np.finfo(np.float32).min)
        return out

    def tournament_logp(self, logp: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        """Exact output distribution of the tournament, as log-probabilities ``(b, V)``, for
        rows of log-probabilities ``logp`` ``(b, V)`` with full contexts ``(b, h)``."""
        values = self._row_values(contexts)
        p = np.exp(logp)
        for layer in range(self.params["layers"]):
            g = ((values >> np.uint64(layer)) & np.uint64(1)).astype(np.float64)
            expected = (p * g).sum(axis=1, keepdims=True)
            p = p * (1.0 + g - expected)
        with np.errstate(divide="ignore"):
            return np.log(np.maximum(p, 0.0))

    def sample(self, logits: np.ndarray, contexts: np.ndarray, rng: np.random.Generator, *,
               temperature: float = 1.0, top_p: float = 1.0) -> np.ndarray:
        logits = check_logits(logits, self.vocab_size)
        logp = apply_temperature_top_p(logits, temperature, top_p)
        contexts, full = check_contexts(contexts, logits.shape[0], self.context_width, self.vocab_size)
        if full.any():
            logp = logp.copy()
            logp[full] = self.tournament_logp(logp[full], contexts[full])
        return sample_from_logp(logp, rng)
