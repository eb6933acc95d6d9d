"""Statistics: exact tails in log space, null distributions as objects, Bayes factors, multiple testing.

Every p-value is an exact tail probability (no normal approximation) carried as
``log10_pvalue``, finite and accurate far below 1e-300.

Modules: :mod:`~fingerprint.stats.exact` (binomial and gamma tails and tests, effects),
:mod:`~fingerprint.stats.nulls` (one :class:`NullModel` per statistic),
:mod:`~fingerprint.stats.bayes`, :mod:`~fingerprint.stats.multiple` (Holm),
:mod:`~fingerprint.stats.saddlepoint` (weighted sums),
:mod:`~fingerprint.stats.shift` (SynthID's weighted statistic).
"""

from __future__ import annotations

from .bayes import log10_bayes_factor_binomial, log10_bayes_factor_gamma, posterior_probability
from .exact import (Effect, TestResult, binomial_test, gamma_test, log10_binomial_sf_array, log10_gamma_sf_array,
                    log_binomial_sf, log_gamma_sf)
from .multiple import benjamini_hochberg, holm, sidak_min
from .nulls import (BinomialNull, GammaNull, NullModel, ShiftNull, WeightedBernoulliNull,
                    WeightedExponentialNull)
from .saddlepoint import iid_sum_test, weighted_bernoulli_test, weighted_exponential_test
from .shift import WeightedShiftNull

__all__ = [
    "Effect", "TestResult", "binomial_test", "gamma_test", "log_binomial_sf", "log_gamma_sf",
    "log10_binomial_sf_array", "log10_gamma_sf_array",
    "log10_bayes_factor_binomial", "log10_bayes_factor_gamma", "posterior_probability",
    "holm", "benjamini_hochberg", "sidak_min",
    "NullModel", "BinomialNull", "GammaNull", "ShiftNull", "WeightedBernoulliNull", "WeightedExponentialNull",
    "WeightedShiftNull", "weighted_bernoulli_test", "weighted_exponential_test", "iid_sum_test",
]
