"""Null distributions as objects: one per statistic, each exact (or provably conservative).

A :class:`NullModel` is the distribution under H0 ("the text is independent of the key") of one
statistic -- the total score over a fixed set of scored items -- and knows everything the
verification needs from it: log-space tail probabilities, randomized p-values (exactly U(0, 1)
under H0, also for discrete statistics), the effect with its interval, the Bayes factor, the null
of a prefix of the items (trajectories), and the smallest effect the data could detect.

Schemes name their null (:meth:`fingerprint.schemes.Scheme.null`); nothing else needs to know
which scheme produced the scores.

=========================  ==============================================================
:class:`BinomialNull`      total of ``trials_per_item`` Bernoulli(p) flags per item (green
                           flags; tournament g-bits): P[Binom(n * m, p) >= total]
:class:`GammaNull`         sum of n Exp(1) scores (Gumbel): P[Gamma(n, 1) >= total]
:class:`ShiftNull`         SynthID's total over a random key's shifts: the depth-fold
                           convolution of the shift histogram (exact over the key space)
:class:`WeightedBernoulliNull`  sum of fixed weights times Bernoulli(p) flags (logprob
                           statistic), Lugannani-Rice saddlepoint tail
:class:`WeightedExponentialNull`  sum of fixed weights times Exp(1) scores (saddlepoint)
:class:`GammaSumNull`      sum of n scores ``a E + b E'`` (dual-key Gumbel): ``a G_1 + b G_2``
                           with independent Gamma(n, 1), exact series in log space
:class:`WeightedGammaSumNull`  fixed weights times such scores (saddlepoint)
=========================  ==============================================================
"""

from __future__ import annotations

import abc
import functools
import math
from typing import Callable

import numpy as np
from scipy import integrate, special, stats

from ..errors import ParameterError
from .bayes import log10_bayes_factor_binomial, log10_bayes_factor_gamma
from .exact import (Effect, TestResult, binomial_test, check_confidence_level, gamma_test,
                    log10_binomial_sf_array, log10_gamma_sf_array, log_gamma_sf)
from .saddlepoint import weighted_bernoulli_test, weighted_exponential_test
from .sequential import betting_log10_e, binomial_mixture_log10_e, gamma_mixture_log10_e

__all__ = ["NullModel", "BinomialNull", "GammaNull", "ShiftNull", "WeightedBernoulliNull",
           "WeightedExponentialNull", "GammaSumNull", "WeightedGammaSumNull"]

_TINY_LOG10 = math.log10(np.finfo(float).tiny)


class NullModel(abc.ABC):
    """The distribution under H0 of the total score over ``n_items`` scored items.

    Attributes
    ----------
    test_name:
        What the test is called in reports (``"binomial"``, ``"gamma"``, ...).
    n_items:
        Scored items (distinct tuples or windows).
    n_trials:
        What ``null_rate`` is a rate per: items times trials per item (g-bits), or the
        weight mass for weighted statistics.
    null_rate:
        Expected total per trial under H0 (gamma, 1/2, or 1 for a mean score).
    effect_prior_default:
        Upper end of the default uniform prior over the effect under H1.
    """

    test_name: str
    n_items: int
    n_trials: float
    null_rate: float
    effect_prior_default: float

    @abc.abstractmethod
    def log10_sf(self, totals: np.ndarray) -> np.ndarray:
        """log10 P[T >= t] for each total ``(r,)`` -> ``(r,)``; finite far below 1e-300."""

    @abc.abstractmethod
    def randomized_pvalues(self, totals: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``P[T > t] + u P[T = t]`` for each total, ``(r,)``: exactly U(0, 1) under H0 for
        ``u ~ U(0, 1)`` (the tail itself for continuous statistics)."""

    @abc.abstractmethod
    def effect(self, total: float, *, confidence_level: float = 0.95) -> Effect:
        """Observed rate per trial minus ``null_rate``, with its interval."""

    @abc.abstractmethod
    def log10_bayes_factor(self, total: float, effect_max: float | None = None) -> float:
        """log10 Bayes factor of H1 "effect ~ Uniform(0, effect_max)" against H0."""

    @abc.abstractmethod
    def prefix(self, m: int) -> "NullModel":
        """The null of the first ``m`` items (in corpus order), for trajectories."""

    def log10_sf_prefixes(self, totals: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """log10 P[T_m >= t] for pairs (total, prefix size m), ``(r,)`` each."""
        return np.array([float(self.prefix(int(m)).log10_sf(np.array([t]))[0]) for t, m in zip(totals, sizes)])

    # ---- anytime-valid evidence ------------------------------------------------------------
    def log10_eprocess(self, item_scores: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """Running log10 e-values after each item, items in arrival order; ``item_scores`` ``(n,)``
        are the items' own (unweighted) scores; ``at`` (sorted item indices, default all) picks
        the times to evaluate, ``(len(at),)`` out. ``min(1, 1 / max E)`` over any set of times is
        a p-value valid under optional stopping (:mod:`fingerprint.stats.sequential`). Raises
        :class:`ParameterError` for a statistic without an e-process."""
        raise ParameterError(f"the {self.test_name} statistic has no anytime-valid e-process here")

    def log10_eprocess_of_prefixes(self, prefix_sums: np.ndarray, n_items: np.ndarray) -> np.ndarray:
        """The running log10 e-values of :meth:`log10_eprocess` from the statistic's prefix sums
        ``(t,)`` after ``n_items`` ``(t,)`` items each (float64): what a corpus scored in pieces
        (partitions on several workers) gives, number for number. Raises like
        :meth:`log10_eprocess`."""
        raise ParameterError(f"the {self.test_name} statistic has no anytime-valid e-process here")

    # ---- alternatives: the same statistic at another per-trial rate ------------------------
    def log_likelihood(self, totals: np.ndarray, sizes: np.ndarray, rate: float) -> np.ndarray:
        """Natural log of the density (or mass) of each total ``(r,)`` of ``sizes`` ``(r,)`` items
        when the rate per trial is ``rate`` (this null's own at ``rate = null_rate``): the
        likelihood of a fitted alternative, e.g. a mixture of per-response totals. Raises
        :class:`ParameterError` for a statistic without such a one-parameter family."""
        raise ParameterError(f"the {self.test_name} null has no likelihood at other per-trial rates")

    def rate_mle(self, totals: np.ndarray, sizes: np.ndarray, weights: np.ndarray | None = None, *,
                 at_least: float = -math.inf) -> float:
        """Maximum-likelihood rate per trial of totals ``(r,)`` of ``sizes`` ``(r,)`` items, each
        pair weighted by ``weights`` ``(r,)`` (an EM step), at least ``at_least`` and inside the
        valid range of rates. Raises :class:`ParameterError` like :meth:`log_likelihood`."""
        raise ParameterError(f"the {self.test_name} null has no likelihood at other per-trial rates")

    def trial_sd(self) -> float:
        """Standard deviation of one trial's score under H0 (the scale for separations between
        rates). Raises :class:`ParameterError` like :meth:`log_likelihood`."""
        raise ParameterError(f"the {self.test_name} null has no per-trial standard deviation")

    def test(self, total: float, *, confidence_level: float = 0.95) -> TestResult:
        """The exact one-sided test of H0 for the observed ``total``."""
        check_confidence_level(confidence_level)
        log10_p = float(self.log10_sf(np.array([float(total)]))[0])
        return TestResult(self.test_name, float(total), self.n_items, self.null_rate, min(0.0, log10_p),
                          self.effect(total, confidence_level=confidence_level))

    def tests(self, totals: np.ndarray, *, confidence_level: float = 0.95) -> list[TestResult]:
        """:meth:`test` of each of many observed totals ``(k,)`` (many keys on the same items);
        nulls with a closed-form interval do it in one array pass."""
        return [self.test(float(t), confidence_level=confidence_level) for t in np.asarray(totals, dtype=np.float64)]

    # ---- what the data could detect -----------------------------------------------------
    def _total_range(self) -> tuple[float, float]:
        """Totals between which the critical value is searched."""
        return 0.0, float(self.n_trials)

    def critical_total(self, log10_alpha: float) -> float:
        """Smallest total whose tail is at most ``alpha`` (``inf`` when none is reachable)."""
        lo, hi = self._total_range()
        if float(self.log10_sf(np.array([hi]))[0]) > log10_alpha:
            return math.inf
        if float(self.log10_sf(np.array([lo]))[0]) <= log10_alpha:
            return lo
        for _ in range(80):  # bisection: lo fails, hi passes
            mid = 0.5 * (lo + hi)
            if self._discrete:
                mid = math.floor(mid)
                if mid <= lo:
                    break
            if float(self.log10_sf(np.array([mid]))[0]) <= log10_alpha:
                hi = mid
            else:
                lo = mid
            if not self._discrete and hi - lo <= 1e-9 * max(1.0, hi):
                break
            if self._discrete and hi - lo <= 1:
                break
        return hi

    _discrete: bool = True

    def min_detectable_effect(self, log10_alpha: float) -> float:
        """The smallest effect (rate per trial above ``null_rate``) whose expected total would
        reach ``alpha``: ``critical_total / n_trials - null_rate``; ``inf`` when unreachable."""
        if self.n_items == 0 or self.n_trials <= 0:
            return math.inf
        crit = self.critical_total(log10_alpha)
        return crit / self.n_trials - self.null_rate if math.isfinite(crit) else math.inf

    def items_needed(self, effect: float, log10_alpha: float) -> float:
        """About how many items (of the same kind) are needed to detect ``effect`` at alpha; by
        default scaled from this null's minimum detectable effect (which falls as 1/sqrt(n))."""
        mde = self.min_detectable_effect(log10_alpha)
        if self.n_items == 0:
            return math.inf
        if not math.isfinite(mde):
            mde = 1.0
        return float(math.ceil(self.n_items * max(1.0, (mde / effect) ** 2)))


class BinomialNull(NullModel):
    """``trials_per_item`` independent Bernoulli(``p``) flags per item: the total is
    Binom(n_items * trials_per_item, p). Green flags (m = 1) and tournament g-bits (m layers)."""

    test_name = "binomial"

    def __init__(self, n_items: int, p: float, trials_per_item: int = 1, *, sequential: bool = True) -> None:
        if not 0 < p < 1:
            raise ParameterError(f"p must be in (0, 1), got {p!r}")
        #: False when the flags are only conservative for a fixed n (e.g. drawn without replacement
        #: within a window): then there is no e-process.
        self.sequential = bool(sequential)
        self.n_items = int(n_items)
        self.p = float(p)
        self.trials_per_item = int(trials_per_item)
        self.n_trials = self.n_items * self.trials_per_item
        self.null_rate = self.p
        self.effect_prior_default = min(0.1, 1.0 - self.p)

    def __repr__(self) -> str:
        return f"BinomialNull(n_items={self.n_items}, p={self.p}, trials_per_item={self.trials_per_item})"

    def log10_sf(self, totals: np.ndarray) -> np.ndarray:
        return log10_binomial_sf_array(np.rint(np.asarray(totals, dtype=np.float64)), np.asarray(self.n_trials), self.p)

    def log10_sf_prefixes(self, totals: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        return log10_binomial_sf_array(np.rint(np.asarray(totals, dtype=np.float64)),
                                       np.asarray(sizes) * self.trials_per_item, self.p)

    def randomized_pvalues(self, totals: np.ndarray, u: np.ndarray) -> np.ndarray:
        k = np.rint(np.asarray(totals, dtype=np.float64))
        return stats.binom.sf(k, self.n_trials, self.p) + u * stats.binom.pmf(k, self.n_trials, self.p)

    def effect(self, total: float, *, confidence_level: float = 0.95) -> Effect:
        return self.test(total, confidence_level=confidence_level).effect

    def test(self, total: float, *, confidence_level: float = 0.95) -> TestResult:
        return binomial_test(int(round(total)), int(self.n_trials), self.p, confidence_level=confidence_level)

    def tests(self, totals: np.ndarray, *, confidence_level: float = 0.95) -> list[TestResult]:
        """As :meth:`test` for each total ``(k,)``: exact tails and Clopper-Pearson intervals
        (beta quantiles) in one array pass each."""
        check_confidence_level(confidence_level)
        k = np.rint(np.asarray(totals, dtype=np.float64))
        n, p = int(self.n_trials), self.p
        if k.size == 0:
            return []
        if n == 0:
            return [self.test(float(t), confidence_level=confidence_level) for t in k]
        if (k < 0).any() or (k > n).any():
            raise ParameterError(f"totals must be counts in [0, {n}]")
        log10 = np.minimum(0.0, self.log10_sf(k))
        a = 1.0 - confidence_level
        with np.errstate(invalid="ignore"):
            low = np.where(k > 0, stats.beta.ppf(a / 2, np.maximum(k, 1), n - k + 1), 0.0)
            high = np.where(k < n, stats.beta.ppf(1 - a / 2, k + 1, np.maximum(n - k, 1)), 1.0)
        return [TestResult("binomial", float(ki), n, p, float(lp),
                           Effect(float(ki / n - p), float(lo) - p, float(hi) - p, confidence_level, "clopper-pearson"))
                for ki, lp, lo, hi in zip(k, log10, low, high)]

    def log10_bayes_factor(self, total: float, effect_max: float | None = None) -> float:
        e = self.effect_prior_default if effect_max is None else effect_max
        return log10_bayes_factor_binomial(int(round(total)), int(self.n_trials), self.p, e)

    def prefix(self, m: int) -> "BinomialNull":
        return BinomialNull(m, self.p, self.trials_per_item, sequential=self.sequential)

    def log10_eprocess(self, item_scores: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        if not self.sequential:
            raise ParameterError("this binomial null is conservative only for a fixed number of tuples (flags of "
                                 "one window are drawn without replacement): no anytime-valid e-process")
        k = np.cumsum(np.asarray(item_scores, dtype=np.float64))
        idx = np.arange(k.size) if at is None else np.asarray(at, dtype=np.int64)
        return self.log10_eprocess_of_prefixes(k[idx], idx + 1.0)

    def log10_eprocess_of_prefixes(self, prefix_sums: np.ndarray, n_items: np.ndarray) -> np.ndarray:
        if not self.sequential:
            raise ParameterError("this binomial null is conservative only for a fixed number of tuples (flags of "
                                 "one window are drawn without replacement): no anytime-valid e-process")
        return binomial_mixture_log10_e(np.asarray(prefix_sums, dtype=np.float64),
                                        np.asarray(n_items, dtype=np.float64) * self.trials_per_item, self.p)

    def log_likelihood(self, totals: np.ndarray, sizes: np.ndarray, rate: float) -> np.ndarray:
        """``log P[Binom(sizes * trials_per_item, rate) = rint(total)]`` for each pair."""
        return stats.binom.logpmf(np.rint(np.asarray(totals, dtype=np.float64)),
                                  np.asarray(sizes) * self.trials_per_item, rate)

    def rate_mle(self, totals: np.ndarray, sizes: np.ndarray, weights: np.ndarray | None = None, *,
                 at_least: float = -math.inf) -> float:
        """``sum w t / sum w n m``, clipped to ``[at_least, 1 - 1e-9]`` (and above ``1e-9``)."""
        t = np.asarray(totals, dtype=np.float64)
        trials = np.asarray(sizes, dtype=np.float64) * self.trials_per_item
        w = np.ones_like(t) if weights is None else np.asarray(weights, dtype=np.float64)
        rate = float((w * t).sum() / max(float((w * trials).sum()), 1e-12))
        return float(np.clip(rate, max(at_least, 1e-9), 1 - 1e-9))

    def trial_sd(self) -> float:
        """``sqrt(p (1 - p))``."""
        return math.sqrt(self.p * (1 - self.p))

    def items_needed(self, effect: float, log10_alpha: float) -> float:
        """Smallest item count whose minimum detectable effect is at most ``effect`` (exact search;
        it does not depend on this null's own count, so it is cached across nulls and keys)."""
        return _binomial_items_needed(self.p, self.trials_per_item, float(effect), float(log10_alpha))


def _smallest_count(mde: Callable[[int], float], effect: float) -> float:
    """Smallest n >= 1 with ``mde(n) <= effect`` (``mde`` non-increasing), by doubling and bisection."""
    if effect <= 0 or mde(1 << 40) > effect:
        return math.inf
    lo, hi = 0, 1
    while mde(hi) > effect:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if mde(mid) > effect:
            lo = mid
        else:
            hi = mid
    return float(hi)


@functools.lru_cache(maxsize=256)
def _binomial_items_needed(p: float, trials_per_item: int, effect: float, log10_alpha: float) -> float:
    return _smallest_count(lambda n: BinomialNull(n, p, trials_per_item).min_detectable_effect(log10_alpha), effect)


@functools.lru_cache(maxsize=256)
def _gamma_items_needed(effect: float, log10_alpha: float) -> float:
    return _smallest_count(lambda n: GammaNull(n).min_detectable_effect(log10_alpha), effect)


class GammaNull(NullModel):
    """The sum of ``n_items`` independent Exp(1) scores: Gamma(n, 1) (Gumbel-max scores)."""

    test_name = "gamma"
    _discrete = False
    effect_prior_default = 0.5
    null_rate = 1.0

    def __init__(self, n_items: int) -> None:
        self.n_items = int(n_items)
        self.n_trials = self.n_items

    def __repr__(self) -> str:
        return f"GammaNull(n_items={self.n_items})"

    def log10_sf(self, totals: np.ndarray) -> np.ndarray:
        return log10_gamma_sf_array(np.asarray(totals, dtype=np.float64), np.asarray(self.n_items))

    def log10_sf_prefixes(self, totals: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        return log10_gamma_sf_array(np.asarray(totals, dtype=np.float64), np.asarray(sizes))

    def randomized_pvalues(self, totals: np.ndarray, u: np.ndarray) -> np.ndarray:
        t = np.asarray(totals, dtype=np.float64)
        if self.n_items == 0:
            return np.asarray(u, dtype=np.float64) * np.ones_like(t)
        return special.gammaincc(self.n_items, t)

    def effect(self, total: float, *, confidence_level: float = 0.95) -> Effect:
        return self.test(total, confidence_level=confidence_level).effect

    def test(self, total: float, *, confidence_level: float = 0.95) -> TestResult:
        return gamma_test(float(total), self.n_items, confidence_level=confidence_level)

    def log10_bayes_factor(self, total: float, effect_max: float | None = None) -> float:
        e = self.effect_prior_default if effect_max is None else effect_max
        return log10_bayes_factor_gamma(float(total), self.n_items, e)

    def prefix(self, m: int) -> "GammaNull":
        return GammaNull(m)

    def log10_eprocess(self, item_scores: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        s = np.cumsum(np.asarray(item_scores, dtype=np.float64))
        idx = np.arange(s.size) if at is None else np.asarray(at, dtype=np.int64)
        return self.log10_eprocess_of_prefixes(s[idx], idx + 1.0)

    def log10_eprocess_of_prefixes(self, prefix_sums: np.ndarray, n_items: np.ndarray) -> np.ndarray:
        return gamma_mixture_log10_e(np.asarray(prefix_sums, dtype=np.float64), np.asarray(n_items, dtype=np.float64))

    def log_likelihood(self, totals: np.ndarray, sizes: np.ndarray, rate: float) -> np.ndarray:
        """Log density of Gamma(sizes, scale=rate) at each total: ``sizes`` Exp scores of mean ``rate``."""
        return stats.gamma.logpdf(np.asarray(totals, dtype=np.float64), np.asarray(sizes), scale=rate)

    def rate_mle(self, totals: np.ndarray, sizes: np.ndarray, weights: np.ndarray | None = None, *,
                 at_least: float = -math.inf) -> float:
        """``sum w t / sum w n`` (the mean score), at least ``at_least`` (and above ``1e-9``)."""
        t = np.asarray(totals, dtype=np.float64)
        n = np.asarray(sizes, dtype=np.float64)
        w = np.ones_like(t) if weights is None else np.asarray(weights, dtype=np.float64)
        rate = float((w * t).sum() / max(float((w * n).sum()), 1e-12))
        return max(rate, at_least, 1e-9)

    def trial_sd(self) -> float:
        """1: the standard deviation of an Exp(1) score."""
        return 1.0

    def _total_range(self) -> tuple[float, float]:
        hi = max(1.0, 2.0 * self.n_items)
        while float(self.log10_sf(np.array([hi]))[0]) > -400:
            hi *= 2
        return 0.0, hi

    def items_needed(self, effect: float, log10_alpha: float) -> float:
        return _gamma_items_needed(float(effect), float(log10_alpha))


class ShiftNull(NullModel):
    """Exact null of a total ``T = sum_d C(k_d)`` over ``depth`` independent uniform shifts ``k_d``,
    with ``C(k) = sum_{u in units} G(u + k mod N)`` (SynthID's g-values over a power-of-two table).

    ``units``: ``(s,)`` distinct values in ``[0, N)``, in corpus order; ``shift_g``: ``(N,)`` the
    0/1 value of each position; ``depth``: number of keys. ``n_trials`` (g-bits) = ``s * depth``.
    The histogram of ``C`` over all ``N`` shifts comes from one FFT cross-correlation; its
    depth-fold convolution is direct, so tails keep their relative precision. The smallest
    reachable p-value is ``N ** -depth``.
    """

    test_name = "synthid-shift"
    effect_prior_default = 0.1

    def __init__(self, units: np.ndarray, shift_g: np.ndarray, depth: int) -> None:
        size = shift_g.size
        self.units = np.asarray(units, dtype=np.int64)
        self.shift_g = shift_g
        self.n_items = int(self.units.size)
        self.depth = int(depth)
        self.n_trials = self.n_items * self.depth
        indicator = np.zeros(size)
        indicator[self.units] = 1.0
        corr = np.fft.irfft(np.conj(np.fft.rfft(indicator)) * np.fft.rfft(shift_g.astype(np.float64)), n=size)
        self.correlation = np.rint(corr).astype(np.int64)  # C(k) for every shift k, (N,)
        low = int(self.correlation.min())
        single = np.bincount(self.correlation - low) / size
        pmf = np.ones(1)
        for _ in range(self.depth):
            pmf = np.convolve(pmf, single)
        self.offset = low * self.depth
        self.pmf = pmf  # P[T = offset + j]
        self.sf = np.cumsum(pmf[::-1])[::-1]  # P[T >= offset + j]
        self.null_mean = float(self.correlation.mean()) * self.depth
        self.null_rate = self.null_mean / self.n_trials if self.n_trials else 0.5

    def __repr__(self) -> str:
        return f"ShiftNull(n_items={self.n_items}, depth={self.depth}, table={self.shift_g.size})"

    def log10_sf(self, totals: np.ndarray) -> np.ndarray:
        j = np.rint(np.asarray(totals, dtype=np.float64)).astype(np.int64) - self.offset
        out = np.zeros(j.shape)
        inside = (j > 0) & (j < self.sf.size)
        with np.errstate(divide="ignore"):
            out[inside] = np.log10(np.maximum(self.sf[j[inside]], np.finfo(float).tiny))
        out[j >= self.sf.size] = _TINY_LOG10
        return np.minimum(out, 0.0)

    def randomized_pvalues(self, totals: np.ndarray, u: np.ndarray) -> np.ndarray:
        j = np.rint(np.asarray(totals, dtype=np.float64)).astype(np.int64) - self.offset
        j = np.clip(j, 0, self.pmf.size - 1)
        return self.sf[j] - self.pmf[j] + u * self.pmf[j]

    def effect(self, total: float, *, confidence_level: float = 0.95) -> Effect:
        check_confidence_level(confidence_level)
        if self.n_trials == 0:
            return Effect(math.nan, math.nan, math.nan, confidence_level, "clopper-pearson")
        ci = stats.binomtest(int(round(total)), self.n_trials, 0.5).proportion_ci(
            confidence_level=confidence_level, method="exact")
        rate = self.null_rate
        return Effect(total / self.n_trials - rate, ci.low - rate, ci.high - rate, confidence_level,
                      "clopper-pearson (descriptive: g-bits of one unit are not independent)")

    def test(self, total: float, *, confidence_level: float = 0.95) -> TestResult:
        log10_p = float(self.log10_sf(np.array([total]))[0])
        return TestResult(self.test_name, float(total), int(self.n_trials), self.null_rate, log10_p,
                          self.effect(total, confidence_level=confidence_level))

    def log10_bayes_factor(self, total: float, effect_max: float | None = None) -> float:
        """Models the g-bits as independent Bernoulli(1/2) under H0 and H1 (descriptive)."""
        e = self.effect_prior_default if effect_max is None else effect_max
        return log10_bayes_factor_binomial(int(round(total)), int(self.n_trials), 0.5, e)

    def prefix(self, m: int) -> "ShiftNull":
        return ShiftNull(self.units[:m], self.shift_g, self.depth)

    def _total_range(self) -> tuple[float, float]:
        return float(self.offset), float(self.offset + self.sf.size - 1)


class _WeightedNull(NullModel):
    """Common part of the weighted-sum nulls: fixed non-negative weights ``(n,)``, one per item."""

    _discrete = False

    def __init__(self, weights: np.ndarray) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or (w.size and (not np.isfinite(w).all() or w.min() < 0)):
            raise ParameterError("weights must be a 1-D array of finite non-negative numbers")
        self.weights = w
        self.n_items = int(w.size)

    @property
    def mass(self) -> float:
        return float(self.weights.sum())

    def randomized_pvalues(self, totals: np.ndarray, u: np.ndarray) -> np.ndarray:
        # continuous to the saddlepoint's accuracy: the tail itself
        return 10.0 ** self.log10_sf(totals)

    @abc.abstractmethod
    def _moments(self, rate: float) -> tuple[float, float]:
        """Mean and variance of the total when the per-trial rate is ``rate``."""

    def effect(self, total: float, *, confidence_level: float = 0.95) -> Effect:
        check_confidence_level(confidence_level)
        if self.n_trials <= 0:
            return Effect(math.nan, math.nan, math.nan, confidence_level, "normal (weighted mass; descriptive)")
        value = total / self.n_trials - self.null_rate
        _, var = self._moments(self.null_rate)
        half = float(stats.norm.ppf(0.5 + confidence_level / 2)) * math.sqrt(var) / self.n_trials
        return Effect(value, value - half, value + half, confidence_level, "normal (weighted mass; descriptive)")

    def log10_bayes_factor(self, total: float, effect_max: float | None = None) -> float:
        """Normal approximation of the total's likelihood at each rate, integrated over the prior
        (descriptive; the p-value is the exact statistic)."""
        e_max = self.effect_prior_default if effect_max is None else effect_max
        if self.n_trials <= 0 or not e_max > 0:
            return 0.0

        def loglik(rate: float) -> float:
            mean, var = self._moments(rate)
            return float(stats.norm.logpdf(total, mean, math.sqrt(max(var, 1e-300))))

        l0 = loglik(self.null_rate)
        grid = np.linspace(0.0, e_max, 257)
        ll = np.array([loglik(self.null_rate + e) for e in grid]) - l0
        top = ll.max()
        avg = integrate.trapezoid(np.exp(ll - top), grid) / e_max
        return float((top + math.log(max(avg, 1e-300))) / math.log(10))

    def _total_range(self) -> tuple[float, float]:
        mean, _ = self._moments(self.null_rate)
        return mean, self._top()

    @abc.abstractmethod
    def _top(self) -> float: ...


class WeightedBernoulliNull(_WeightedNull):
    """``sum_i w_i B_i`` with ``multiplicity`` independent Bernoulli(p) per weight (the logprob
    statistic of green-list and tournament schemes); tail by the Lugannani-Rice saddlepoint."""

    test_name = "weighted-bernoulli-saddlepoint"

    def __init__(self, weights: np.ndarray, p: float, multiplicity: int = 1) -> None:
        super().__init__(weights)
        if not 0 < p < 1:
            raise ParameterError(f"p must be in (0, 1), got {p!r}")
        self.p = float(p)
        self.multiplicity = int(multiplicity)
        self.n_trials = self.multiplicity * self.mass
        self.null_rate = self.p
        self.effect_prior_default = min(0.1, 1.0 - self.p)

    def __repr__(self) -> str:
        return f"WeightedBernoulliNull(n_items={self.n_items}, p={self.p}, multiplicity={self.multiplicity})"

    def log10_sf(self, totals: np.ndarray) -> np.ndarray:
        return np.array([min(0.0, weighted_bernoulli_test(float(t), self.weights, self.p,
                                                          multiplicity=self.multiplicity))
                         for t in np.atleast_1d(np.asarray(totals, dtype=np.float64))])

    def _moments(self, rate: float) -> tuple[float, float]:
        rate = min(max(rate, 0.0), 1.0)
        return (self.multiplicity * rate * self.mass,
                self.multiplicity * rate * (1 - rate) * float((self.weights ** 2).sum()))

    def _top(self) -> float:
        return self.multiplicity * self.mass

    def prefix(self, m: int) -> "WeightedBernoulliNull":
        return WeightedBernoulliNull(self.weights[:m], self.p, self.multiplicity)

    def log10_eprocess(self, item_scores: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        mu = self.multiplicity * self.p
        e = betting_log10_e(np.asarray(item_scores, dtype=np.float64) - mu, self.weights, mu)
        return e if at is None else e[np.asarray(at, dtype=np.int64)]


class WeightedExponentialNull(_WeightedNull):
    """``sum_i w_i E_i`` with E_i independent Exp(1) (the logprob statistic of Gumbel schemes)."""

    test_name = "weighted-exponential-saddlepoint"
    null_rate = 1.0
    effect_prior_default = 0.5

    def __init__(self, weights: np.ndarray) -> None:
        super().__init__(weights)
        self.n_trials = self.mass

    def __repr__(self) -> str:
        return f"WeightedExponentialNull(n_items={self.n_items})"

    def log10_sf(self, totals: np.ndarray) -> np.ndarray:
        return np.array([min(0.0, weighted_exponential_test(float(t), self.weights))
                         for t in np.atleast_1d(np.asarray(totals, dtype=np.float64))])

    def _moments(self, rate: float) -> tuple[float, float]:
        return rate * self.mass, rate * rate * float((self.weights ** 2).sum())

    def _top(self) -> float:
        hi = max(1.0, 4.0 * self.mass)
        while float(self.log10_sf(np.array([hi]))[0]) > -400 and hi < 1e12:
            hi *= 2
        return hi

    def prefix(self, m: int) -> "WeightedExponentialNull":
        return WeightedExponentialNull(self.weights[:m])

    def log10_eprocess(self, item_scores: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        e = betting_log10_e(np.asarray(item_scores, dtype=np.float64) - 1.0, self.weights, 1.0)
        return e if at is None else e[np.asarray(at, dtype=np.int64)]


# ---- sums of two Gamma variables with different scales (dual-key Gumbel) -----------------------

#: Terms of the mixture series are summed to this many nats below the largest one on each side
#: (e**-60 ~ 1e-26 relative); what lies beyond is bounded by a geometric series and added.
_SERIES_NATS = 60.0
#: Series wider than this many terms (the curvature's standard deviation) are summed at every
#: ``sd / 4``-th term (see :class:`GammaSumNull`).
_STEP_FROM_SD = 8.0


def _log_gammacf_array(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log of the continued fraction of Gamma(a, x) e^x x^-a, elementwise, for x > a + 1
    (modified Lentz, as :func:`fingerprint.stats.exact.log_gamma_sf` in one dimension)."""
    tiny, eps = 1e-300, 1e-16
    b = x + 1.0 - a
    c = np.full(a.shape, 1.0 / tiny)
    d = 1.0 / b
    h = d.copy()
    live = np.arange(a.size)
    for i in range(1, 10_000 + int(20 * math.sqrt(float(a.max(initial=1.0))))):
        an = -i * (i - a[live])
        b[live] += 2.0
        dd = an * d[live] + b[live]
        dd = np.where(np.abs(dd) < tiny, tiny, dd)
        cc = b[live] + an / c[live]
        cc = np.where(np.abs(cc) < tiny, tiny, cc)
        dd = 1.0 / dd
        delta = dd * cc
        d[live], c[live] = dd, cc
        h[live] *= delta
        live = live[np.abs(delta - 1.0) >= eps]
        if live.size == 0:
            break
    if not (h > 0).all():
        raise ArithmeticError("incomplete gamma continued fraction did not converge")
    return np.log(h)


def _log_upper_gamma(s: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Natural log of the regularized upper incomplete gamma ``Q(s, x)``, elementwise (``s > 0``,
    ``x >= 0``), finite far below 1e-300."""
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        q = special.gammaincc(s, x)
        out = np.log(q)
    deep = ~(q >= 1e-280)  # there x > s + 1
    if deep.any():
        sd, xd = s[deep], x[deep]
        out[deep] = -xd + sd * np.log(xd) - special.gammaln(sd) + _log_gammacf_array(sd, xd)
    return np.minimum(out, 0.0)


class GammaSumNull(NullModel):
    """The total of ``n_items`` scores ``a E_i + b E'_i``, all ``E`` independent Exp(1):
    ``T = a G_1 + b G_2`` with ``G_1, G_2`` independent Gamma(n, 1) (a hypoexponential-type sum).

    The dual-key Gumbel statistic (vLLM's weighted early fusion: ``a = 1 - alpha``, ``b = alpha``).
    Exact tail: for ``a > b``, Gamma(n, scale a) is the mixture over ``K ~ NegBin(n, b / a)`` of
    Gamma(n + K, scale b) (their moment generating functions agree), so ``T = b Gamma(2n + K, 1)``
    and ``P[T >= t] = sum_k P[K = k] Q(2n + k, t / b)``, ``Q`` the regularized upper incomplete
    gamma function (the density likewise, with Gamma densities). ``a = b`` is Gamma(2n, scale a).
    Both factors are log-concave in ``k``, so the terms rise to one mode and fall: the series is
    summed in log space around the mode to ``e**-60`` of its top on both sides, and the rest is
    bounded by geometric series and added (an upper bound, relative excess below ``e**-60``).
    Series wider than 8 terms (standard deviation of the terms around the mode) are summed at
    every ``sd / 4``-th term times the step: for a smooth bump of that width the two sums differ
    by about ``2 exp(-2 pi**2 16)`` ~ 1e-137 relatively (Poisson summation), far below double
    precision; the tests check the sums against a 60-digit closed form and against each other.
    """

    test_name = "gamma-sum"
    _discrete = False
    effect_prior_default = 0.5

    def __init__(self, n_items: int, scales: tuple[float, float]) -> None:
        a, b = (float(x) for x in scales)
        if not (math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0):
            raise ParameterError(f"scales must be two finite numbers > 0, got {scales!r}")
        self.n_items = int(n_items)
        self.n_trials = self.n_items
        self.scales = (a, b)
        self.null_rate = a + b
        self._big, self._small = max(a, b), min(a, b)

    def __repr__(self) -> str:
        return f"GammaSumNull(n_items={self.n_items}, scales={self.scales})"

    # ---- the series ------------------------------------------------------------------------
    def _log_terms(self, k: np.ndarray, n: np.ndarray, x: np.ndarray, density: bool) -> np.ndarray:
        """log P[K = k] + log Q(2n + k, x) (or + log of the Gamma(2n + k) density at x), elementwise."""
        p = self._small / self._big
        nb = (special.gammaln(n + k) - special.gammaln(k + 1) - special.gammaln(n) + n * math.log(p)
              + k * math.log1p(-p))
        s = 2 * n + k
        if density:
            return nb + (s - 1) * np.log(x) - x - special.gammaln(s)
        return nb + _log_upper_gamma(s, x)

    def _log_series(self, totals: np.ndarray, sizes: np.ndarray, density: bool = False) -> np.ndarray:
        """Natural log of ``P[T_m >= t]`` (or of the density of ``T_m`` at ``t``) for pairs
        (total ``t``, items ``m``), ``(r,)`` each, all pairs at once."""
        t = np.atleast_1d(np.asarray(totals, dtype=np.float64))
        m = np.broadcast_to(np.asarray(sizes, dtype=np.float64), t.shape)
        out = np.full(t.shape, -math.inf if density else 0.0)
        live = np.flatnonzero((m > 0) & (t > 0))
        if live.size == 0:
            return out
        if self._big == self._small:
            tt, mm = t[live] / self._big, 2 * m[live]
            if density:
                out[live] = stats.gamma.logpdf(tt, mm) - math.log(self._big)
            else:
                out[live] = _log_upper_gamma(mm, tt)
            return out
        n, x = m[live], t[live] / self._small
        p = self._small / self._big

        def f(k: np.ndarray, sel: np.ndarray) -> np.ndarray:
            return self._log_terms(k, n[sel], x[sel], density)

        def falls(k: np.ndarray, sel: np.ndarray) -> np.ndarray:
            return f(k + 1, sel) < f(k, sel)

        # the mode: the first k whose forward difference is negative (non-increasing: concave)
        mean = n * (1 - p) / p
        hi = np.floor(np.maximum.reduce([np.ones_like(n), mean + 10 * np.sqrt(mean / p + 1),
                                         x * (1 - p) - 2 * n + 10 * np.sqrt(x) + 10]))
        all_idx = np.arange(n.size)
        grow = all_idx[~falls(hi, all_idx)]
        while grow.size:
            hi[grow] *= 2
            if (hi[grow] > 2.0 ** 60).any():
                raise ParameterError("gamma-sum series: no mode found (total out of range)")
            grow = grow[~falls(hi[grow], grow)]
        lo = np.zeros_like(hi)
        active = all_idx[lo < hi]
        while active.size:
            mid = np.floor((lo[active] + hi[active]) / 2)
            fl = falls(mid, active)
            hi[active[fl]] = mid[fl]
            lo[active[~fl]] = mid[~fl] + 1
            active = active[lo[active] < hi[active]]
        mode = lo
        at = np.maximum(mode, 1.0)  # curvature around the mode (at 1 when the mode is 0)
        curv = f(at + 1, all_idx) + f(at - 1, all_idx) - 2 * f(at, all_idx)
        with np.errstate(divide="ignore", invalid="ignore"):
            sd = np.where(curv < 0, 1.0 / np.sqrt(-curv), 1024.0)
        half = np.ceil(np.maximum(16.0, 14.0 * sd))
        todo = all_idx
        result = np.empty(n.size)
        while todo.size:
            h = half[todo]
            step = np.where((sd[todo] >= _STEP_FROM_SD) & (mode[todo] - h > 0), np.floor(sd[todo] / 4), 1.0)
            first = np.where(step > 1, mode[todo] - np.ceil(h / step) * step, np.maximum(0.0, mode[todo] - h))
            count = np.floor((mode[todo] + h - first) / step).astype(np.int64) + 1
            starts = np.concatenate(([0], np.cumsum(count)[:-1]))
            owner = np.repeat(np.arange(todo.size), count)
            k = first[owner] + step[owner] * (np.arange(int(count.sum())) - starts[owner])
            terms = f(k, todo[owner])
            top = np.maximum.reduceat(terms, starts)
            ends = starts + count - 1
            ok = (terms[ends] < top - _SERIES_NATS) & ((first == 0) | (terms[starts] < top - _SERIES_NATS))
            total = top + np.log(np.add.reduceat(np.exp(terms - top[owner]), starts)) + np.log(step)
            # beyond the window the terms fall at least at the rate of the last step (concavity)
            slope_hi = np.minimum((terms[ends] - terms[ends - 1]) / step, -1e-300)
            total = np.logaddexp(total, terms[ends] + slope_hi - np.log(-np.expm1(slope_hi)))
            slope_lo = np.minimum((terms[starts] - terms[starts + 1]) / step, -1e-300)
            below = first > 0
            total[below] = np.logaddexp(total[below], (terms[starts] + slope_lo
                                                       - np.log(-np.expm1(slope_lo)))[below])
            result[todo[ok]] = total[ok]
            half[todo[~ok]] *= 2
            todo = todo[~ok]
        if density:
            result -= math.log(self._small)
        out[live] = result if density else np.minimum(result, 0.0)
        return out

    def log_sf(self, total: float, n: int | None = None) -> float:
        """Natural log of ``P[T >= total]`` over ``n`` items (default ``n_items``)."""
        return float(self._log_series(np.array([float(total)]), np.array([self.n_items if n is None else n]))[0])

    def log_pdf(self, total: float, n: int | None = None) -> float:
        """Natural log of the density of ``T`` at ``total`` over ``n`` items (default ``n_items``)."""
        return float(self._log_series(np.array([float(total)]), np.array([self.n_items if n is None else n]),
                                      density=True)[0])

    # ---- NullModel -------------------------------------------------------------------------
    def log10_sf(self, totals: np.ndarray) -> np.ndarray:
        t = np.atleast_1d(np.asarray(totals, dtype=np.float64))
        return self._log_series(t, np.full(t.shape, self.n_items)) / math.log(10)

    def log10_sf_prefixes(self, totals: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        return self._log_series(np.asarray(totals, dtype=np.float64), np.asarray(sizes)) / math.log(10)

    def randomized_pvalues(self, totals: np.ndarray, u: np.ndarray) -> np.ndarray:
        if self.n_items == 0:
            return np.asarray(u, dtype=np.float64) * np.ones(np.shape(totals))
        return 10.0 ** self.log10_sf(totals)

    def _solve(self, log10_target: float) -> float:
        """The total whose log10 tail is ``log10_target`` (< 0)."""
        from scipy.optimize import brentq

        n = self.n_items
        mean, sd = n * self.null_rate, math.sqrt(n) * self.trial_sd()
        lo, hi = max(0.0, mean - 8 * sd), mean + 8 * sd
        gap = lambda v: float(self.log10_sf(np.array([v]))[0]) - log10_target  # noqa: E731
        while gap(hi) > 0:
            hi = 2 * hi + 1
        while lo > 0 and gap(lo) < 0:
            lo /= 2
        if gap(lo) < 0:
            return lo
        return float(brentq(gap, lo, hi, xtol=1e-12, rtol=1e-13))

    def critical_total(self, log10_alpha: float) -> float:
        """Smallest total whose tail is at most ``alpha`` (a root of the continuous tail)."""
        if self.n_items == 0:
            return math.inf
        return self._solve(min(log10_alpha, -1e-12))

    def effect(self, total: float, *, confidence_level: float = 0.95) -> Effect:
        """Mean score minus ``a + b``; the interval is exact if the scores are this null's
        scaled by an unknown factor (as ``gamma_test``'s is for Exp scores)."""
        check_confidence_level(confidence_level)
        method = "gamma-sum-exact-scale-model"
        if self.n_items == 0:
            return Effect(math.nan, math.nan, math.nan, confidence_level, method)
        alpha = 1.0 - confidence_level
        q_hi, q_lo = self._solve(math.log10(alpha / 2)), self._solve(math.log10(1 - alpha / 2))
        rate, n, t = self.null_rate, self.n_items, float(total)
        # T = theta X: theta in [T / q_hi, T / q_lo]; the rate per trial is theta (a + b)
        return Effect(t / n - rate, t / q_hi * rate - rate, (t / q_lo * rate if q_lo > 0 else math.inf) - rate,
                      confidence_level, method)

    def test(self, total: float, *, confidence_level: float = 0.95) -> TestResult:
        t = float(total)
        if not math.isfinite(t) or t < 0:
            raise ParameterError(f"total must be finite and >= 0, got {total!r}")
        log10_p = self.log_sf(t) / math.log(10)
        return TestResult(self.test_name, t, self.n_items, self.null_rate, min(0.0, log10_p),
                          self.effect(t, confidence_level=confidence_level))

    def log10_bayes_factor(self, total: float, effect_max: float | None = None) -> float:
        """H1: the scores are this null's scaled by ``1 + e / (a + b)``, ``e ~ Uniform(0, effect_max)``
        (exact densities, integrated on a grid)."""
        e_max = self.effect_prior_default if effect_max is None else effect_max
        t = float(total)
        if self.n_items == 0 or not e_max > 0 or t <= 0:
            return 0.0
        grid = np.linspace(0.0, e_max, 65)
        theta = 1.0 + grid / self.null_rate
        ll = self._log_series(t / theta, np.full(theta.shape, self.n_items), density=True) - np.log(theta)
        ll -= ll[0]
        top = float(ll.max())
        avg = integrate.trapezoid(np.exp(ll - top), grid) / e_max
        return float((top + math.log(max(avg, 1e-300))) / math.log(10))

    def prefix(self, m: int) -> "GammaSumNull":
        return GammaSumNull(m, self.scales)

    def log10_eprocess(self, item_scores: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """The Exp(1) gamma-mixture e-process on the scores divided by ``c = a + b``: each factor
        ``(1 - lam) exp(lam s / c)`` has null mean ``(1 - lam) / (1 - lam + ab lam**2 / c**2) <= 1``,
        so the mixture is a non-negative supermartingale under this null too."""
        s = np.cumsum(np.asarray(item_scores, dtype=np.float64)) / self.null_rate
        idx = np.arange(s.size) if at is None else np.asarray(at, dtype=np.int64)
        return gamma_mixture_log10_e(s[idx], idx + 1.0)

    def log_likelihood(self, totals: np.ndarray, sizes: np.ndarray, rate: float) -> np.ndarray:
        """Log density of each total when the scores are this null's scaled by ``rate / (a + b)``."""
        theta = rate / self.null_rate
        return self._log_series(np.asarray(totals, dtype=np.float64) / theta, np.asarray(sizes),
                                density=True) - math.log(theta)

    def rate_mle(self, totals: np.ndarray, sizes: np.ndarray, weights: np.ndarray | None = None, *,
                 at_least: float = -math.inf) -> float:
        """The mean score ``sum w t / sum w n`` (the moment estimate of the rate), at least
        ``at_least`` (and above ``1e-9``)."""
        t = np.asarray(totals, dtype=np.float64)
        n = np.asarray(sizes, dtype=np.float64)
        w = np.ones_like(t) if weights is None else np.asarray(weights, dtype=np.float64)
        return max(float((w * t).sum() / max(float((w * n).sum()), 1e-12)), at_least, 1e-9)

    def trial_sd(self) -> float:
        """``sqrt(a**2 + b**2)``."""
        return math.hypot(*self.scales)

    def _total_range(self) -> tuple[float, float]:
        hi = max(1.0, 2.0 * self.n_items * self.null_rate)
        while self.log_sf(hi) / math.log(10) > -400:
            hi *= 2
        return 0.0, hi


class WeightedGammaSumNull(WeightedExponentialNull):
    """``sum_i w_i (a E_i + b E'_i)``, all ``E`` independent Exp(1): the logprob statistic of
    dual-key Gumbel scores, as a weighted Exp(1) sum over the ``2n`` weights ``a w_i, b w_i``
    (Lugannani-Rice saddlepoint). Items are the ``n`` pairs (prefixes and the e-process count them)."""

    test_name = "weighted-gamma-sum-saddlepoint"

    def __init__(self, weights: np.ndarray, scales: tuple[float, float]) -> None:
        a, b = (float(x) for x in scales)
        if not (math.isfinite(a) and math.isfinite(b) and a >= 0 and b >= 0 and a + b > 0):
            raise ParameterError(f"scales must be two finite numbers >= 0, not both 0, got {scales!r}")
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or (w.size and (not np.isfinite(w).all() or w.min() < 0)):
            raise ParameterError("weights must be a 1-D array of finite non-negative numbers")
        super().__init__(np.concatenate([a * w, b * w]))
        self.item_weights = w
        self.scales = (a, b)
        self.n_items = int(w.size)
        self.null_rate = a + b
        self.n_trials = float(w.sum())

    def __repr__(self) -> str:
        return f"WeightedGammaSumNull(n_items={self.n_items}, scales={self.scales})"

    def _moments(self, rate: float) -> tuple[float, float]:
        scale = rate / self.null_rate  # the scores are this null's times scale
        return rate * self.n_trials, scale * scale * float((self.weights ** 2).sum())

    def prefix(self, m: int) -> "WeightedGammaSumNull":
        return WeightedGammaSumNull(self.item_weights[:m], self.scales)

    def log10_eprocess(self, item_scores: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        mu = self.null_rate
        e = betting_log10_e(np.asarray(item_scores, dtype=np.float64) - mu, self.item_weights, mu)
        return e if at is None else e[np.asarray(at, dtype=np.int64)]
