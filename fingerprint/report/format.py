"""Formatting shared by every renderer: p-values, effects, posteriors, summary cells, method text."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["format_pvalue", "format_effect", "format_posterior", "methods_text", "top_responses",
           "SUMMARY_HEADER", "summary_cells", "md_text"]

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_{}[]<>()#+-.!|~"})


def md_text(value: object) -> str:
    """Text from an input (a response id, a file path, a note) made inert in Markdown: every
    Markdown metacharacter backslash-escaped, line breaks and other control characters shown
    as spaces, so an id cannot open a heading, a table cell, a link or HTML in a CI job summary."""
    text = "".join(" " if (ord(ch) < 32 or ord(ch) == 127) else ch for ch in str(value))
    return text.translate(_MD_SPECIAL)


def format_pvalue(log10_p: float) -> str:
    """``0.0123`` or ``3.2e-45`` or ``10^-1251.46`` (beyond the float range)."""
    if log10_p > -4:
        return f"{10 ** log10_p:.3g}"
    if log10_p > -300:
        mantissa_exp = math.floor(log10_p)
        mantissa = 10 ** (log10_p - mantissa_exp)
        return f"{mantissa:.2f}e{mantissa_exp}"
    return f"10^{log10_p:.2f}"


def format_effect(e: dict[str, Any]) -> str:
    if e["value"] is None:
        return "n/a"
    return f"{e['value']:+.4f} [{e['ci_low']:+.4f}, {e['ci_high']:+.4f}]"


def format_posterior(p: float) -> str:
    if p >= 0.999999:
        return "> 0.999999"
    if p <= 1e-6:
        return "< 0.000001"
    return f"{p:.6f}"


def methods_text(doc: dict[str, Any]) -> list[str]:
    return [
        "H0: the suspect's text is independent of the fingerprint key. Under H0 each distinct "
        "(context window, token) tuple's score follows a known distribution, independently of the "
        "others, so the p-value is an exact tail probability (binomial or gamma), not an approximation.",
        "Each distinct tuple is scored once across the whole corpus; tuples whose window occurs in "
        "the prompt of the same exchange are not scored; an optional filter keeps windows seen in "
        "the owner's served outputs (it selects windows, never tuples).",
        "Decoy keys (same scheme and parameters, independent secrets) go through the same pipeline: "
        "their p-values must look uniform, otherwise the verdict is 'inconclusive'.",
        f"The verdict compares the p-value (Holm-adjusted when several keys are tested) with alpha = "
        f"{doc['alpha']:g}. The Bayes factor compares H1 ({doc['bayes']['effect_prior']}) with H0; the "
        f"posterior uses a prior probability of {doc['bayes']['prior_probability']:g}.",
        "The anytime-valid p-value comes from an e-process over the distinct tuples in the order they "
        "were collected (a mixture of likelihood ratios; Ville's inequality): it stays valid however the "
        "collection was stopped, including 'stop once the result is significant', where a fixed-n p-value "
        "checked repeatedly is not. "
        + ("This evidence was gathered with a stopping rule, so the verdict uses the anytime-valid p-value."
           if doc.get("valid_pvalue") == "anytime" else
           "This evidence was not gathered with a recorded stopping rule, so the verdict uses the fixed-n "
           "p-value; if collection was stopped by looking at results, use the anytime-valid one "
           "(verify --optional-stopping)."),
    ]


def top_responses(r: dict[str, Any], n: int = 10) -> list[dict[str, Any]]:
    return sorted((x for x in r["responses"] if x["n_scored"] > 0), key=lambda x: x["log10_pvalue"])[:n]


SUMMARY_HEADER = ["key", "scheme", "tuples scored", "p-value", "anytime p", "Holm p", "effect [CI]", "decoys",
                   "log10 Bayes factor", "posterior", "verdict"]


def summary_cells(r: dict[str, Any]) -> list[str]:
    """One key's row of the summary table, as plain text cells (``SUMMARY_HEADER`` order)."""
    d = r["decoys"]
    dstr = "none" if d is None else (f"{'pass' if d['passed'] else 'FAIL'}: KS p {d['ks_pvalue']:.3g}, "
                                     f"empirical p {d['empirical_pvalue']:.3g} (k={d['k']})")
    anytime = "n/a" if r.get("anytime_log10_pvalue") is None else format_pvalue(r["anytime_log10_pvalue"])
    return [r["key_id"][:16], r["scheme"], f"{r['n_scored']:,}", format_pvalue(r["log10_pvalue"]), anytime,
            format_pvalue(r["holm_log10_pvalue"]), format_effect(r["effect"]), dstr,
            f"{r['log10_bayes_factor']:.2f}", format_posterior(r["posterior"]), r["verdict"]]
