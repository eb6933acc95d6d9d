"""Reports of a verification: a JSON document with a stable schema, Markdown and HTML.

The JSON document is the single source: Markdown and HTML are rendered from it, so the three
never disagree. No report contains a secret: keys appear as their public dict (key id,
scheme, parameters, vocabulary size).

Schema (``schema`` = ``"fingerprint-verify-report"``, ``schema_version`` = 1) — top level:

========================  ===========================================================
``verdict``               overall: ``detected`` / ``not detected`` / ``inconclusive``
``alpha``                 significance level of the verdict
``holm_applied``          several keys were tested, p-values Holm-adjusted
``key_id`` ... ``trajectory``  the fields of the first key's result (see below), copied
``results``               one object per key, each with the fields below
``inputs``                ``suspect``/``served``: ``[{path, sha256, format, records}]``;
                          ``tokenizer``: ``{path, sha256, vocab_size}``
``skipped``               ``{count, records: [{file, line, reason}]}`` (first 1,000)
``failed_requests``       evidence records whose request failed (not read)
``notes``                 warnings, e.g. decoys failing, padded vocabulary
``version``, ``created_at``  tool version, UTC time of the run
========================  ===========================================================

Per key: ``key_id``, ``scheme``, ``params``, ``vocab_size``, ``n_texts``, ``n_tokens``,
``n_scored`` (distinct tuples tested), ``dropped`` (``no_full_window``, ``prompt_window``,
``window_filter``, ``duplicate_tuple``), ``test`` (``binomial``/``gamma``), ``statistic``,
``n_trials``, ``null_rate``, ``pvalue`` (float, 0.0 once it underflows), ``log10_pvalue``
(exact, finite), ``holm_log10_pvalue``, ``effect`` (``value``, ``ci_low``, ``ci_high``,
``confidence_level``, ``method``), ``decoys`` (``k``, ``seed``, ``empirical_pvalue``,
``ks_pvalue``, ``passed``, ``log10_pvalue_mean``, ``log10_pvalue_sd``, ``effect_mean``,
``effect_sd``, ``min_log10_pvalue``; null without decoys), ``log10_bayes_factor``,
``bayes`` (``effect_prior``, ``effect_prior_max``, ``prior_probability``), ``posterior``,
``verdict``, ``trajectory`` (``[{tokens_read, n_scored, log10_pvalue, decoy_low,
decoy_median, decoy_high}]``), ``responses`` (``[{id, n_tokens, n_scored, statistic,
log10_pvalue}]``, input order). Non-finite numbers are written as null.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
from pathlib import Path
from typing import Any

from . import __version__
from .corpus import ExchangeSet
from .detect import KeyResult, VerifyResult

__all__ = ["build_report", "write_json", "render_markdown", "render_html", "SCHEMA", "SCHEMA_VERSION"]

SCHEMA = "fingerprint-verify-report"
SCHEMA_VERSION = 1
_MAX_SKIPPED = 1000


def _num(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _key_result_dict(r: KeyResult, n_texts: int, n_tokens: int) -> dict[str, Any]:
    t = r.test
    d = r.decoys
    return {
        "key_id": r.key["key_id"],
        "scheme": r.key["scheme"],
        "params": r.key["params"],
        "vocab_size": r.key["vocab_size"],
        "n_texts": n_texts,
        "n_tokens": n_tokens,
        "n_scored": r.counts.scored,
        "dropped": r.counts.as_dict(),
        "test": t.test,
        "statistic": t.statistic,
        "n_trials": t.n,
        "null_rate": t.null_rate,
        "pvalue": t.pvalue,
        "log10_pvalue": t.log10_pvalue,
        "holm_log10_pvalue": r.holm_log10_pvalue,
        "effect": {"value": _num(t.effect.value), "ci_low": _num(t.effect.ci_low),
                   "ci_high": _num(t.effect.ci_high), "confidence_level": t.effect.confidence_level,
                   "method": t.effect.method},
        "decoys": None if d is None else {
            "k": d.k, "seed": d.seed, "empirical_pvalue": d.empirical_pvalue, "ks_pvalue": d.ks_pvalue,
            "passed": d.passed, "log10_pvalue_mean": d.log10_pvalue_mean,
            "log10_pvalue_sd": d.log10_pvalue_sd, "effect_mean": _num(d.effect_mean),
            "effect_sd": _num(d.effect_sd), "min_log10_pvalue": d.min_log10_pvalue},
        "log10_bayes_factor": r.bayes.log10_bayes_factor,
        "bayes": {"effect_prior": r.bayes.effect_prior, "effect_prior_max": r.bayes.effect_prior_max,
                  "prior_probability": r.bayes.prior_probability},
        "posterior": r.bayes.posterior,
        "verdict": r.verdict,
        "trajectory": [{"tokens_read": p.tokens_read, "n_scored": p.n_scored,
                        "log10_pvalue": p.log10_pvalue, "decoy_low": _num(p.decoy_low),
                        "decoy_median": _num(p.decoy_median), "decoy_high": _num(p.decoy_high)}
                       for p in r.trajectory],
        "responses": [{"id": rid, "n_tokens": int(nt), "n_scored": int(ns), "statistic": float(st),
                       "log10_pvalue": float(lp)}
                      for rid, nt, ns, st, lp in zip(r.responses.ids, r.responses.n_tokens,
                                                     r.responses.n_scored, r.responses.statistic,
                                                     r.responses.log10_pvalue)],
    }


def _files(es: ExchangeSet | None) -> list[dict[str, Any]]:
    if es is None:
        return []
    return [{"path": f.path, "sha256": f.sha256, "format": f.format, "records": f.records} for f in es.files]


def build_report(result: VerifyResult, *, suspect: ExchangeSet, tokenizer_path: str, tokenizer_sha256: str,
                 served: ExchangeSet | None = None, created_at: str | None = None) -> dict[str, Any]:
    """The JSON report document (see the module docstring for the schema)."""
    per_key = [_key_result_dict(r, result.n_texts, result.n_tokens) for r in result.results]
    skipped = suspect.skipped + (served.skipped if served else [])
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "version": __version__,
        "created_at": created_at or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "verdict": result.verdict,
        "alpha": result.options.alpha,
        "holm_applied": result.holm_applied,
    }
    doc.update(per_key[0])
    doc["verdict"] = result.verdict
    doc["results"] = per_key
    doc["window_filter_windows"] = result.window_filter_size
    doc["inputs"] = {"suspect": _files(suspect), "served": _files(served),
                     "tokenizer": {"path": tokenizer_path, "sha256": tokenizer_sha256,
                                   "vocab_size": result.tokenizer_vocab_size}}
    doc["skipped"] = {"count": len(skipped),
                      "records": [{"file": s.file, "line": s.line, "reason": s.reason}
                                  for s in skipped[:_MAX_SKIPPED]]}
    doc["failed_requests"] = suspect.failed_requests
    doc["notes"] = list(result.notes)
    doc["options"] = {"n_decoys": result.options.n_decoys, "decoy_seed": result.options.decoy_seed,
                      "ks_threshold": result.options.ks_threshold,
                      "confidence_level": result.options.confidence_level}
    return doc


def write_json(doc: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write atomically (temp file + rename), so a crash never leaves half a report."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---- formatting helpers -----------------------------------------------------------------------

def format_pvalue(log10_p: float) -> str:
    """``0.0123`` or ``3.2e-45`` or ``10^-1251.46`` (beyond the float range)."""
    if log10_p > -4:
        return f"{10 ** log10_p:.3g}"
    if log10_p > -300:
        mantissa_exp = math.floor(log10_p)
        mantissa = 10 ** (log10_p - mantissa_exp)
        return f"{mantissa:.2f}e{mantissa_exp}"
    return f"10^{log10_p:.2f}"


def _effect_str(e: dict[str, Any]) -> str:
    if e["value"] is None:
        return "n/a"
    return f"{e['value']:+.4f} [{e['ci_low']:+.4f}, {e['ci_high']:+.4f}]"


def _posterior_str(p: float) -> str:
    if p >= 0.999999:
        return "> 0.999999"
    if p <= 1e-6:
        return "< 0.000001"
    return f"{p:.6f}"


def _methods_text(doc: dict[str, Any]) -> list[str]:
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
    ]


def _top_responses(r: dict[str, Any], n: int = 10) -> list[dict[str, Any]]:
    return sorted((x for x in r["responses"] if x["n_scored"] > 0), key=lambda x: x["log10_pvalue"])[:n]


_SUMMARY_HEADER = ["key", "scheme", "tuples scored", "p-value", "Holm p", "effect [CI]", "decoys",
                   "log10 Bayes factor", "posterior", "verdict"]


def _summary_cells(r: dict[str, Any]) -> list[str]:
    """One key's row of the summary table, as plain text cells (``_SUMMARY_HEADER`` order)."""
    d = r["decoys"]
    dstr = "none" if d is None else (f"{'pass' if d['passed'] else 'FAIL'}: KS p {d['ks_pvalue']:.3g}, "
                                     f"empirical p {d['empirical_pvalue']:.3g} (k={d['k']})")
    return [r["key_id"][:16], r["scheme"], f"{r['n_scored']:,}", format_pvalue(r["log10_pvalue"]),
            format_pvalue(r["holm_log10_pvalue"]), _effect_str(r["effect"]), dstr,
            f"{r['log10_bayes_factor']:.2f}", _posterior_str(r["posterior"]), r["verdict"]]


def render_markdown(doc: dict[str, Any]) -> str:
    """A Markdown report (also fits a CI job summary)."""
    lines = [f"# fingerprint verification: **{doc['verdict']}**", "",
             f"Run {doc['created_at']} with fingerprint {doc['version']}; alpha = {doc['alpha']:g}"
             + ("; p-values Holm-adjusted over keys" if doc["holm_applied"] else "") + ".", "",
             "| " + " | ".join(_SUMMARY_HEADER) + " |",
             "|" + "---|" * len(_SUMMARY_HEADER)]
    for r in doc["results"]:
        cells = _summary_cells(r)
        cells[0], cells[-1] = f"`{cells[0]}`", f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## What was read", "",
              f"- responses: {doc['n_texts']:,}; tokens read: {doc['n_tokens']:,}",
              f"- tuples scored (first key): {doc['n_scored']:,}; dropped: "
              + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in doc["dropped"].items()),
              f"- records skipped as invalid: {doc['skipped']['count']:,}; failed requests in evidence: "
              f"{doc['failed_requests']:,}"]
    if doc["window_filter_windows"] is not None:
        lines.append(f"- window filter from served outputs: {doc['window_filter_windows']:,} windows")
    lines += ["", "## Inputs", ""]
    for f in doc["inputs"]["suspect"] + doc["inputs"]["served"]:
        lines.append(f"- `{f['path']}` ({f['format']}, {f['records']:,} records) sha256 `{f['sha256']}`")
    tok = doc["inputs"]["tokenizer"]
    lines.append(f"- tokenizer `{tok['path']}` (vocabulary {tok['vocab_size']:,}) sha256 `{tok['sha256']}`")
    if doc["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in doc["notes"]]
    lines += ["", "## Evidence by tokens read (first key)", "", "| tokens read | tuples | p-value | decoys 5%-95% |",
              "|---|---|---|---|"]
    traj = doc["trajectory"]
    shown = sorted(set(range(0, len(traj), max(1, len(traj) // 12))) | {len(traj) - 1}) if traj else []
    for p in (traj[i] for i in shown):
        band = ("n/a" if p["decoy_low"] is None else
                f"{format_pvalue(p['decoy_low'])} - {format_pvalue(p['decoy_high'])}")
        lines.append(f"| {p['tokens_read']:,} | {p['n_scored']:,} | {format_pvalue(p['log10_pvalue'])} | {band} |")
    lines += ["", "## Most fingerprinted responses (first key; for inspection, not a test)", "",
              "| id | tokens | scored | p-value |", "|---|---|---|---|"]
    for x in _top_responses(doc):
        lines.append(f"| {x['id']} | {x['n_tokens']} | {x['n_scored']} | {format_pvalue(x['log10_pvalue'])} |")
    lines += ["", "## Method", ""] + [f"- {m}" for m in _methods_text(doc)]
    return "\n".join(lines) + "\n"


def trajectory_svg(r: dict[str, Any], alpha: float, *, width: int = 720, height: int = 340) -> str:
    """Inline SVG: -log10 p against tokens read (log scale), the decoys' 5-95% band, alpha."""
    pts = [p for p in r["trajectory"] if p["tokens_read"] > 0]
    left, right, top, bottom = 64, 20, 20, 46
    pw, ph = width - left - right, height - top - bottom
    if not pts:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"></svg>'
    xs = [math.log10(p["tokens_read"]) for p in pts]
    x0, x1 = min(xs), max(xs)
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 0.5, x1 + 0.5
    ys = [-p["log10_pvalue"] for p in pts]
    band_hi = [-(p["decoy_low"]) for p in pts if p["decoy_low"] is not None]
    y_max = max([*ys, *band_hi, -math.log10(alpha)]) * 1.08 or 1.0

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return top + ph - (v / y_max) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="p-value trajectory">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#ffffff" stroke="#999999"/>']
    if band_hi:
        upper = [(sx(x), sy(-p["decoy_low"])) for x, p in zip(xs, pts)]
        lower = [(sx(x), sy(-p["decoy_high"])) for x, p in zip(xs, pts)]
        poly = " ".join(f"{a:.1f},{b:.1f}" for a, b in upper + lower[::-1])
        parts.append(f'<polygon class="decoy-band" points="{poly}" fill="#9ecae1" fill-opacity="0.6" stroke="none"/>')
        med = " ".join(f"{sx(x):.1f},{sy(-p['decoy_median']):.1f}" for x, p in zip(xs, pts))
        parts.append(f'<polyline points="{med}" fill="none" stroke="#3182bd" stroke-width="1" stroke-dasharray="4 3"/>')
    ya = sy(-math.log10(alpha))
    parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{ya:.1f}" y2="{ya:.1f}" stroke="#000000" '
                 f'stroke-dasharray="6 4"/>')
    parts.append(f'<text x="{left + 6}" y="{ya - 5:.1f}" font-size="11" font-family="sans-serif">'
                 f'alpha = {alpha:g}</text>')
    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
    parts.append(f'<polyline class="trajectory" points="{line}" fill="none" stroke="#d62728" stroke-width="3"/>')
    for e in range(math.ceil(x0), math.floor(x1) + 1):
        parts.append(f'<line x1="{sx(e):.1f}" x2="{sx(e):.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#333"/>')
        parts.append(f'<text x="{sx(e):.1f}" y="{top + ph + 17}" font-size="11" text-anchor="middle" '
                     f'font-family="sans-serif">1e{e}</text>')
    for j in range(6):
        v = y_max * j / 5
        parts.append(f'<text x="{left - 6}" y="{sy(v) + 4:.1f}" font-size="11" text-anchor="end" '
                     f'font-family="sans-serif">{v:.3g}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 8}" font-size="12" text-anchor="middle" '
                 f'font-family="sans-serif">suspect tokens read</text>')
    parts.append(f'<text x="14" y="{top + ph / 2}" font-size="12" text-anchor="middle" font-family="sans-serif" '
                 f'transform="rotate(-90 14 {top + ph / 2})">-log10 p</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}.verdict{font-size:1.4em;padding:.6em 1em;border-radius:6px;display:inline-block}
.detected{background:#fde0dc;border:2px solid #d62728}.not-detected{background:#e5f5e0;border:2px solid #31a354}
.inconclusive{background:#fff3cd;border:2px solid #e6a700}code{font-size:.9em}.legend span{margin-right:1.5em}
"""


def render_html(doc: dict[str, Any]) -> str:
    """A self-contained HTML report (no external resources) with inline SVG plots."""
    e = html.escape
    cls = doc["verdict"].replace(" ", "-")
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
           f"<title>fingerprint verification: {e(doc['verdict'])}</title><style>{_CSS}</style></head><body>",
           "<h1>fingerprint verification</h1>",
           f"<div class='verdict {cls}'>Verdict: <b>{e(doc['verdict'])}</b> at alpha = {doc['alpha']:g}</div>",
           f"<p>Run {e(doc['created_at'])} with fingerprint {e(doc['version'])}."
           + (" p-values are Holm-adjusted over the keys tested." if doc["holm_applied"] else "") + "</p>",
           "<table><tr>" + "".join(f"<th>{h}</th>" for h in _SUMMARY_HEADER) + "</tr>"]
    for r in doc["results"]:
        cells = [e(c) for c in _summary_cells(r)]
        cells[0], cells[-1] = f"<code>{cells[0]}</code>", f"<b>{cells[-1]}</b>"
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    for r in doc["results"]:
        out.append(f"<h2>Evidence by tokens read: key <code>{e(r['key_id'][:16])}</code> ({e(r['scheme'])})</h2>")
        out.append("<p class='legend'><span style='color:#d62728'>&#9632; this key</span>"
                   "<span style='color:#6baed6'>&#9632; decoy keys, 5%-95%</span>"
                   "<span>- - - alpha</span></p>")
        out.append(trajectory_svg(r, doc["alpha"]))
    out.append("<h2>What was read</h2><ul>")
    out.append(f"<li>responses: {doc['n_texts']:,}; tokens read: {doc['n_tokens']:,}</li>")
    out.append(f"<li>tuples scored (first key): {doc['n_scored']:,}; dropped: "
               + e(", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in doc["dropped"].items())) + "</li>")
    out.append(f"<li>records skipped as invalid: {doc['skipped']['count']:,}; failed requests in evidence: "
               f"{doc['failed_requests']:,}</li>")
    if doc["window_filter_windows"] is not None:
        out.append(f"<li>window filter from served outputs: {doc['window_filter_windows']:,} windows</li>")
    out.append("</ul><h2>Inputs</h2><ul>")
    for f in doc["inputs"]["suspect"] + doc["inputs"]["served"]:
        out.append(f"<li><code>{e(f['path'])}</code> ({e(f['format'])}, {f['records']:,} records) "
                   f"sha256 <code>{e(f['sha256'])}</code></li>")
    tok = doc["inputs"]["tokenizer"]
    out.append(f"<li>tokenizer <code>{e(tok['path'])}</code> (vocabulary {tok['vocab_size']:,}) sha256 "
               f"<code>{e(tok['sha256'])}</code></li></ul>")
    if doc["notes"]:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in doc["notes"]) + "</ul>")
    out.append("<h2>Most fingerprinted responses (first key; for inspection, not a test)</h2>"
               "<table><tr><th>id</th><th>tokens</th><th>scored</th><th>p-value</th></tr>")
    for x in _top_responses(doc):
        out.append(f"<tr><td>{e(str(x['id']))}</td><td>{x['n_tokens']}</td><td>{x['n_scored']}</td>"
                   f"<td>{e(format_pvalue(x['log10_pvalue']))}</td></tr>")
    out.append("</table><h2>Method</h2><ul>" + "".join(f"<li>{e(m)}</li>" for m in _methods_text(doc)) + "</ul>")
    out.append("</body></html>\n")
    return "".join(out)
