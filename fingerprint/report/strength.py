"""Renderings of the strength guard's result (:class:`fingerprint.strength.StrengthResult`):
a Markdown summary (fits ``$GITHUB_STEP_SUMMARY``) and JUnit XML (one test case per check).

The renderers read the result's ``metrics`` (a ``StrengthMetrics``), ``checks`` (each with
``metric``, ``kind``, ``limit``, ``passed``, ``message``) and ``passed``; they do not import the
guard (it sits above the reports).
"""

from __future__ import annotations

import math
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from .format import format_pvalue

__all__ = ["render_strength_markdown", "render_strength_junit", "format_metric", "STRENGTH_METRICS"]

#: The metrics shown, in order; those ending in ``log10_pvalue`` are shown with their p-value.
STRENGTH_METRICS = ("effect", "effect_ci_low", "log10_pvalue", "tokens_to_detect_p10", "tokens_to_detect_median",
                    "tokens_to_detect_p90", "detectable_share", "unmarked_share", "radioactivity_log10_pvalue")


def format_metric(v: float | None) -> str:
    """A metric or limit as text: ``n/a`` for None (and nan), ``inf``, else 4 significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}"


def _metric_cell(name: str, v: float | None) -> str:
    """A metric or limit; a log10 p-value also as its p-value, through the one formatter."""
    shown = format_metric(v)
    if name.endswith("log10_pvalue") and v is not None and math.isfinite(v):
        shown += f" (p = {format_pvalue(v)})"
    return shown


def render_strength_markdown(result: Any) -> str:
    """Markdown summary of a ``StrengthResult``: verdict, what was measured, metrics, checks."""
    m = result.metrics
    lines = [f"## fingerprint strength: {'PASS' if result.passed else 'REGRESSION'}", "",
             f"{m.n_responses:,} responses, {m.n_tokens:,} tokens, {m.n_scored:,} distinct tuples; scheme "
             f"{m.scheme}, key `{m.key_id[:16]}`, seed {m.seed}"
             + (f"; distillation proxy at rho = {m.radioactivity_rho:g}" if m.radioactivity_rho is not None else "")
             + ".", "",
             "| metric | value |", "|---|---|"]
    for name in STRENGTH_METRICS:
        lines.append(f"| {name} | {_metric_cell(name, getattr(m, name))} |")
    lines += ["", "| check | limit | result |", "|---|---|---|"]
    for c in result.checks:
        lines.append(f"| {c.metric} ({c.kind}) | {_metric_cell(c.metric, c.limit)} | "
                     f"{'pass' if c.passed else '**FAIL**'}: {c.message} |")
    return "\n".join(lines) + "\n"


def render_strength_junit(result: Any) -> str:
    """JUnit XML of a ``StrengthResult``: one test case per check, failures carry its message."""
    failures = sum(not c.passed for c in result.checks)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuite name="fingerprint-strength" tests="{len(result.checks)}" failures="{failures}">']
    for c in result.checks:
        name = quoteattr(f"{c.metric} ({c.kind})")
        if c.passed:
            out.append(f'  <testcase classname="fingerprint.strength" name={name}/>')
        else:
            out.append(f'  <testcase classname="fingerprint.strength" name={name}>'
                       f'<failure message={quoteattr(c.message)}>{escape(c.message)}</failure></testcase>')
    out.append("</testsuite>")
    return "\n".join(out) + "\n"
