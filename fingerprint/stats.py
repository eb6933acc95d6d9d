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

from .errors import ParameterError

__all__ = [
    "Effect",
    "TestResult",
    "binomial_test",
    "gamma_test",
    "log_binomial_sf",
    "log_gamma_sf",
    "holm",
    "log10_binomial_sf_array",
    "log10_gamma_sf_array",
    "log10_bayes_factor_binomial",
    "log10_bayes_factor_gamma",
    "posterior_probability",
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

def _check_level(confidence_level: float) -> None:
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
    _check_level(confidence_level)
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
    _check_level(confidence_level)
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


def holm(log10_pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in log10 space.

    Shape ``(m,)`` -> ``(m,)``: ``adjusted_i = max_{j <= rank(i)} min(1, (m - j + 1) p_(j))``.
    Rejecting where ``adjusted <= log10(alpha)`` controls the family-wise error rate at alpha.
    """
    lp = np.asarray(log10_pvalues, dtype=np.float64)
    if lp.ndim != 1:
        raise ParameterError(f"holm expects a 1-D array of log10 p-values, got shape {lp.shape}")
    if (lp > 0).any() or np.isnan(lp).any():
        raise ParameterError("log10 p-values must be <= 0 and not NaN")
    m = lp.size
    order = np.argsort(lp, kind="stable")
    multipliers = np.log10(m - np.arange(m, dtype=np.float64))
    adjusted_sorted = np.minimum(0.0, np.maximum.accumulate(lp[order] + multipliers))
    out = np.empty(m)
    out[order] = adjusted_sorted
    return out


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


# ---- Bayes factors ---------------------------------------------------------------------------

def _log_diff(log_a: float, log_b: float) -> float:
    """log(a - b) for a > b > 0 given in logs."""
    if log_b == -math.inf:
        return log_a
    if log_b >= log_a:
        return -math.inf
    return log_a + math.log1p(-math.exp(log_b - log_a))


def _log_binomial_cdf(k: int, n: int, p: float) -> float:
    """log P[Binom(n, p) <= k] via the upper tail of the complement, accurate in deep tails."""
    if k >= n:
        return 0.0
    if k < 0:
        return -math.inf
    return log_binomial_sf(n - k, n, 1.0 - p)


def log10_bayes_factor_binomial(k: int, n: int, p0: float, effect_max: float) -> float:
    """log10 Bayes factor for k successes in n trials.

    H0: rate = p0. H1: rate = p0 + e with e ~ Uniform(0, effect_max). The H1 marginal is
    ``1 / (effect_max (n + 1)) * P[p0 < Beta(k + 1, n - k + 1) < p0 + effect_max]``, written
    with binomial tails so it stays accurate in log space.
    """
    if n == 0:
        return 0.0
    if not 0 < effect_max <= 1 - p0:
        raise ParameterError(f"effect prior maximum must be in (0, {1 - p0:g}], got {effect_max!r}")
    p1 = p0 + effect_max
    # P[Beta(k+1, n-k+1) <= x] = P[Binom(n+1, x) >= k+1]
    if k + 1 > (n + 1) * p0:
        log_mass = _log_diff(log_binomial_sf(k + 1, n + 1, p1), log_binomial_sf(k + 1, n + 1, p0))
    else:
        log_mass = _log_diff(_log_binomial_cdf(k, n + 1, p0), _log_binomial_cdf(k, n + 1, p1))
    log_h1 = log_mass - math.log(effect_max) - math.log(n + 1)
    log_h0 = float(stats.binom.logpmf(k, n, p0))
    return (log_h1 - log_h0) / _LN10


def log10_bayes_factor_gamma(score_sum: float, n: int, effect_max: float) -> float:
    """log10 Bayes factor for a sum S of n scores modelled as Exp(theta).

    H0: theta = 1. H1: theta = 1 + e with e ~ Uniform(0, effect_max). The H1 marginal is
    ``[Q(n - 1, S / (1 + effect_max)) - Q(n - 1, S)] / (effect_max (n - 1))`` with Q the
    regularized upper incomplete gamma function.
    """
    if n < 2 or score_sum <= 0:
        return 0.0
    if not effect_max > 0:
        raise ParameterError(f"effect prior maximum must be > 0, got {effect_max!r}")
    s = float(score_sum)
    upper = s / (1.0 + effect_max)
    if s > n:  # upper tail: both Q small, subtract in log space
        log_mass = _log_diff(log_gamma_sf(upper, n - 1), log_gamma_sf(s, n - 1))
    else:
        lo = float(special.gammainc(n - 1, s)) - float(special.gammainc(n - 1, upper))
        log_mass = math.log(lo) if lo > 0 else -math.inf
    log_h1 = log_mass - math.log(effect_max) - math.log(n - 1)
    log_h0 = float(stats.gamma.logpdf(s, n))
    return (log_h1 - log_h0) / _LN10


def posterior_probability(log10_bayes_factor: float, prior_probability: float) -> float:
    """Posterior probability of H1 from a Bayes factor and a prior probability of H1."""
    if not 0 < prior_probability < 1:
        raise ParameterError(f"prior probability must be in (0, 1), got {prior_probability!r}")
    log10_odds = log10_bayes_factor + math.log10(prior_probability / (1 - prior_probability))
    if log10_odds > 300:
        return 1.0
    if log10_odds < -300:
        return 0.0
    odds = 10.0 ** log10_odds
    return odds / (1.0 + odds)


# ---- weighted sums (logprob statistics) -------------------------------------------------------

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

    def cgf1(t: float) -> float:
        e = 1.0 / (1.0 + ratio * np.exp(-t * w))  # P(B=1) tilted
        return m * float((w * e).sum())

    def cgf2(t: float) -> float:
        e = 1.0 / (1.0 + ratio * np.exp(-t * w))
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
