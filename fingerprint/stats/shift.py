"""The weighted SynthID statistic's null: fixed weights times g-value counts over a random key's shifts.

SynthID's g-values (transformers' ``SynthIDTextWatermarkLogitsProcessor`` with a power-of-two
table of size ``N``) depend on a tuple only through its unit ``u = h mod N`` and on the key only
through ``keys[d] mod N``: ``g_d(u) = G(u + keys[d])``. A weighted statistic over items with
units ``u_i`` and fixed non-negative weights ``w_i`` (the logprob statistic, reading with the
suspect's distributions) is therefore

    T = sum_i w_i sum_d G(u_i + k_d) = sum_d C(k_d),   C(k) = sum_i w_i G(u_i + k mod N),

and under H0 (the items and weights independent of the key, the key random) the ``k_d`` are
independent and uniform on ``[0, N)``: ``T`` is a sum of ``depth`` iid draws from the ``N``
values of ``C``, whatever the table and however the units relate (the same argument as
:class:`~fingerprint.stats.nulls.ShiftNull`, which is its unweighted case). ``C`` comes from
one FFT cross-correlation. Its values are rounded **up** to a grid of :data:`BINS` steps over
their range (so the null's total is at least ``T`` for every key: the tail is conservative,
by at most ``depth`` steps), and the tail of the sum of ``depth`` draws is computed with the
Lugannani-Rice saddlepoint formula on that distribution's exact cumulant generating function
(checked against decoy keys in every run, as the other weighted statistics).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, stats

from ..errors import ParameterError
from .exact import Effect, check_confidence_level
from .nulls import NullModel
from .saddlepoint import iid_sum_test

__all__ = ["WeightedShiftNull", "BINS"]

#: Steps of the grid the values of ``C`` are rounded up to (the conservative excess of the
#: null's total is at most ``depth`` steps: about 1% of its standard deviation at depth 30).
BINS = 4096


class WeightedShiftNull(NullModel):
    """``T = sum_d C(k_d)`` over ``depth`` independent uniform shifts ``k_d``, with
    ``C(k) = sum_i w_i G(u_i + k mod N)``.

    ``units`` ``(n,)``: values in ``[0, N)`` (repeats allowed); ``weights`` ``(n,)``: finite,
    non-negative; ``shift_g`` ``(N,)``: the 0/1 value ``G`` of each position; ``depth``: number
    of keys. ``n_trials`` is ``depth`` times the weight mass; ``null_rate`` the table's mean (the
    expected g-value), so the effect reads as the excess of the weighted g-value rate.
    """

    test_name = "synthid-shift-weighted"
    effect_prior_default = 0.1
    _discrete = False

    def __init__(self, units: np.ndarray, weights: np.ndarray, shift_g: np.ndarray, depth: int) -> None:
        self.units = np.asarray(units, dtype=np.int64)
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != self.units.shape or w.ndim != 1:
            raise ParameterError(f"units and weights must have one shape (n,), got {self.units.shape} and {w.shape}")
        if w.size and (not np.isfinite(w).all() or w.min() < 0):
            raise ParameterError("weights must be finite non-negative numbers")
        size = int(shift_g.size)
        if self.units.size and (self.units.min() < 0 or self.units.max() >= size):
            raise ParameterError(f"units must be in [0, {size})")
        self.weights = w
        self.shift_g = shift_g
        self.depth = int(depth)
        self.n_items = int(w.size)
        self.mass = float(w.sum())
        self.n_trials = self.depth * self.mass
        self.null_rate = float(np.mean(shift_g))
        per_unit = np.bincount(self.units, weights=w, minlength=size)
        corr = np.fft.irfft(np.conj(np.fft.rfft(per_unit)) * np.fft.rfft(shift_g.astype(np.float64)), n=size)
        # C(k) for every shift k (N,), plus a margin for the FFT's rounding: never below the true value
        corr = corr + 1e-9 * (self.mass + 1.0)
        low, high = float(corr.min()), float(corr.max())
        step = (high - low) / BINS
        if step > 0:
            idx = np.ceil((corr - low) / step).astype(np.int64).clip(0, BINS)
            counts = np.bincount(idx, minlength=BINS + 1)
            self._values = low + step * np.arange(BINS + 1)
        else:
            counts = np.array([size])
            self._values = np.array([high])
        self._probs = counts / size
        self._null_mean = self.depth * float(corr.mean())
        self._null_var = self.depth * float(corr.var())

    def __repr__(self) -> str:
        return f"WeightedShiftNull(n_items={self.n_items}, depth={self.depth}, table={self.shift_g.size})"

    def log10_sf(self, totals: np.ndarray) -> np.ndarray:
        if self.n_items == 0 or self.mass == 0:
            return np.zeros(np.atleast_1d(np.asarray(totals)).shape)
        return np.array([min(0.0, iid_sum_test(float(t), self._values, self._probs, self.depth))
                         for t in np.atleast_1d(np.asarray(totals, dtype=np.float64))])

    def randomized_pvalues(self, totals: np.ndarray, u: np.ndarray) -> np.ndarray:
        # continuous to the saddlepoint's accuracy: the tail itself
        return 10.0 ** self.log10_sf(totals)

    def effect(self, total: float, *, confidence_level: float = 0.95) -> Effect:
        check_confidence_level(confidence_level)
        if self.n_trials <= 0:
            return Effect(math.nan, math.nan, math.nan, confidence_level, "normal (weighted g-values; descriptive)")
        value = total / self.n_trials - self.null_rate
        half = float(stats.norm.ppf(0.5 + confidence_level / 2)) * math.sqrt(self._null_var) / self.n_trials
        return Effect(value, value - half, value + half, confidence_level, "normal (weighted g-values; descriptive)")

    def log10_bayes_factor(self, total: float, effect_max: float | None = None) -> float:
        """Normal approximation of the total's likelihood at each rate (the null's variance),
        integrated over the uniform prior (descriptive; the p-value is the exact statistic)."""
        e_max = self.effect_prior_default if effect_max is None else effect_max
        if self.n_trials <= 0 or not e_max > 0 or self._null_var <= 0:
            return 0.0
        sd = math.sqrt(self._null_var)
        grid = np.linspace(0.0, e_max, 257)
        ll = (stats.norm.logpdf(total, (self.null_rate + grid) * self.n_trials, sd)
              - stats.norm.logpdf(total, self.null_rate * self.n_trials, sd))
        top = float(ll.max())
        avg = integrate.trapezoid(np.exp(ll - top), grid) / e_max
        return float((top + math.log(max(avg, 1e-300))) / math.log(10))

    def prefix(self, m: int) -> "WeightedShiftNull":
        return WeightedShiftNull(self.units[:m], self.weights[:m], self.shift_g, self.depth)

    def _total_range(self) -> tuple[float, float]:
        return self._null_mean, self.depth * float(self._values.max())
