"""How every output writes a p-value (terminal, JSON display strings, Markdown, HTML, strength,
verdict reasons): one formatter, computed from log10 p so that it holds far beyond the float
range. The core's lowest layer, so that verify/ and report/ share it."""

from __future__ import annotations

import math

__all__ = ["format_pvalue", "format_alpha", "format_plain_p"]


def format_pvalue(log10_p: float) -> str:
    """The one way every output writes a p-value, computed from its log10 (so it works far beyond
    the float range): ``0.0123`` (3 significant digits) for p >= 1e-4, else ``3.2e-45`` (2
    significant digits, the mantissa from the log10: ``10^-20102.36`` is ``4.4e-20103``; a
    mantissa of 1 is written ``1e-6``). ``1`` for p >= 1, ``0`` for log10 p = -inf, ``n/a`` for NaN."""
    if math.isnan(log10_p):
        return "n/a"
    if log10_p >= 0:
        return "1"
    if log10_p == -math.inf:
        return "0"
    if log10_p >= -4:
        text = f"{10 ** log10_p:.3g}"
        if "e" not in text:
            return text
    exp = math.floor(log10_p)
    mantissa = round(10 ** (log10_p - exp), 1)
    if mantissa >= 10:
        mantissa, exp = 1.0, exp + 1
    m = f"{mantissa:.1f}".removesuffix(".0")
    return f"{m}e{exp}"


def format_alpha(alpha: float) -> str:
    """A significance level, in the p-value style (``1e-6``)."""
    return format_pvalue(math.log10(alpha)) if alpha > 0 else "0"


def format_plain_p(p: float) -> str:
    """A p-value held as a plain float (KS, empirical), through :func:`format_pvalue`."""
    if math.isnan(p):
        return "n/a"
    return format_pvalue(math.log10(p)) if p > 0 else "0"
