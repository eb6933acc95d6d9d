"""Formatting shared by every renderer: the one p-value formatter, the plain-language sentences
(summary, decoy control), effects, posteriors, summary cells, method text."""

from __future__ import annotations

import html as _html
import math
import re
from typing import Any

from ..display import format_alpha, format_plain_p, format_pvalue

__all__ = ["format_pvalue", "format_alpha", "format_odds", "format_effect", "format_posterior", "methods_text",
           "top_responses", "SUMMARY_HEADER", "summary_cells", "md_text", "summary_sentence", "control_sentence",
           "pvalue_html", "responses_title", "PVALUE_CELLS"]

_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_{}[]<>()#+-.!|~"})


def md_text(value: object) -> str:
    """Text from an input (a response id, a file path, a note) made inert in Markdown: every
    Markdown metacharacter backslash-escaped, line breaks and other control characters shown
    as spaces, so an id cannot open a heading, a table cell, a link or HTML in a CI job summary."""
    text = "".join(" " if (ord(ch) < 32 or ord(ch) == 127) else ch for ch in str(value))
    return text.translate(_MD_SPECIAL)


def format_odds(log10_p: float) -> str:
    """A p-value as odds for lay readers: ``1 in 4``, ``1 in 2,500``, ``1 in 10^30`` (the
    nearest power of ten once 1/p reaches a million)."""
    if math.isnan(log10_p):
        return "n/a"
    inv = -min(0.0, log10_p)
    if math.isinf(inv):
        return "0"
    if inv >= 6:
        return f"1 in 10^{round(inv)}"
    n = 10 ** inv
    if n < 10:
        return f"1 in {n:.2g}"
    step = 10 ** (math.floor(math.log10(n)) - 1)
    return f"1 in {round(n / step) * step:,.0f}"


def pvalue_html(text: str) -> str:
    """A formatted p-value in HTML: escaped, in a ``span.pvalue`` that never wraps."""
    return f'<span class="pvalue">{_html.escape(text)}</span>'


def _odds_html(text: str) -> str:
    body = re.sub(r"10\^(\d+)", r"10<sup>\1</sup>", _html.escape(text))
    return f'<span class="nowrap">{body}</span>'


_Segments = list[tuple[str, str]]  # ("text" | "p" | "odds", text)


def _join(segments: _Segments, html: bool) -> str:
    if not html:
        return "".join(s for _, s in segments)
    out = []
    for kind, s in segments:
        out.append(pvalue_html(s) if kind == "p" else _odds_html(s) if kind == "odds" else _html.escape(s))
    return "".join(out)


def _effect_text(x: float | None) -> str:
    return "any size" if x is None or not math.isfinite(x) else f"{x:.3g}"


_ITEMS = {"text": "distinct tuples", "logprobs": "scored candidates", "reading": "distinct pairs"}


def summary_sentence(doc: dict[str, Any], *, html: bool = False) -> str:
    """The plain-language sentence at the top of every report, by verdict (the same text in the
    JSON ``summary_sentence``, Markdown and HTML; with ``html``, escaped, its p-values in
    ``span.pvalue`` and powers of ten as superscripts).

    * detected: the chance of a signal this strong if the suspect never trained on the outputs;
    * not detected: no signal beyond chance, not proof of innocence, and the smallest effect
      the data could have detected;
    * insufficient data: not enough text, and about how many tokens are needed;
    * inconclusive: why.
    """
    results = doc["results"]
    verdict = doc["verdict"]
    alpha = format_alpha(doc["alpha"])
    seg: _Segments
    if verdict == "detected":
        r = min((x for x in results if x["verdict"] == "detected"), key=lambda x: x["holm_log10_pvalue"])
        lp = r["holm_log10_pvalue"]
        seg = [("text", "If the suspect had never been trained on your outputs, a signal at least this strong "
                        "would appear with probability about "), ("odds", format_odds(lp)),
               ("text", " (p = "), ("p", format_pvalue(lp)), ("text", ").")]
    elif verdict == "insufficient data":
        r = next(x for x in results if x["verdict"] == "insufficient data")
        s = r["sufficiency"]
        need = s.get("tokens_needed", s.get("items_needed"))
        need_s = f"about {math.ceil(need):,} tokens are needed" if need is not None and math.isfinite(need) \
            else "many more tokens are needed"
        seg = [("text", f"There is not enough suspect text for a verdict: {r['n_tokens']:,} tokens "
                        f"({r['n_scored']:,} {_ITEMS.get(r['mode'], 'items')} scored) could not reveal a fingerprint "
                        f"effect of {_effect_text(s['target_effect'])} at alpha = "), ("p", alpha),
               ("text", f", so neither a finding nor its absence can be read from them; {need_s}.")]
    elif verdict == "inconclusive":
        r = next(x for x in results if x["verdict"] == "inconclusive")
        seg = [("text", f"The test cannot give a verdict on this data: {r['reason']}. Neither a finding nor its "
                        "absence should be relied on (see Notes).")]
    else:
        r = min(results, key=lambda x: x["holm_log10_pvalue"])
        mde = r["sufficiency"]["min_detectable_effect"]
        seg = [("text", "The data show no signal beyond chance (p = "), ("p", format_pvalue(r["holm_log10_pvalue"])),
               ("text", "). This is not proof that the suspect was never trained on your outputs: these "
                        f"{r['n_tokens']:,} tokens could have revealed a fingerprint effect of "
                        f"{_effect_text(mde)} or more (the excess of the key's score over chance, per scored item) "
                        "at alpha = "), ("p", alpha), ("text", "; a weaker one would go unseen.")]
    return _join(seg, html)


def control_sentence(r: dict[str, Any], ks_threshold: float | None = None, *, html: bool = False) -> str:
    """One key's decoy check explained as a control, in one sentence."""
    d = r["decoys"]
    if d is None:
        return _join([("text", "Control: no decoy keys were run, so the test's null distribution was not checked "
                               "on this input.")], html)
    what = f"Control: {d['k']:,} decoy keys (secrets that never fingerprinted anything) gave p-values that "
    if d["passed"]:
        at_least = max(0, round(d["empirical_pvalue"] * (d["k"] + 1)) - 1)
        beat = d["k"] - at_least
        beaten = f"all {d['k']:,} of them" if beat == d["k"] else f"{beat:,} of the {d['k']:,}"
        seg: _Segments = [("text", what + "look uniform (KS p = "), ("p", format_plain_p(d["ks_pvalue"])),
                          ("text", f"), as they must if the test is sound; the real key's p-value was smaller than "
                                   f"{beaten}.")]
    else:
        seg = [("text", what + "do not look uniform (KS p = "), ("p", format_plain_p(d["ks_pvalue"]))]
        if ks_threshold is not None:
            seg += [("text", ", below "), ("p", format_plain_p(ks_threshold))]
        seg += [("text", "): the test's assumptions may not hold for this input, so no verdict is drawn from it.")]
    return _join(seg, html)


def responses_title(doc: dict[str, Any]) -> str | None:
    """The title of the per-response table, or None when the table is left out: it lists the
    responses with the strongest signal, which means something only when the first key was
    detected."""
    if doc["results"][0]["verdict"] != "detected":
        return None
    return "Responses with the strongest signal (first key; for inspection, not a test)"


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
        "Decoy keys (same scheme and parameters, independent secrets that never fingerprinted anything) go "
        "through the same pipeline as a control: their p-values must look uniform, otherwise the verdict is "
        "'inconclusive'.",
        f"The verdict compares the p-value (Holm-adjusted when several keys are tested) with alpha = "
        f"{format_alpha(doc['alpha'])}. The Bayes factor compares H1 ({doc['bayes']['effect_prior']}) with H0; the "
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
        "p-values are written 0.0123 down to 1e-4 and 3.2e-45 below (two significant digits, computed from the "
        "exact log10 p-value, so they stay exact far below the smallest floating-point number).",
    ]


def top_responses(r: dict[str, Any], n: int = 10) -> list[dict[str, Any]]:
    return sorted((x for x in r["responses"] if x["n_scored"] > 0), key=lambda x: x["log10_pvalue"])[:n]


SUMMARY_HEADER = ["key", "scheme", "tuples scored", "p-value", "anytime p", "Holm p", "effect [CI]", "decoy control",
                  "log10 Bayes factor", "posterior", "verdict"]
#: The columns of ``SUMMARY_HEADER`` that hold p-values (kept on one line in HTML).
PVALUE_CELLS = (3, 4, 5)


def summary_cells(r: dict[str, Any]) -> list[str]:
    """One key's row of the summary table, as plain text cells (``SUMMARY_HEADER`` order)."""
    d = r["decoys"]
    dstr = "none" if d is None else f"{'passed' if d['passed'] else 'FAILED'} ({d['k']:,} decoy keys)"
    anytime = "n/a" if r.get("anytime_log10_pvalue") is None else format_pvalue(r["anytime_log10_pvalue"])
    return [r["key_id"][:16], r["scheme"], f"{r['n_scored']:,}", format_pvalue(r["log10_pvalue"]), anytime,
            format_pvalue(r["holm_log10_pvalue"]), format_effect(r["effect"]), dstr,
            f"{r['log10_bayes_factor']:.2f}", format_posterior(r["posterior"]), r["verdict"]]
