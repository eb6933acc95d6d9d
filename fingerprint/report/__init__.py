"""Reports: the JSON document (the single source), its Markdown and HTML renderings, the strength
guard's renderings, and the one p-value formatter every output uses."""

from __future__ import annotations

from .document import (MAX_RESPONSES, SCHEMA, SCHEMA_VERSION, build_report, check_output_path, response_rows,
                       write_json, write_responses, write_text)
from .format import control_sentence, format_alpha, format_effect, format_posterior, format_pvalue, summary_sentence
from .html import render_html, trajectory_svg
from .markdown import render_markdown
from .strength import render_strength_junit, render_strength_markdown

__all__ = ["SCHEMA", "SCHEMA_VERSION", "build_report", "write_json", "write_text", "write_responses", "response_rows",
           "check_output_path", "MAX_RESPONSES", "format_pvalue", "format_alpha", "format_effect",
           "summary_sentence", "control_sentence",
           "format_posterior", "render_html", "render_markdown", "trajectory_svg", "render_strength_markdown",
           "render_strength_junit"]
