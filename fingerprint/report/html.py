"""The self-contained HTML rendering of a report document, with an inline SVG trajectory."""

from __future__ import annotations

import html
import math
from typing import Any

from .custody import custody_banner, custody_lines
from .format import SUMMARY_HEADER, format_pvalue, methods_text, summary_cells, top_responses

__all__ = ["render_html", "trajectory_svg"]


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
    band_hi += [-(p["anytime_log10_pvalue"]) for p in pts if p.get("anytime_log10_pvalue") is not None]
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
    anytime = [(sx(x), sy(-p["anytime_log10_pvalue"])) for x, p in zip(xs, pts)
               if p.get("anytime_log10_pvalue") is not None]
    if anytime:
        pts_s = " ".join(f"{a:.1f},{b:.1f}" for a, b in anytime)
        parts.append(f'<polyline class="anytime" points="{pts_s}" fill="none" stroke="#756bb1" stroke-width="2"/>')
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
.inconclusive{background:#fff3cd;border:2px solid #e6a700}
.insufficient-data{background:#eeeeee;border:2px solid #777777}code{font-size:.9em}.legend span{margin-right:1.5em}
"""


def render_html(doc: dict[str, Any]) -> str:
    """A self-contained HTML report (no external resources) with inline SVG plots."""
    e = html.escape
    cls = doc["verdict"].replace(" ", "-")
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
           f"<title>fingerprint verification: {e(doc['verdict'])}</title><style>{_CSS}</style></head><body>",
           "<h1>fingerprint verification</h1>",
           f"<div class='verdict {cls}'>Verdict: <b>{e(doc['verdict'])}</b> at alpha = {doc['alpha']:g}</div>",
           *([f"<div class='verdict detected'><b>{e(custody_banner(doc) or '')}</b></div>"] if custody_banner(doc)
             else []),
           "<ul>" + "".join(f"<li>key <code>{e(r['key_id'][:16])}</code>: <b>{e(r['verdict'])}</b>: "
                            f"{e(r['reason'])}</li>" for r in doc["results"]) + "</ul>",
           f"<p>Run {e(doc['created_at'])} with fingerprint {e(doc['version'])}."
           + (" p-values are Holm-adjusted over the keys tested." if doc["holm_applied"] else "") + "</p>",
           "<table><tr>" + "".join(f"<th>{h}</th>" for h in SUMMARY_HEADER) + "</tr>"]
    for r in doc["results"]:
        cells = [e(c) for c in summary_cells(r)]
        cells[0], cells[-1] = f"<code>{cells[0]}</code>", f"<b>{cells[-1]}</b>"
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    for r in doc["results"]:
        out.append(f"<h2>Evidence by tokens read: key <code>{e(r['key_id'][:16])}</code> ({e(r['scheme'])})</h2>")
        out.append("<p class='legend'><span style='color:#d62728'>&#9632; this key</span>"
                   "<span style='color:#6baed6'>&#9632; decoy keys, 5%-95%</span>"
                   "<span style='color:#756bb1'>&#9632; anytime-valid p (e-process)</span>"
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
    if custody_lines(doc):
        out.append("<h2>Chain of custody</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in custody_lines(doc)) + "</ul>")
    if doc["notes"]:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in doc["notes"]) + "</ul>")
    out.append("<h2>Most fingerprinted responses (first key; for inspection, not a test)</h2>"
               "<table><tr><th>id</th><th>tokens</th><th>scored</th><th>p-value</th></tr>")
    for x in top_responses(doc):
        out.append(f"<tr><td>{e(str(x['id']))}</td><td>{x['n_tokens']}</td><td>{x['n_scored']}</td>"
                   f"<td>{e(format_pvalue(x['log10_pvalue']))}</td></tr>")
    out.append("</table><h2>Method</h2><ul>" + "".join(f"<li>{e(m)}</li>" for m in methods_text(doc)) + "</ul>")
    out.append("</body></html>\n")
    return "".join(out)
