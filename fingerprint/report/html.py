"""The self-contained HTML rendering of a report document, with an inline SVG trajectory.

No scripts and no external resources; p-values sit in ``span.pvalue`` (never wrapped); wide
tables scroll inside their own box, so the page fits a phone's width."""

from __future__ import annotations

import html
import math
from typing import Any

from .custody import custody_banner, custody_lines
from .format import (PVALUE_CELLS, SUMMARY_HEADER, control_sentence, format_alpha, format_pvalue, methods_text,
                     pvalue_html, responses_title, summary_cells, summary_sentence, top_responses)

__all__ = ["render_html", "trajectory_svg", "nice_ticks"]

_RED, _BAND, _MEDIAN, _ANYTIME = "#d62728", "#9ecae1", "#3182bd", "#756bb1"


def nice_ticks(top: float, target: int = 5) -> list[float]:
    """Round axis ticks from 0 covering ``top``: steps of 1, 2 or 5 x 10^k, about ``target`` of them."""
    if not (top > 0 and math.isfinite(top)):
        return [0.0, 1.0]
    raw = top / target
    k = math.floor(math.log10(raw))
    step = next(m * 10.0 ** k for m in (1, 2, 5, 10) if m * 10.0 ** k >= raw * (1 - 1e-9))
    n = math.ceil(top / step - 1e-9)
    return [round(i * step, max(0, -k)) for i in range(n + 1)]


def _tick_label(v: float) -> str:
    return f"{v:,.0f}" if v == round(v) else f"{v:g}"


def _tokens_label(e: int) -> str:
    return f"{10 ** e:,}" if 0 <= e <= 6 else f"1e{e}"


def trajectory_svg(r: dict[str, Any], alpha: float, *, width: int = 720, height: int = 340) -> str:
    """Inline SVG: -log10 p against tokens read (log scale), the decoys' 5-95% band and median,
    the anytime-valid p-value, alpha; round y ticks. It scales down to the page's width."""
    pts = [p for p in r["trajectory"] if p["tokens_read"] > 0]
    left, right, top, bottom = 64, 20, 20, 46
    pw, ph = width - left - right, height - top - bottom
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" style="max-width:100%;height:auto" role="img" '
            f'aria-label="p-value trajectory">')
    if not pts:
        return head + "</svg>"
    xs = [math.log10(p["tokens_read"]) for p in pts]
    x0, x1 = min(xs), max(xs)
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 0.5, x1 + 0.5
    ys = [-p["log10_pvalue"] for p in pts]
    band_hi = [-(p["decoy_low"]) for p in pts if p["decoy_low"] is not None]
    band_hi += [-(p["anytime_log10_pvalue"]) for p in pts if p.get("anytime_log10_pvalue") is not None]
    ticks = nice_ticks(max([*ys, *band_hi, -math.log10(alpha)]) * 1.05)
    y_max = ticks[-1]

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return top + ph - (v / y_max) * ph

    parts = [head, f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#ffffff" stroke="#999999"/>']
    for v in ticks[1:-1]:
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#eeeeee"/>')
    if any(p["decoy_low"] is not None for p in pts):
        upper = [(sx(x), sy(-p["decoy_low"])) for x, p in zip(xs, pts)]
        lower = [(sx(x), sy(-p["decoy_high"])) for x, p in zip(xs, pts)]
        poly = " ".join(f"{a:.1f},{b:.1f}" for a, b in upper + lower[::-1])
        parts.append(f'<polygon class="decoy-band" points="{poly}" fill="{_BAND}" fill-opacity="0.6" stroke="none"/>')
        med = " ".join(f"{sx(x):.1f},{sy(-p['decoy_median']):.1f}" for x, p in zip(xs, pts))
        parts.append(f'<polyline class="decoy-median" points="{med}" fill="none" stroke="{_MEDIAN}" stroke-width="1" '
                     f'stroke-dasharray="4 3"/>')
    ya = sy(-math.log10(alpha))
    parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{ya:.1f}" y2="{ya:.1f}" stroke="#000000" '
                 f'stroke-dasharray="6 4"/>')
    parts.append(f'<text x="{left + 6}" y="{ya - 5:.1f}" font-size="11" font-family="sans-serif">'
                 f'alpha = {html.escape(format_alpha(alpha))}</text>')
    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
    parts.append(f'<polyline class="trajectory" points="{line}" fill="none" stroke="{_RED}" stroke-width="3"/>')
    anytime = [(sx(x), sy(-p["anytime_log10_pvalue"])) for x, p in zip(xs, pts)
               if p.get("anytime_log10_pvalue") is not None]
    if anytime:
        pts_s = " ".join(f"{a:.1f},{b:.1f}" for a, b in anytime)
        parts.append(f'<polyline class="anytime" points="{pts_s}" fill="none" stroke="{_ANYTIME}" stroke-width="2"/>')
    for e in range(math.ceil(x0), math.floor(x1) + 1):
        parts.append(f'<line x1="{sx(e):.1f}" x2="{sx(e):.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#333"/>')
        parts.append(f'<text x="{sx(e):.1f}" y="{top + ph + 17}" font-size="11" text-anchor="middle" '
                     f'font-family="sans-serif">{_tokens_label(e)}</text>')
    for v in ticks:
        parts.append(f'<text x="{left - 6}" y="{sy(v) + 4:.1f}" font-size="11" text-anchor="end" '
                     f'font-family="sans-serif">{_tick_label(v)}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 8}" font-size="12" text-anchor="middle" '
                 f'font-family="sans-serif">suspect tokens read</text>')
    parts.append(f'<text x="14" y="{top + ph / 2}" font-size="12" text-anchor="middle" font-family="sans-serif" '
                 f'transform="rotate(-90 14 {top + ph / 2})">-log10 p (higher: stronger)</text>')
    parts.append("</svg>")
    return "".join(parts)


def _swatch(kind: str, color: str) -> str:
    body = (f'<rect x="0" y="2" width="22" height="8" fill="{color}" fill-opacity="0.6"/>' if kind == "band" else
            f'<line x1="0" x2="22" y1="6" y2="6" stroke="{color}" stroke-width="{3 if kind == "solid" else 2}"'
            + (' stroke-dasharray="4 3"' if kind == "dashed" else "") + "/>")
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="22" height="12" aria-hidden="true">{body}</svg>'


def _legend(r: dict[str, Any], alpha: float) -> str:
    """A legend naming every element the trajectory chart draws."""
    items = [(_swatch("solid", _RED), "this key's p-value")]
    if any(p["decoy_low"] is not None for p in r["trajectory"]):
        items += [(_swatch("band", _BAND), "decoy keys (control): middle 90%"),
                  (_swatch("dashed", _MEDIAN), "decoy keys (control): median")]
    if any(p.get("anytime_log10_pvalue") is not None for p in r["trajectory"]):
        items.append((_swatch("solid", _ANYTIME), "anytime-valid p (e-process)"))
    items.append((_swatch("dashed", "#000000"), f"alpha = {pvalue_html(format_alpha(alpha))}"))
    return "<p class='legend'>" + "".join(f"<span>{s} {t}</span>" for s, t in items) + "</p>"


_CSS = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222;
overflow-wrap:break-word}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}.verdict{font-size:1.4em;padding:.6em 1em;border-radius:6px;display:inline-block}
.detected{background:#fde0dc;border:2px solid #d62728}.not-detected{background:#e5f5e0;border:2px solid #31a354}
.inconclusive{background:#fff3cd;border:2px solid #e6a700}
.insufficient-data{background:#eeeeee;border:2px solid #777777}code{font-size:.9em}li code{overflow-wrap:anywhere}
.legend span{margin-right:1.5em;display:inline-block}.legend svg{vertical-align:middle}
.pvalue,.nowrap{white-space:nowrap}.scroll{overflow-x:auto;max-width:100%}
.summary{font-size:1.15em;line-height:1.45;max-width:46em}
"""


def _served_html(doc: dict[str, Any]) -> list[str]:
    e = html.escape
    sw = doc.get("served_window")
    if not sw:
        return []
    windows = "" if sw["window_filter_windows"] is None else f" ({sw['window_filter_windows']:,} windows)"
    out = ["<h2>Served-window test</h2>",
           "<p>The same suspect text tested again, scoring only context windows that also occur in your served "
           f"outputs{windows}: it checks the suspect learned from what you actually served.</p><ul>"]
    for r in sw["results"]:
        p = pvalue_html(format_pvalue(r["holm_log10_pvalue"]))
        out.append(f"<li>key <code>{e(r['key_id'][:16])}</code>: p = {p} over {r['n_scored']:,} tuples scored: "
                   f"<b>{e(r['verdict'])}</b></li>")
    out.append("</ul>")
    return out


def render_html(doc: dict[str, Any]) -> str:
    """A self-contained HTML report (no scripts, no external resources) with inline SVG plots."""
    e = html.escape
    cls = doc["verdict"].replace(" ", "-")
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
           "<meta name='viewport' content='width=device-width, initial-scale=1'>",
           f"<title>fingerprint verification: {e(doc['verdict'])}</title><style>{_CSS}</style></head><body>",
           "<h1>fingerprint verification</h1>",
           f"<div class='verdict {cls}'>Verdict: <b>{e(doc['verdict'])}</b> at alpha = "
           f"{pvalue_html(format_alpha(doc['alpha']))}</div>",
           *([f"<div class='verdict detected'><b>{e(custody_banner(doc) or '')}</b></div>"] if custody_banner(doc)
             else []),
           f"<p class='summary'>{summary_sentence(doc, html=True)}</p>",
           "<ul>" + "".join(f"<li>key <code>{e(r['key_id'][:16])}</code>: <b>{e(r['verdict'])}</b>: "
                            f"{e(r['reason'])}</li>" for r in doc["results"]) + "</ul>",
           f"<p>Run {e(doc['created_at'])} with fingerprint {e(doc['version'])}."
           + (" p-values are Holm-adjusted over the keys tested." if doc["holm_applied"] else "") + "</p>",
           "<div class='scroll'><table><tr>" + "".join(f"<th>{h}</th>" for h in SUMMARY_HEADER) + "</tr>"]
    for r in doc["results"]:
        cells = [e(c) for c in summary_cells(r)]
        for i in PVALUE_CELLS:
            if cells[i] != "n/a":
                cells[i] = f'<span class="pvalue">{cells[i]}</span>'
        cells[0], cells[-1] = f"<code>{cells[0]}</code>", f"<b>{cells[-1]}</b>"
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table></div>")
    several = len(doc["results"]) > 1
    for r in doc["results"]:
        who = f"key <code>{e(r['key_id'][:16])}</code>: " if several else ""
        out.append(f"<p class='control'>{who}{control_sentence(r, doc['options']['ks_threshold'], html=True)}</p>")
    out += _served_html(doc)
    for r in doc["results"]:
        out.append(f"<h2>Evidence by tokens read: key <code>{e(r['key_id'][:16])}</code> ({e(r['scheme'])})</h2>")
        out.append(_legend(r, doc["alpha"]))
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
    if custody_lines(doc):
        out.append("<h2>Chain of custody</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in custody_lines(doc)) + "</ul>")
    if doc["notes"]:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in doc["notes"]) + "</ul>")
    title = responses_title(doc)
    if title:
        out.append(f"<h2>{e(title)}</h2>"
                   "<div class='scroll'><table><tr><th>id</th><th>tokens</th><th>scored</th><th>p-value</th></tr>")
        for x in top_responses(doc):
            out.append(f"<tr><td>{e(str(x['id']))}</td><td>{x['n_tokens']}</td><td>{x['n_scored']}</td>"
                       f"<td>{pvalue_html(format_pvalue(x['log10_pvalue']))}</td></tr>")
        out.append("</table></div>")
    out.append("<h2>Method</h2><ul>" + "".join(f"<li>{e(m)}</li>" for m in methods_text(doc)) + "</ul>")
    out.append("</body></html>\n")
    return "".join(out)
