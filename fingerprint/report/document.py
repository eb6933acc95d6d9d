"""The report document of a verification: a JSON object with a stable schema.

The JSON document is the single source: Markdown and HTML are rendered from it, so the three
never disagree. No report contains a secret: keys appear as their public dict (key id,
scheme, parameters, vocabulary size).

Schema (``schema`` = ``"fingerprint-verify-report"``, ``schema_version`` = 1) — top level:

========================  ===========================================================
``verdict``               overall: ``detected`` / ``not detected`` / ``inconclusive`` /
                          ``insufficient data``
``alpha``                 significance level of the verdict
``holm_applied``          several keys were tested, p-values Holm-adjusted
``key_id`` ... ``trajectory``  the fields of the first key's result (see below), copied
``results``               one object per key, each with the fields below
``inputs``                ``suspect``/``served``: ``[{path, sha256, format, records}]``;
                          ``tokenizer``: ``{path, sha256, vocab_size}``
``skipped``               ``{count, records: [{file, line, reason}]}`` (first 1,000)
``failed_requests``       evidence records whose request failed (not read)
``notes``                 warnings, e.g. decoys failing, padded vocabulary
``custody``               set by ``fingerprint verify`` (checked before scoring): ``{ok,
                          accepted_broken_chain, public_keys, evidence: [{path, ok, chain
                          (intact / broken / torn tail), records, head_sha256, problems:
                          [{line, problem}], manifest: null or {path, sha256, ok, problem,
                          public_key_sha256, trusted, checkpoints, signed_records,
                          signed_head_sha256, final, first_signed_at, last_signed_at}}],
                          unchained: [{path, reason}]}`` (see
                          :mod:`fingerprint.collect.custody`); a broken chain scored with
                          ``--accept-broken-chain`` also opens ``notes``
``summary_sentence``      the plain-language sentence at the top of every rendering
                          (see :func:`fingerprint.report.format.summary_sentence`)
``served_window``         null, or the same suspect verified with the served-window
                          filter: ``{verdict, window_filter_windows, n_tokens, results:
                          [{key_id, scheme, n_scored, log10_pvalue, holm_log10_pvalue,
                          pvalue_display, verdict, reason}]}``
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
``anytime_log10_pvalue`` (the e-process's anytime-valid p-value, valid under optional stopping;
null for statistics without one), ``valid_pvalue`` (``fixed-n`` or ``anytime``: which p-value the
verdict uses, set by how the evidence was gathered), ``verdict``, ``reason`` (a sentence), ``mode`` (``text``/``logprobs``/``reading``),
``sufficiency`` (``min_detectable_effect``: the smallest effect the data could detect at the
level the key is tested at, ``target_effect``, ``items_needed`` to detect it, ``tokens_needed``
(the same in suspect tokens at this corpus's ratio of scored items to tokens; null when no amount
would do), ``sufficient``), ``display`` (``pvalue``, ``holm_pvalue``, ``anytime_pvalue``: the
p-values as every report writes them, see :func:`fingerprint.report.format.format_pvalue`),
``trajectory`` (``[{tokens_read, n_scored, log10_pvalue, decoy_low,
decoy_median, decoy_high}]``), ``responses`` (``[{id, n_tokens, n_scored, statistic,
log10_pvalue}]``, input order; at most :data:`MAX_RESPONSES`, the most fingerprinted, with
``responses_total`` the number of responses: ``verify --responses-out`` writes them all).
Non-finite numbers are written as null.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..corpus import ExchangeSet
from ..errors import InputError
from ..version import __version__
from ..verify import KeyResult, VerifyResult
from .format import format_pvalue, summary_sentence

__all__ = ["build_report", "write_json", "write_text", "write_responses", "response_rows", "check_output_path",
           "MAX_RESPONSES", "SCHEMA", "SCHEMA_VERSION"]

SCHEMA = "fingerprint-verify-report"
SCHEMA_VERSION = 1
_MAX_SKIPPED = 1000


def json_number(x: Any) -> Any:
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
        "anytime_log10_pvalue": r.anytime_log10_pvalue,
        "valid_pvalue": r.valid_pvalue,
        "effect": {"value": json_number(t.effect.value), "ci_low": json_number(t.effect.ci_low),
                   "ci_high": json_number(t.effect.ci_high), "confidence_level": t.effect.confidence_level,
                   "method": t.effect.method},
        "decoys": None if d is None else {
            "k": d.k, "seed": d.seed, "empirical_pvalue": d.empirical_pvalue, "ks_pvalue": d.ks_pvalue,
            "passed": d.passed, "log10_pvalue_mean": d.log10_pvalue_mean,
            "log10_pvalue_sd": d.log10_pvalue_sd, "effect_mean": json_number(d.effect_mean),
            "effect_sd": json_number(d.effect_sd), "min_log10_pvalue": d.min_log10_pvalue},
        "log10_bayes_factor": r.bayes.log10_bayes_factor,
        "bayes": {"effect_prior": r.bayes.effect_prior, "effect_prior_max": r.bayes.effect_prior_max,
                  "prior_probability": r.bayes.prior_probability},
        "posterior": r.bayes.posterior,
        "verdict": r.verdict,
        "reason": r.reason,
        "mode": r.mode,
        "sufficiency": {"min_detectable_effect": json_number(r.sufficiency.min_detectable_effect),
                        "target_effect": r.sufficiency.target_effect,
                        "items_needed": json_number(r.sufficiency.items_needed),
                        "tokens_needed": _tokens_needed(r.sufficiency.items_needed, r.counts.scored, n_tokens),
                        "sufficient": r.sufficiency.sufficient},
        "trajectory": [{"tokens_read": p.tokens_read, "n_scored": p.n_scored,
                        "log10_pvalue": p.log10_pvalue, "decoy_low": json_number(p.decoy_low),
                        "decoy_median": json_number(p.decoy_median), "decoy_high": json_number(p.decoy_high),
                        "anytime_log10_pvalue": json_number(p.anytime_log10_pvalue)}
                       for p in r.trajectory],
        "responses": response_rows(r, MAX_RESPONSES),
        "responses_total": len(r.responses.ids),
        "display": {"pvalue": format_pvalue(t.log10_pvalue), "holm_pvalue": format_pvalue(r.holm_log10_pvalue),
                    "anytime_pvalue": None if r.anytime_log10_pvalue is None
                    else format_pvalue(r.anytime_log10_pvalue)},
    }


def _tokens_needed(items_needed: float, n_scored: int, n_tokens: int) -> int | None:
    """Scored items needed, as suspect tokens at this corpus's ratio of scored items to tokens
    read (about: new text repeats less); None when no amount would do."""
    if not math.isfinite(items_needed):
        return None
    ratio = n_tokens / n_scored if n_scored > 0 and n_tokens > 0 else 1.0
    return int(math.ceil(items_needed * max(1.0, ratio)))


def _served_window(r: VerifyResult) -> dict[str, Any]:
    """The companion result restricted to windows seen in the owner's served outputs."""
    return {"verdict": r.verdict, "window_filter_windows": r.window_filter_size, "n_tokens": r.n_tokens,
            "results": [{"key_id": k.key["key_id"], "scheme": k.key["scheme"], "n_scored": k.counts.scored,
                         "log10_pvalue": k.test.log10_pvalue, "holm_log10_pvalue": k.holm_log10_pvalue,
                         "pvalue_display": format_pvalue(k.test.log10_pvalue), "verdict": k.verdict,
                         "reason": k.reason} for k in r.results]}


#: Per-response rows a report holds per key (the most fingerprinted ones, in corpus order): a
#: million tiny responses must not make a million-row report. The full list: ``write_responses``.
MAX_RESPONSES = 1000


def response_rows(r: KeyResult, limit: int | None = None) -> list[dict[str, Any]]:
    """One key's per-response rows; with ``limit``, only the ``limit`` smallest p-values among
    responses with scored items, kept in corpus order."""
    rs = r.responses
    idx = np.arange(len(rs.ids))
    if limit is not None and idx.size > limit:
        scored = idx[rs.n_scored > 0]
        idx = np.sort(scored[np.argsort(rs.log10_pvalue[scored], kind="stable")[:limit]])
    return [{"id": rs.ids[i], "n_tokens": int(rs.n_tokens[i]), "n_scored": int(rs.n_scored[i]),
             "statistic": float(rs.statistic[i]), "log10_pvalue": float(rs.log10_pvalue[i])} for i in idx]


def write_responses(result: VerifyResult, path: str | os.PathLike[str]) -> None:
    """Every key's per-response rows as JSONL (``{"key_id", "id", "n_tokens", ...}`` per line),
    written atomically."""
    lines = [json.dumps({"key_id": r.key["key_id"], **row}, allow_nan=False)
             for r in result.results for row in response_rows(r)]
    write_text("\n".join(lines) + ("\n" if lines else ""), path)


def input_files(es: ExchangeSet | None) -> list[dict[str, Any]]:
    if es is None:
        return []
    return [{"path": f.path, "sha256": f.sha256, "format": f.format, "records": f.records} for f in es.files]


def build_report(result: VerifyResult, *, suspect: ExchangeSet, tokenizer_path: str, tokenizer_sha256: str,
                 served: ExchangeSet | None = None, created_at: str | None = None,
                 served_result: VerifyResult | None = None) -> dict[str, Any]:
    """The JSON report document (see the module docstring for the schema).

    ``served_result``: the same suspect verified with the served-window filter (``verify
    --served``), shown beside ``result`` (its p-value goes in ``served_window``)."""
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
    doc["inputs"] = {"suspect": input_files(suspect), "served": input_files(served),
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
    doc["served_window"] = None if served_result is None else _served_window(served_result)
    doc["summary_sentence"] = summary_sentence(doc)
    return doc


def check_output_path(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Refuse, before any work, an output path that cannot be written: its folder missing or
    not writable, or the path a directory. Raises :class:`~fingerprint.errors.InputError`."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"{what} {path}: is a directory")
    if not parent.is_dir():
        raise InputError(f"{what} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what} {path}: folder {parent} is not writable")
    return path


def write_json(doc: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write atomically, so a crash never leaves half a report (see :func:`write_text`)."""
    write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", path)


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    """Write ``text`` to ``path`` atomically: a fresh temporary file (unpredictable name, created
    exclusively, so a planted symlink is never followed) in the same folder, then a rename over
    the target (which replaces a symlink at ``path`` rather than writing through it)."""
    path = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
