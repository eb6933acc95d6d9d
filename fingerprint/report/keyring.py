"""The report of a keyring verification: a JSON document, rendered as Markdown, HTML and terminal text.

Schema (``schema`` = ``"fingerprint-keyring-report"``, ``schema_version`` = 1), top level:
``verdict``, ``reason``, ``summary_sentence``, ``alpha``, ``correction`` (``holm`` or ``bh``),
``ring`` (``ring_id``, ``scheme``, ``params``, ``vocab_size``, ``assign``, ``n_cohorts``: no
secret), ``global`` (``log10_pvalue``, ``pvalue_display``, ``method``), ``flagged`` (cohort
ids identified), ``n_texts``, ``n_tokens``, ``n_scored``, ``dropped``, ``sufficiency``,
``decoys`` (as in the single-key report, over never-served decoy cohorts; null without),
``cohorts`` (every cohort, most significant first: ``rank``, ``cohort``, ``statistic``,
``n_trials``, ``null_rate``, ``log10_pvalue``, ``holm_log10_pvalue``, ``bh_log10_pvalue``,
``effect`` {value, ci_low, ci_high, confidence_level, method}, ``flagged``, ``display``
{pvalue, holm_pvalue, bh_pvalue}), ``inputs``, ``skipped``, ``failed_requests``, ``notes``,
``version``, ``created_at``. Markdown and HTML show the first :data:`TABLE_ROWS` cohorts and
every flagged one; the JSON keeps all.
"""

from __future__ import annotations

import datetime as _dt
import html
from typing import Any

from ..corpus import ExchangeSet
from ..verify.keyring import KeyringResult
from ..version import __version__
from .document import input_files, json_number
from .format import format_alpha, format_odds, format_pvalue, md_text, pvalue_html

__all__ = ["KEYRING_SCHEMA", "build_keyring_report", "render_keyring_markdown", "render_keyring_html",
           "keyring_table_lines", "TABLE_ROWS"]

KEYRING_SCHEMA = "fingerprint-keyring-report"
#: Cohorts listed in the Markdown, HTML and terminal tables (besides every flagged one).
TABLE_ROWS = 20
_CORRECTION_NAME = {"holm": "Holm (family-wise error)", "bh": "Benjamini-Hochberg (false discovery rate)"}


def build_keyring_report(result: KeyringResult, *, suspect: ExchangeSet, tokenizer_path: str, tokenizer_sha256: str,
                         tokenizer_vocab_size: int, served: ExchangeSet | None = None,
                         created_at: str | None = None) -> dict[str, Any]:
    """The JSON document of a keyring verification (schema in the module docstring)."""
    cohorts = []
    for rank, c in enumerate(result.cohorts, 1):
        e = c.test.effect
        cohorts.append({
            "rank": rank, "cohort": c.cohort, "statistic": json_number(float(c.test.statistic)), "n_trials": int(c.test.n),
            "null_rate": json_number(float(c.test.null_rate)), "log10_pvalue": json_number(c.test.log10_pvalue),
            "holm_log10_pvalue": json_number(c.holm_log10_pvalue), "bh_log10_pvalue": json_number(c.bh_log10_pvalue),
            "effect": {"value": json_number(e.value), "ci_low": json_number(e.ci_low), "ci_high": json_number(e.ci_high),
                       "confidence_level": e.confidence_level, "method": e.method},
            "flagged": c.flagged,
            "display": {"pvalue": format_pvalue(c.test.log10_pvalue), "holm_pvalue": format_pvalue(c.holm_log10_pvalue),
                        "bh_pvalue": format_pvalue(c.bh_log10_pvalue)}})
    d = result.decoys
    skipped = suspect.skipped + (served.skipped if served else [])
    s = result.sufficiency
    doc: dict[str, Any] = {
        "schema": KEYRING_SCHEMA, "schema_version": 1, "version": __version__,
        "created_at": created_at or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "verdict": result.verdict, "reason": result.reason, "alpha": result.alpha, "correction": result.correction,
        "ring": dict(result.ring),
        "global": {"log10_pvalue": json_number(result.global_log10_pvalue),
                   "pvalue_display": format_pvalue(result.global_log10_pvalue),
                   "method": "Šidák over the cohorts' exact p-values (independent keys under H0)"},
        "flagged": list(result.flagged), "n_texts": result.n_texts, "n_tokens": result.n_tokens,
        "n_scored": result.counts.scored,
        "dropped": {k: v for k, v in result.counts.as_dict().items() if k != "scored"},
        "sufficiency": {"min_detectable_effect": json_number(s.min_detectable_effect), "target_effect": json_number(s.target_effect),
                        "items_needed": json_number(s.items_needed), "sufficient": s.sufficient},
        "decoys": None if d is None else {
            "k": d.k, "seed": d.seed, "empirical_pvalue": d.empirical_pvalue, "ks_pvalue": d.ks_pvalue,
            "passed": d.passed, "log10_pvalue_mean": json_number(d.log10_pvalue_mean),
            "log10_pvalue_sd": json_number(d.log10_pvalue_sd), "effect_mean": json_number(d.effect_mean),
            "effect_sd": json_number(d.effect_sd), "min_log10_pvalue": json_number(d.min_log10_pvalue)},
        "cohorts": cohorts,
        "inputs": {"suspect": input_files(suspect), "served": input_files(served),
                   "tokenizer": {"path": tokenizer_path, "sha256": tokenizer_sha256, "vocab_size": tokenizer_vocab_size}},
        "skipped": {"count": len(skipped),
                    "records": [{"file": x.file, "line": x.line, "reason": x.reason} for x in skipped[:1000]]},
        "failed_requests": suspect.failed_requests, "notes": list(result.notes)}
    doc["summary_sentence"] = keyring_summary_sentence(doc)
    return doc


def keyring_summary_sentence(doc: dict[str, Any]) -> str:
    """One plain-language sentence: was some cohort's output learned, and whose."""
    ring, g = doc["ring"], doc["global"]
    n = ring["n_cohorts"]
    odds = format_odds(g["log10_pvalue"]) if g["log10_pvalue"] is not None else "n/a"
    if doc["verdict"] == "detected":
        names = ", ".join(doc["flagged"][:5]) + (f" and {len(doc['flagged']) - 5} more" if len(doc["flagged"]) > 5 else "")
        who = (f"the outputs of {len(doc['flagged'])} cohort(s) are identified ({names})" if doc["flagged"]
               else "no single cohort is identified at this level")
        return (f"The suspect's text carries the fingerprint of at least one of the {n:,} cohorts of keyring "
                f"{ring['ring_id'][:12]}: text like this arises by chance in about {odds} (p = {g['pvalue_display']}); "
                f"{who}.")
    return (f"The suspect's text does not show the fingerprint of any of the {n:,} cohorts of keyring "
            f"{ring['ring_id'][:12]} at alpha = {format_alpha(doc['alpha'])} (global p = {g['pvalue_display']}): "
            f"{doc['verdict']}.")


def _shown(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = doc["cohorts"]
    return [r for i, r in enumerate(rows) if i < TABLE_ROWS or r["flagged"]]


def _effect(r: dict[str, Any]) -> str:
    e = r["effect"]
    if e["value"] is None:
        return "n/a"
    return f"{e['value']:+.4f} [{e['ci_low']:+.4f}, {e['ci_high']:+.4f}]"


_HEADER = ["rank", "cohort", "scored", "rate", "p-value", "Holm p", "BH q", "effect [CI]", "flagged"]


def _cells(r: dict[str, Any]) -> list[str]:
    rate = "n/a" if not r["n_trials"] else f"{r['statistic'] / r['n_trials']:.4f}"
    return [str(r["rank"]), r["cohort"], f"{r['n_trials']:,}", rate, r["display"]["pvalue"],
            r["display"]["holm_pvalue"], r["display"]["bh_pvalue"], _effect(r), "yes" if r["flagged"] else ""]


def _decoy_sentence(doc: dict[str, Any]) -> str:
    d = doc["decoys"]
    if d is None:
        return "No decoy cohorts were checked (--decoys 0)."
    verdict = "look uniform, as they must" if d["passed"] else "do NOT look uniform: the verdict cannot be trusted"
    return (f"Null control: {d['k']} decoy cohorts of the same master, never served, give p-values that {verdict} "
            f"(Kolmogorov-Smirnov p = {d['ks_pvalue']:.3g}; smallest decoy p = {format_pvalue(d['min_log10_pvalue'])}).")


def _method(doc: dict[str, Any]) -> list[str]:
    ring = doc["ring"]
    return [f"Each of the {ring['n_cohorts']:,} cohort keys (HKDF-SHA256 of the keyring's master and the cohort id; "
            f"scheme {ring['scheme']}) scores the same distinct tuples (prompt windows excluded, each (window, token) "
            f"once) with its scheme's exact test.",
            "Global test: Šidák's 1 - (1 - p_min)^K over the cohorts' p-values, valid because under H0 the cohort "
            "keys are independent, so their p-values are; it never exceeds Bonferroni's K p_min.",
            f"Identification: {_CORRECTION_NAME[doc['correction']]} at {format_alpha(doc['alpha'])} over all cohorts; "
            f"a cohort is named only when the global test detects.",
            "Each cohort's effect is its rate of fingerprinted tuples above the null rate, with its exact "
            "(Clopper-Pearson or the scheme's) confidence interval."]


def keyring_table_lines(doc: dict[str, Any]) -> list[str]:
    """The ranked cohort table as fixed-width terminal lines."""
    widths = [4, max(6, min(40, max((len(r["cohort"]) for r in doc["cohorts"]), default=6))), 9, 7, 11, 11, 11, 30, 7]
    header = " ".join(h.rjust(w) if i not in (1, 7) else h.ljust(w) for i, (h, w) in enumerate(zip(_HEADER, widths)))
    out = [header, "-" * len(header)]
    for r in _shown(doc):
        cells = _cells(r)
        cells[1] = cells[1][:widths[1]]
        out.append(" ".join(c.rjust(w) if i not in (1, 7) else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))))
    rest = len(doc["cohorts"]) - len(_shown(doc))
    if rest:
        out.append(f"... {rest:,} more cohort(s), none flagged (all in the JSON report)")
    return out


def render_keyring_markdown(doc: dict[str, Any]) -> str:
    """A Markdown report of a keyring verification."""
    ring, g = doc["ring"], doc["global"]
    lines = [f"# fingerprint keyring verification: **{doc['verdict']}**", "", md_text(doc["summary_sentence"]), "",
             f"Run {doc['created_at']} with fingerprint {doc['version']}; keyring `{ring['ring_id'][:16]}` "
             f"({ring['n_cohorts']:,} cohorts, {ring['scheme']}); alpha = {format_alpha(doc['alpha'])}; "
             f"identification by {_CORRECTION_NAME[doc['correction']]}.", "",
             f"- global test: p = {g['pvalue_display']} ({md_text(g['method'])})",
             f"- verdict: **{doc['verdict']}**: {md_text(doc['reason'])}",
             f"- cohorts identified: {', '.join('`' + md_text(c) + '`' for c in doc['flagged']) or 'none'}",
             f"- {md_text(_decoy_sentence(doc))}", "",
             "## Cohorts, most significant first", "",
             "| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    for r in _shown(doc):
        cells = _cells(r)
        cells[1] = f"`{md_text(cells[1])}`"
        if r["flagged"]:
            cells[-1] = "**yes**"
        lines.append("| " + " | ".join(cells) + " |")
    rest = len(doc["cohorts"]) - len(_shown(doc))
    if rest:
        lines += ["", f"{rest:,} more cohort(s), none flagged: every cohort is in the JSON report."]
    lines += ["", "## What was read", "", f"- responses: {doc['n_texts']:,}; tokens read: {doc['n_tokens']:,}",
              f"- tuples scored: {doc['n_scored']:,}; dropped: "
              + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in doc["dropped"].items()),
              f"- records skipped as invalid: {doc['skipped']['count']:,}", "", "## Inputs", ""]
    for f in doc["inputs"]["suspect"] + doc["inputs"]["served"]:
        lines.append(f"- {md_text(f['path'])} ({f['format']}, {f['records']:,} records) sha256 `{f['sha256']}`")
    tok = doc["inputs"]["tokenizer"]
    lines.append(f"- tokenizer {md_text(tok['path'])} (vocabulary {tok['vocab_size']:,}) sha256 `{tok['sha256']}`")
    if doc["notes"]:
        lines += ["", "## Notes", ""] + [f"- {md_text(n)}" for n in doc["notes"]]
    lines += ["", "## Method", ""] + [f"- {md_text(m)}" for m in _method(doc)]
    return "\n".join(lines) + "\n"


def render_keyring_html(doc: dict[str, Any]) -> str:
    """A self-contained HTML report of a keyring verification (no scripts, no external resources)."""
    e = html.escape
    ring, g = doc["ring"], doc["global"]
    cls = doc["verdict"].replace(" ", "-")
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
           "<meta name='viewport' content='width=device-width, initial-scale=1'>",
           f"<title>fingerprint keyring verification: {e(doc['verdict'])}</title><style>",
           "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
           "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}"
           "td:nth-child(2),th:nth-child(2){text-align:left}.verdict{padding:.6rem 1rem;border-radius:.4rem;"
           "background:#eef}.detected{background:#fde2e1}.flagged{background:#fff3cd}.scroll{overflow-x:auto}",
           "</style></head><body><h1>fingerprint keyring verification</h1>",
           f"<div class='verdict {cls}'>Verdict: <b>{e(doc['verdict'])}</b> at alpha = "
           f"{pvalue_html(format_alpha(doc['alpha']))}</div>",
           f"<p class='summary'>{e(doc['summary_sentence'])}</p>",
           f"<ul><li>keyring <code>{e(ring['ring_id'][:16])}</code>: {ring['n_cohorts']:,} cohorts, "
           f"{e(ring['scheme'])}</li><li>global test: p = {pvalue_html(g['pvalue_display'])} ({e(g['method'])})</li>"
           f"<li>verdict: <b>{e(doc['verdict'])}</b>: {e(doc['reason'])}</li>"
           f"<li>cohorts identified ({e(_CORRECTION_NAME[doc['correction']])}): "
           f"{', '.join('<code>' + e(c) + '</code>' for c in doc['flagged']) or 'none'}</li>"
           f"<li>{e(_decoy_sentence(doc))}</li></ul>",
           "<h2>Cohorts, most significant first</h2><div class='scroll'><table><tr>"
           + "".join(f"<th>{h}</th>" for h in _HEADER) + "</tr>"]
    for r in _shown(doc):
        cells = [e(c) for c in _cells(r)]
        cells[1] = f"<code>{cells[1]}</code>"
        for i in (4, 5, 6):
            cells[i] = pvalue_html(_cells(r)[i])
        row_class = " class='flagged'" if r["flagged"] else ""
        out.append(f"<tr{row_class}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table></div>")
    rest = len(doc["cohorts"]) - len(_shown(doc))
    if rest:
        out.append(f"<p>{rest:,} more cohort(s), none flagged: every cohort is in the JSON report.</p>")
    out.append(f"<h2>What was read</h2><ul><li>responses: {doc['n_texts']:,}; tokens read: {doc['n_tokens']:,}</li>"
               f"<li>tuples scored: {doc['n_scored']:,}</li></ul><h2>Inputs</h2><ul>")
    for f in doc["inputs"]["suspect"] + doc["inputs"]["served"]:
        out.append(f"<li><code>{e(f['path'])}</code> ({e(f['format'])}, {f['records']:,} records) "
                   f"sha256 <code>{e(f['sha256'])}</code></li>")
    out.append("</ul>")
    if doc["notes"]:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in doc["notes"]) + "</ul>")
    out.append("<h2>Method</h2><ul>" + "".join(f"<li>{e(m)}</li>" for m in _method(doc)) + "</ul></body></html>\n")
    return "".join(out)
