"""Multiple testing in log10 space: Holm (family-wise), Benjamini-Hochberg (false discovery rate)
and the Šidák global test of the smallest of independent p-values."""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError

__all__ = ["holm", "benjamini_hochberg", "sidak_min"]


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


def benjamini_hochberg(log10_pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), in log10 space.

    Shape ``(m,)`` -> ``(m,)``: ``adjusted_(i) = min_{j >= i} min(1, m p_(j) / j)``. Rejecting where
    ``adjusted <= log10(q)`` controls the false discovery rate at q when the null p-values are
    independent of each other and of the others (as cohort keys' are: independent PRF draws).
    """
    lp = _checked(log10_pvalues, "benjamini_hochberg")
    m = lp.size
    order = np.argsort(lp, kind="stable")
    ranks = np.arange(1, m + 1, dtype=np.float64)
    scaled = lp[order] + np.log10(m) - np.log10(ranks)
    adjusted_sorted = np.minimum(0.0, np.minimum.accumulate(scaled[::-1])[::-1])
    out = np.empty(m)
    out[order] = adjusted_sorted
    return out


def sidak_min(log10_pvalues: np.ndarray | list[float]) -> float:
    """log10 of the Šidák p-value of the smallest of ``m`` independent p-values:
    ``1 - (1 - p_min)^m``. Exact for independent continuous p-values, conservative for valid
    discrete ones (each ``P(p_k <= x) <= x``), and never above Bonferroni's ``m p_min``."""
    lp = _checked(log10_pvalues, "sidak_min")
    m = lp.size
    low = float(lp.min())
    if low < -300:  # p_min underflows: m p_min (Bonferroni), above the exact value by a factor 1 + O(m p_min)
        return low + float(np.log10(m))
    if low >= 0.0:
        return 0.0
    return float(min(0.0, np.log10(-np.expm1(m * np.log1p(-(10.0 ** low))))))


def _checked(log10_pvalues: np.ndarray | list[float], what: str) -> np.ndarray:
    lp = np.asarray(log10_pvalues, dtype=np.float64)
    if lp.ndim != 1 or lp.size == 0:
        raise ParameterError(f"{what} expects a non-empty 1-D array of log10 p-values, got shape {lp.shape}")
    if (lp > 0).any() or np.isnan(lp).any():
        raise ParameterError("log10 p-values must be <= 0 and not NaN")
    return lp
