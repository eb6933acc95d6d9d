"""Bayes factors of H1 "effect ~ Uniform(0, effect_max)" against H0, and posteriors."""

from __future__ import annotations

import math

from scipy import special, stats

from ..errors import ParameterError
from .exact import log_binomial_sf, log_gamma_sf

__all__ = ["log10_bayes_factor_binomial", "log10_bayes_factor_gamma", "posterior_probability"]

_LN10 = math.log(10.0)



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
