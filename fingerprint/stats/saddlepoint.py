"""Tails of weighted sums of independent Bernoulli or exponential variables (logprob statistics),
by the Lugannani-Rice saddlepoint formula."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import special

__all__ = ["weighted_bernoulli_test", "weighted_exponential_test", "iid_sum_test"]

_LN10 = math.log(10.0)



def _lugannani_rice(s: float, mean: float, cgf, cgf1, cgf2, t_max: float) -> float:
    """log P[S >= s] by the Lugannani-Rice saddlepoint formula for a sum with cumulant generating
    function ``cgf`` (and its first two derivatives) defined for t < t_max."""
    from scipy import optimize

    sd = math.sqrt(cgf2(0.0))
    if sd == 0 or abs(s - mean) < 1e-6 * sd:
        return math.log(0.5)
    if s > mean:
        lo, hi = 0.0, (t_max * (1 - 1e-12) if math.isfinite(t_max) else 1.0)
        while math.isinf(t_max) and cgf1(hi) < s:
            hi *= 2.0
            if hi > 1e12:
                return -math.inf
        if cgf1(hi) < s:
            return -math.inf
    else:
        lo, hi = -1.0, 0.0
        while cgf1(lo) > s:
            lo *= 2.0
            if lo < -1e12:
                return 0.0
    t = optimize.brentq(lambda x: cgf1(x) - s, lo, hi, xtol=1e-14, rtol=1e-13, maxiter=500)
    w2 = 2.0 * (t * s - cgf(t))
    k2 = cgf2(t)
    if w2 <= 0 or k2 <= 0:
        return math.log(float(special.ndtr(-(s - mean) / sd)))
    w = math.copysign(math.sqrt(w2), t)
    u = t * math.sqrt(k2)
    if abs(w) < 1e-3:  # at the mean the formula is 0/0; the normal tail is exact to first order
        return math.log(float(special.ndtr(-(s - mean) / sd)))
    if w > 0:
        log_tail = float(special.log_ndtr(-w))
        ratio = math.exp(-0.5 * w2 - 0.5 * math.log(2 * math.pi) - log_tail)  # phi(w) / Phi(-w)
        corr = 1.0 + ratio * (1.0 / u - 1.0 / w)
        return log_tail + math.log(corr) if corr > 0 else log_tail
    p = float(special.ndtr(-w)) + math.exp(-0.5 * w2) / math.sqrt(2 * math.pi) * (1.0 / u - 1.0 / w)
    return math.log(min(1.0, max(p, 1e-300)))


def weighted_bernoulli_test(statistic: float, weights: np.ndarray, p: float, *, multiplicity: int = 1) -> float:
    """log10 P[sum_i w_i B_i >= statistic] with B_i iid Bernoulli(p) (saddlepoint, Lugannani-Rice).

    ``weights`` ``(n,)`` are non-negative (e.g. a suspect's probabilities of the tokens whose
    green flags are the B_i); with ``multiplicity`` m each weight carries m independent
    Bernoullis (a tournament's m g-bits). Accurate to a small relative error far into the tail.
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w[w > 0]
    if w.size == 0:
        return 0.0
    m = float(multiplicity)
    lq, lp = math.log1p(-p), math.log(p)
    ratio = math.exp(lq - lp)

    def cgf(t: float) -> float:
        return m * float(np.logaddexp(lq, lp + t * w).sum())

    shift = math.log(ratio)

    def cgf1(t: float) -> float:
        e = special.expit(t * w - shift)  # P(B=1) tilted: 1 / (1 + ratio exp(-t w)), without overflow
        return m * float((w * e).sum())

    def cgf2(t: float) -> float:
        e = special.expit(t * w - shift)
        return m * float((w * w * e * (1 - e)).sum())

    top = m * float(w.sum())
    if statistic >= top:
        return float(m * w.size * lp / _LN10) if statistic <= top + 1e-9 else -math.inf
    return _lugannani_rice(float(statistic), p * top, cgf, cgf1, cgf2, math.inf) / _LN10


def weighted_exponential_test(statistic: float, weights: np.ndarray) -> float:
    """log10 P[sum_i w_i E_i >= statistic] with E_i iid Exp(1) (saddlepoint, Lugannani-Rice)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w[w > 0]
    if w.size == 0:
        return 0.0

    def cgf(t: float) -> float:
        return float(-np.log1p(-t * w).sum())

    def cgf1(t: float) -> float:
        return float((w / (1 - t * w)).sum())

    def cgf2(t: float) -> float:
        return float(((w / (1 - t * w)) ** 2).sum())

    return _lugannani_rice(float(statistic), float(w.sum()), cgf, cgf1, cgf2, 1.0 / float(w.max())) / _LN10


def iid_sum_test(statistic: float, values: np.ndarray, probs: np.ndarray, count: int) -> float:
    """log10 P[X_1 + ... + X_count >= statistic] with the X_d iid, ``P[X = values[j]] = probs[j]``
    (a discrete distribution: ``values`` ``(m,)``, ``probs`` ``(m,)`` summing to 1), by the
    Lugannani-Rice saddlepoint formula on the exact cumulant generating function
    ``count * log sum_j probs[j] exp(t values[j])``. The largest reachable total is exact
    (``count * log10 P[X = max]``), anything above it has probability 0 (``-inf``)."""
    v = np.asarray(values, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    v, p = v[p > 0], p[p > 0]
    if v.size == 0:
        return 0.0
    n = float(count)
    lp = np.log(p / p.sum())

    def tilted(t: float) -> np.ndarray:
        a = lp + t * v
        e = np.exp(a - a.max())
        return e / e.sum()

    def cgf(t: float) -> float:
        a = lp + t * v
        top_a = float(a.max())
        return n * (top_a + math.log(float(np.exp(a - top_a).sum())))

    def cgf1(t: float) -> float:
        return n * float((tilted(t) * v).sum())

    def cgf2(t: float) -> float:
        e = tilted(t)
        m = float((e * v).sum())
        return n * float((e * (v - m) ** 2).sum())

    vmax = float(v.max())
    top = n * vmax
    if statistic >= top - 1e-12 * max(1.0, abs(top)):
        if statistic <= top + 1e-9 * max(1.0, abs(top)):
            return n * math.log10(float(np.exp(lp[v == vmax]).sum()))
        return -math.inf
    mean = n * float((np.exp(lp) * v).sum())
    out = _lugannani_rice(float(statistic), mean, cgf, cgf1, cgf2, math.inf) / _LN10
    if out == -math.inf:  # just below the top, beyond the saddlepoint's reach: some X_d is the maximum
        return min(0.0, math.log10(n) + float(np.log10(np.exp(lp[v == vmax]).sum())))
    return out
