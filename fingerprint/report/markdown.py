"""The Markdown rendering of a report document (also fits a CI job summary)."""

from __future__ import annotations

from typing import Any

from .custody import custody_banner, custody_lines
from .format import (SUMMARY_HEADER, control_sentence, format_alpha, format_pvalue, md_text, methods_text,
                     responses_title, summary_cells, summary_sentence, top_responses)

__all__ = ["render_markdown"]


def _served_lines(doc: dict[str, Any]) -> list[str]:
    sw = doc.get("served_window")
    if not sw:
        return []
    windows = "" if sw["window_filter_windows"] is None else f" ({sw['window_filter_windows']:,} windows)"
    lines = ["", "## Served-window test", "",
             "The same suspect text tested again, scoring only context windows that also occur in your served "
             f"outputs{windows}: it checks the suspect learned from what you actually served.", ""]
    for r in sw["results"]:
        lines.append(f"- key `{r['key_id'][:16]}`: p = {format_pvalue(r['holm_log10_pvalue'])} over "
                     f"{r['n_scored']:,} tuples scored: **{r['verdict']}**")
    return lines


def render_markdown(doc: dict[str, Any]) -> str:
    """A Markdown report (also fits a CI job summary)."""
    lines = [f"# fingerprint verification: **{doc['verdict']}**", "",
             *([f"> **{md_text(custody_banner(doc))}**", ""] if custody_banner(doc) else []),
             summary_sentence(doc), "",
             f"Run {doc['created_at']} with fingerprint {doc['version']}; alpha = {format_alpha(doc['alpha'])}"
             + ("; p-values Holm-adjusted over keys" if doc["holm_applied"] else "") + ".", "",
             *[f"- key `{r['key_id'][:16]}`: **{r['verdict']}**: {md_text(r['reason'])}" for r in doc["results"]], "",
             "| " + " | ".join(SUMMARY_HEADER) + " |",
             "|" + "---|" * len(SUMMARY_HEADER)]
    for r in doc["results"]:
        cells = summary_cells(r)
        cells[0], cells[-1] = f"`{cells[0]}`", f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    several = len(doc["results"]) > 1
    for r in doc["results"]:
        ctl = control_sentence(r, doc["options"]["ks_threshold"])
        lines.append(f"- key `{r['key_id'][:16]}`: {ctl}" if several else ctl)
    lines += _served_lines(doc)
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
        lines.append(f"- {md_text(f['path'])} ({f['format']}, {f['records']:,} records) sha256 `{f['sha256']}`")
    tok = doc["inputs"]["tokenizer"]
    lines.append(f"- tokenizer {md_text(tok['path'])} (vocabulary {tok['vocab_size']:,}) sha256 `{tok['sha256']}`")
    if custody_lines(doc):
        lines += ["", "## Chain of custody", ""] + [f"- {md_text(x)}" for x in custody_lines(doc)]
    if doc["notes"]:
        lines += ["", "## Notes", ""] + [f"- {md_text(n)}" for n in doc["notes"]]
    lines += ["", "## Evidence by tokens read (first key)", "",
              "| tokens read | tuples | p-value | decoy keys (control), 5%-95% |", "|---|---|---|---|"]
    traj = doc["trajectory"]
    shown = sorted(set(range(0, len(traj), max(1, len(traj) // 12))) | {len(traj) - 1}) if traj else []
    for p in (traj[i] for i in shown):
        band = ("n/a" if p["decoy_low"] is None else
                f"{format_pvalue(p['decoy_low'])} - {format_pvalue(p['decoy_high'])}")
        lines.append(f"| {p['tokens_read']:,} | {p['n_scored']:,} | {format_pvalue(p['log10_pvalue'])} | {band} |")
    title = responses_title(doc)
    if title:
        lines += ["", f"## {title}", "", "| id | tokens | scored | p-value |", "|---|---|---|---|"]
        for x in top_responses(doc):
            lines.append(f"| {md_text(x['id'])} | {x['n_tokens']} | {x['n_scored']} | "
                         f"{format_pvalue(x['log10_pvalue'])} |")
    lines += ["", "## Method", ""] + [f"- {m}" for m in methods_text(doc)]
    return "\n".join(lines) + "\n"
