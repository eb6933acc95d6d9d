import math

import mpmath
import numpy as np
import pytest
from scipy import stats

from fingerprint.errors import ParameterError
from fingerprint.stats import binomial_test, gamma_test, holm, log_binomial_sf, log_gamma_sf


def sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits - 1}e}")


def test_known_values():
    assert sig(gamma_test(94 * 1.3380874395, 94).pvalue) == 1.345e-3
    assert math.isclose(gamma_test(94 * 1.3380874395, 94).pvalue, 1.34467e-3, rel_tol=1e-5)
    assert sig(binomial_test(64237, 248200, 0.25).pvalue) == 2.848e-24
    assert sig(binomial_test(20000 // 2, 20000, 0.25).log10_pvalue, 8) == -1251.4599
    assert sig(gamma_test(6000, 2000).log10_pvalue, 8) == -785.28623


def _mp_log10_binom_sf(k, n, p):
    mpmath.mp.dps = 60
    return float(mpmath.log10(mpmath.betainc(k, n - k + 1, 0, p, regularized=True)))


def _mp_log10_gamma_sf(x, n):
    mpmath.mp.dps = 60
    return float(mpmath.log10(mpmath.gammainc(n, x, mpmath.inf, regularized=True)))


@pytest.mark.parametrize("k,n,p", [(3000, 5000, 0.25), (900, 1000, 0.5), (60, 100, 0.3),
                                   (5300, 10000, 0.25), (2700, 10000, 0.25), (400, 400, 0.25)])
def test_binomial_tail_matches_high_precision(k, n, p):
    assert math.isclose(log_binomial_sf(k, n, p) / math.log(10), _mp_log10_binom_sf(k, n, p), rel_tol=1e-9)


@pytest.mark.parametrize("x,n", [(6000, 2000), (120, 100), (30, 10), (50_000, 10_000), (1500, 400)])
def test_gamma_tail_matches_high_precision(x, n):
    assert math.isclose(log_gamma_sf(x, n) / math.log(10), _mp_log10_gamma_sf(x, n), rel_tol=1e-9)


def test_log_pvalue_finite_far_below_double_range():
    r = binomial_test(10**6, 10**6, 0.25)
    assert r.pvalue == 0.0 and math.isfinite(r.log10_pvalue)
    assert math.isclose(r.log10_pvalue, 10**6 * math.log10(0.25), rel_tol=1e-12)
    assert stats.binom.logsf(10**6 - 1, 10**6, 0.25) == -np.inf  # what we improve on


def test_binomial_agrees_with_scipy_where_scipy_is_finite():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 5000))
        p = float(rng.uniform(0.01, 0.99))
        k = int(rng.integers(0, n + 1))
        expected = stats.binom.sf(k - 1, n, p)
        if expected > 1e-250:
            assert math.isclose(10 ** binomial_test(k, n, p).log10_pvalue, expected, rel_tol=1e-8)


def test_tail_is_monotone_across_the_switch_to_continued_fractions():
    lp = [log_binomial_sf(k, 10_000, 0.25) for k in range(4000, 6001, 10)]
    assert all(b < a for a, b in zip(lp, lp[1:]))
    lg = [log_gamma_sf(x, 1000) for x in np.linspace(1500, 3000, 150)]
    assert all(b < a for a, b in zip(lg, lg[1:]))


def test_effect_and_interval():
    r = binomial_test(300, 1000, 0.25)
    ci = stats.binomtest(300, 1000).proportion_ci(0.95)
    assert math.isclose(r.effect.value, 0.05)
    assert math.isclose(r.effect.ci_low, ci.low - 0.25) and math.isclose(r.effect.ci_high, ci.high - 0.25)
    g = gamma_test(1100.0, 1000)
    assert g.effect.ci_low < g.effect.value < g.effect.ci_high
    assert g.test == "gamma" and g.n == 1000 and g.null_rate == 1.0


def test_edge_cases():
    assert binomial_test(0, 10, 0.25).log10_pvalue == 0.0
    assert binomial_test(0, 0, 0.25).log10_pvalue == 0.0
    assert gamma_test(0.0, 0).log10_pvalue == 0.0


@pytest.mark.parametrize("call,match", [
    (lambda: binomial_test(5, 4, 0.25), "k=5"),
    (lambda: binomial_test(1, 4, 1.5), "1.5"),
    (lambda: binomial_test(1, 4, 0.0), "0.0"),
    (lambda: binomial_test(-1, 4, 0.25), "-1"),
    (lambda: binomial_test(1.5, 4, 0.25), "1.5"),
    (lambda: gamma_test(-1.0, 4), "-1.0"),
    (lambda: gamma_test(1.0, 4, confidence_level=1.2), "1.2"),
])
def test_bad_parameters(call, match):
    with pytest.raises(ParameterError, match=match):
        call()


def test_holm():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    adj = 10 ** holm(np.log10(p))
    # textbook: sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1 -> max(0.06, 0.04)=0.06
    assert np.allclose(adj, [0.03, 0.06, 0.06, 0.02])
    assert holm([-500.0, -1.0])[0] == pytest.approx(-500 + math.log10(2))
    with pytest.raises(ParameterError):
        holm([0.5])
