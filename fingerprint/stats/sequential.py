"""Anytime-valid evidence: e-processes over scored items in arrival order.

An e-process ``E_t`` is a nonnegative supermartingale with ``E_0 = 1`` under H0; by Ville's
inequality ``P[sup_t E_t >= 1 / alpha] <= alpha``, so ``p_t = min(1, 1 / max_{s <= t} E_s)`` is a
p-value that stays valid however the collection was stopped -- including "stop as soon as it is
small enough", under which a fixed-n p-value checked repeatedly is not valid.

All e-processes here are mixtures (averages) of test martingales, written in closed form
(no third-party library gives these exact forms with numpy speed):

* :func:`binomial_mixture_log10_e` -- Bernoulli(p0) flags (green flags; g-bits): the average over
  a log-spaced grid of alternative rates ``p0 + e`` of the likelihood ratio
  ``((p0 + e) / p0) ** k * ((1 - p0 - e) / (1 - p0)) ** (n - k)``; a martingale under H0 for
  every ``e``, a supermartingale when the true rate is below ``p0``.
* :func:`gamma_mixture_log10_e` -- Exp(1) scores (Gumbel): the average over a grid of
  ``theta > 1`` of the Exp(theta) : Exp(1) likelihood ratio ``theta ** -n * exp(S (1 - 1/theta))``.
* :func:`betting_log10_e` -- weighted statistics (logprob mode): the average over a grid of bets
  ``lambda`` of ``prod_i (1 + lambda w_i (X_i - mu))``, which has mean 1 under H0 for every
  item and stays nonnegative because ``lambda w_i mu <= 1/2`` (Waudby-Smith and Ramdas 2023).

The grids are fixed before seeing data, with equal weights in log space, so the mixture pays
about ``log10(grid size)`` for not knowing the effect and adapts to effects from 0.001 to the
largest plausible.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from ..errors import ParameterError

__all__ = ["binomial_mixture_log10_e", "gamma_mixture_log10_e", "betting_log10_e", "anytime_log10_pvalues",
           "EFFECT_GRID_SIZE"]

_LN10 = math.log(10.0)
#: Points of each mixture grid.
EFFECT_GRID_SIZE = 24


#: Points per chunk of the mixture evaluation: keeps the (points, grid) work arrays near 25 MB.
_CHUNK = 1 << 17


def _mixture_of_linear(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log10 of ``mean_j exp(x a_j + y b_j)`` for points ``x``, ``y`` ``(n,)`` and a grid ``a``, ``b``
    ``(g,)``: the average of likelihood ratios whose logs are linear in two sufficient statistics.
    Chunked, so memory stays bounded whatever ``n``."""
    x = np.ravel(x).astype(np.float64, copy=False)
    y = np.ravel(y).astype(np.float64, copy=False)
    out = np.empty(x.size)
    log_g = math.log(a.size)
    for lo in range(0, x.size, _CHUNK):
        xs, ys = x[lo:lo + _CHUNK, None], y[lo:lo + _CHUNK, None]
        z = xs * a
        z += ys * b
        top = z.max(axis=1)
        z -= top[:, None]
        np.exp(z, out=z)
        out[lo:lo + _CHUNK] = (top + np.log(z.sum(axis=1)) - log_g) / _LN10
    return out


def _mixture(log_lr: np.ndarray) -> np.ndarray:
    """log10 of the average over the last axis of likelihood ratios given as natural logs."""
    return (special.logsumexp(log_lr, axis=-1) - math.log(log_lr.shape[-1])) / _LN10


def binomial_mixture_log10_e(k: np.ndarray, n: np.ndarray, p0: float, *, effect_max: float | None = None,
                             effect_min: float = 1e-3) -> np.ndarray:
    """log10 e-values after ``n`` Bernoulli trials with ``k`` successes (arrays of one shape).

    The mixture is over ``EFFECT_GRID_SIZE`` log-spaced excesses ``e`` in ``[effect_min,
    effect_max]`` (default: up to ``min(0.5, 1 - p0) * 0.99``)."""
    if not 0 < p0 < 1:
        raise ParameterError(f"p0 must be in (0, 1), got {p0!r}")
    top = (1.0 - p0) * 0.99 if effect_max is None else min(effect_max, (1.0 - p0) * 0.99)
    top = min(top, 0.5) if effect_max is None else top
    effects = np.geomspace(min(effect_min, top / 2), top, EFFECT_GRID_SIZE)
    p1 = p0 + effects
    k, n = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64))
    out = _mixture_of_linear(k, n - k, np.log(p1 / p0), np.log1p(-p1) - math.log1p(-p0))
    return out.reshape(k.shape)


def gamma_mixture_log10_e(total: np.ndarray, n: np.ndarray, *, theta_max: float = 3.0,
                          theta_min_excess: float = 2e-3) -> np.ndarray:
    """log10 e-values after ``n`` scores summing to ``total``, H0: Exp(1), mixture over Exp(theta)
    with ``theta - 1`` log-spaced in ``[theta_min_excess, theta_max - 1]``."""
    thetas = 1.0 + np.geomspace(theta_min_excess, theta_max - 1.0, EFFECT_GRID_SIZE)
    s, n = np.broadcast_arrays(np.asarray(total, dtype=np.float64), np.asarray(n, dtype=np.float64))
    out = _mixture_of_linear(n, s, -np.log(thetas), 1.0 - 1.0 / thetas)
    return out.reshape(s.shape)


def betting_log10_e(centred: np.ndarray, weights: np.ndarray, scale: float) -> np.ndarray:
    """Running log10 e-values ``(n,)`` of a betting mixture on items in order.

    ``centred`` ``(n,)``: each item's score minus its null mean (``X_i - mu``, with ``X_i >= 0``
    and null mean ``mu``), ``weights`` ``(n,)``: non-negative weights, ``scale``: the null mean
    ``mu`` (so ``w_i (X_i - mu) >= -w_i mu``). Bets ``lambda`` are log-spaced up to
    ``1 / (2 mu max w)``, so every factor ``1 + lambda w_i (X_i - mu)`` is at least 1/2.
    """
    c = np.asarray(centred, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if c.size == 0:
        return np.zeros(0)
    w_max = float(w.max()) if w.size else 0.0
    if w_max <= 0 or scale <= 0:
        return np.zeros(c.size)
    top = 1.0 / (2.0 * scale * w_max)
    lambdas = np.geomspace(top / 1000.0, top, EFFECT_GRID_SIZE)
    out = np.empty(c.size)
    carry = np.zeros(lambdas.size)
    wc = w * c
    for lo in range(0, c.size, _CHUNK):
        running = np.cumsum(np.log1p(wc[lo:lo + _CHUNK, None] * lambdas[None, :]), axis=0)  # (chunk, grid)
        running += carry
        carry = running[-1].copy()
        out[lo:lo + _CHUNK] = _mixture(running)
    return out


def anytime_log10_pvalues(log10_e: np.ndarray) -> np.ndarray:
    """Running anytime-valid log10 p-values ``min(0, -max_{s <= t} log10 E_s)``, shape ``(n,)``."""
    e = np.asarray(log10_e, dtype=np.float64)
    if e.size == 0:
        return np.zeros(0)
    return np.minimum(0.0, -np.maximum.accumulate(e))
