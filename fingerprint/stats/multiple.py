"""Multiple testing: Holm's step-down correction, in log10 space."""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError

__all__ = ["holm"]


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
