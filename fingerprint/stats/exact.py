"""Exact tests in log space, effect sizes with intervals, and multiple-testing correction.

Every p-value is an exact tail probability (no normal approximation) and is carried as
``log10_pvalue``, which stays finite and accurate far below 1e-300: a report can show
``log10(p) = -1251.46`` where a float would say 0.0.

Deep tails (where scipy's double-precision value underflows) use the continued fractions of
the regularized incomplete beta and gamma functions with log-space prefactors
(Numerical Recipes, 3rd ed., 6.2 and 6.4), evaluated with the modified Lentz method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from ..errors import ParameterError

__all__ = [
    "Effect",
    "TestResult",
    "binomial_test",
    "gamma_test",
    "log_binomial_sf",
    "log_gamma_sf",
    "log10_binomial_sf_array",
    "log10_gamma_sf_array",
    "check_confidence_level",
]

_LN10 = math.log(10.0)
_EPS = 1e-16
_FPMIN = 1e-300
_SCIPY_FLOOR = 1e-280  # below this, switch from scipy's double to the log-space fraction


@dataclass(frozen=True)
class Effect:
    """An effect size with a confidence interval.

    ``value`` is the excess of the observed rate over its null value (e.g. green rate
    minus gamma); ``ci_low``/``ci_high`` bound it at ``confidence_level``; ``method`` names
    how the interval was computed.
    """

    value: float
    ci_low: float
    ci_high: float
    confidence_level: float
    method: str


@dataclass(frozen=True)
class TestResult:
    """Result of one exact one-sided test of H0 "the text is independent of the key".

    Attributes
    ----------
    test:
        ``"binomial"`` (P[Binom(n, null_rate) >= statistic]) or ``"gamma"``
        (P[Gamma(n, 1) >= statistic]).
    statistic:
        The observed total: green tuples, 1-valued g-bits, or the sum of scores.
    n:
        Number of trials: tuples (greenlist, gumbel) or g-bits (tournament).
    null_rate:
        Expected ``statistic / n`` under H0.
    log10_pvalue:
        log10 of the exact one-sided p-value; finite far below 1e-300.
    effect:
        Observed rate minus ``null_rate``, with its confidence interval.
    """

    test: str
    statistic: float
    n: int
    null_rate: float
    log10_pvalue: float
    effect: Effect

    @property
    def pvalue(self) -> float:
        """The p-value as a float (0.0 once it underflows; use ``log10_pvalue`` then)."""
        return float(10.0 ** self.log10_pvalue) if self.log10_pvalue > -330 else 0.0


# ---- log-space tails ----------------------------------------------------------------------

def _log_betacf(a: float, b: float, x: float) -> float:
    """log of the continued fraction of I_x(a, b) (converges for x < (a+1)/(a+b+2))."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = _FPMIN if abs(d) < _FPMIN else d
    d = 1.0 / d
    h_lin = d
    max_iter = 10_000 + int(20 * math.sqrt(max(a, b)))
    for m in range(1, max_iter):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = _FPMIN if abs(d) < _FPMIN else d
        c = 1.0 + aa / c
        c = _FPMIN if abs(c) < _FPMIN else c
        d = 1.0 / d
        h_lin *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = _FPMIN if abs(d) < _FPMIN else d
        c = 1.0 + aa / c
        c = _FPMIN if abs(c) < _FPMIN else c
        d = 1.0 / d
        delta = d * c
        h_lin *= delta
        if abs(delta - 1.0) < _EPS:
            break
    if not h_lin > 0:
        raise ArithmeticError("incomplete beta continued fraction did not converge")
    return math.log(h_lin)


def _log_gammacf(a: float, x: float) -> float:
    """log of the continued fraction of Gamma(a, x) e^x x^-a (for x > a + 1)."""
    b = x + 1.0 - a
    c = 1.0 / _FPMIN
    d = 1.0 / b
    h = d
    max_iter = 10_000 + int(20 * math.sqrt(a))
    for i in range(1, max_iter):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = _FPMIN if abs(d) < _FPMIN else d
        c = b + an / c
        c = _FPMIN if abs(c) < _FPMIN else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    if not h > 0:
        raise ArithmeticError("incomplete gamma continued fraction did not converge")
    return math.log(h)


def log_binomial_sf(k: int, n: int, p: float) -> float:
    """Natural log of P[Binom(n, p) >= k], accurate far below 1e-300."""
    if k <= 0:
        return 0.0
    if k > n:
        return -math.inf
    sf = float(stats.binom.sf(k - 1, n, p))
    if sf >= _SCIPY_FLOOR:
        return math.log(sf)
    # P[X >= k] = I_p(k, n - k + 1); here k is far above n p so the fraction converges fast.
    a, b = float(k), float(n - k + 1)
    log_front = a * math.log(p) + b * math.log1p(-p) - float(special.betaln(a, b)) - math.log(a)
    return log_front + _log_betacf(a, b, p)


def log_gamma_sf(x: float, n: float) -> float:
    """Natural log of P[Gamma(n, 1) >= x], accurate far below 1e-300."""
    if x <= 0:
        return 0.0
    q = float(special.gammaincc(n, x))
    if q >= _SCIPY_FLOOR or x <= n + 1:
        return math.log(q) if q > 0 else -math.inf
    return -x + n * math.log(x) - float(special.gammaln(n)) + _log_gammacf(n, x)


# ---- tests ---------------------------------------------------------------------------------

def check_confidence_level(confidence_level: float) -> None:
    if not 0 < confidence_level < 1:
        raise ParameterError(f"confidence_level must be in (0, 1), got {confidence_level!r}")


def _check_count(name: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def binomial_test(k: int, n: int, p: float, *, confidence_level: float = 0.95) -> TestResult:
    """Exact one-sided binomial test: P[Binom(n, p) >= k].

    The effect is the observed rate ``k / n`` minus ``p``, with a Clopper-Pearson interval.
    """
    k = _check_count("k", k)
    n = _check_count("n", n)
    if k > n:
        raise ParameterError(f"k={k} exceeds n={n}")
    if not (isinstance(p, (float, int, np.floating)) and 0 < p < 1):
        raise ParameterError(f"p (gamma) must be in (0, 1), got {p!r}")
    check_confidence_level(confidence_level)
    p = float(p)
    log10_p = log_binomial_sf(k, n, p) / _LN10
    if n == 0:
        effect = Effect(math.nan, math.nan, math.nan, confidence_level, "clopper-pearson")
    else:
        ci = stats.binomtest(k, n, p).proportion_ci(confidence_level=confidence_level, method="exact")
        effect = Effect(k / n - p, ci.low - p, ci.high - p, confidence_level, "clopper-pearson")
    return TestResult("binomial", float(k), n, p, min(0.0, log10_p), effect)


def gamma_test(score_sum: float, n: int, *, confidence_level: float = 0.95) -> TestResult:
    """Exact one-sided test for a sum of ``n`` independent Exp(1) scores: P[Gamma(n, 1) >= S].

    The effect is the mean score minus 1. Its interval is exact if the scores are
    exponential with an unknown mean (S ~ Gamma(n, theta)); under a fingerprint they are
    only approximately so, hence the method name ``"gamma-exact-exponential-model"``.
    """
    n = _check_count("n", n)
    s = float(score_sum)
    if not math.isfinite(s) or s < 0:
        raise ParameterError(f"score_sum must be finite and >= 0, got {score_sum!r}")
    check_confidence_level(confidence_level)
    log10_p = log_gamma_sf(s, n) / _LN10 if n > 0 else 0.0
    if n == 0:
        effect = Effect(math.nan, math.nan, math.nan, confidence_level, "gamma-exact-exponential-model")
    else:
        alpha = 1.0 - confidence_level
        hi_q = float(stats.gamma.ppf(1 - alpha / 2, n))
        lo_q = float(stats.gamma.ppf(alpha / 2, n))
        effect = Effect(s / n - 1.0, s / hi_q - 1.0, (s / lo_q if lo_q > 0 else math.inf) - 1.0,
                        confidence_level, "gamma-exact-exponential-model")
    return TestResult("gamma", s, n, 1.0, min(0.0, log10_p), effect)


# ---- vectorized tails ------------------------------------------------------------------------

def log10_binomial_sf_array(k: np.ndarray, n: np.ndarray, p: float) -> np.ndarray:
    """log10 P[Binom(n, p) >= k] elementwise (shapes broadcast); deep tails stay finite."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    k, n = np.broadcast_arrays(k, n)
    with np.errstate(divide="ignore"):
        out = stats.binom.logsf(k - 1, n, p) / _LN10
    out = np.where(k <= 0, 0.0, out)
    bad = ~np.isfinite(out) | (out < math.log10(_SCIPY_FLOOR))
    for i in np.flatnonzero(bad.ravel()):
        out.flat[i] = log_binomial_sf(int(k.flat[i]), int(n.flat[i]), p) / _LN10
    return np.minimum(out, 0.0)


def log10_gamma_sf_array(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """log10 P[Gamma(n, 1) >= x] elementwise; ``n = 0`` gives 0."""
    x = np.asarray(x, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    x, n = np.broadcast_arrays(x, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = special.gammaincc(np.maximum(n, 1e-300), x)
        out = np.log10(q)
    out = np.where((n <= 0) | (x <= 0), 0.0, out)
    bad = ~np.isfinite(out) | (out < math.log10(_SCIPY_FLOOR))
    for i in np.flatnonzero(bad.ravel()):
        out.flat[i] = log_gamma_sf(float(x.flat[i]), float(n.flat[i])) / _LN10
    return np.minimum(out, 0.0)
