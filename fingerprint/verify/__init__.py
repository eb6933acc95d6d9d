"""Verification: the one pipeline every caller uses.

:func:`verify` (token ids), :func:`verify_exchanges` (texts and evidence files, every access
mode) and :func:`verify_evidence` (evidence objects, e.g. merged shards) all end in the same
steps: score through the key's scheme, test against the scheme's null, decoys, Holm, verdict.
"""

from __future__ import annotations

from .evidence import DUPLICATE_RULE, MODES, Evidence, ItemCounts, merge, placed_at, text_evidence
from .pipeline import Progress, key_vocab_notes, tokenizer_fit_problem, verify, verify_evidence, verify_exchanges
from .result import (VERDICT_DETECTED, VERDICT_INCONCLUSIVE, VERDICT_INSUFFICIENT, VERDICT_NOT_DETECTED, VERDICTS,
                     BayesSummary, DecoySummary, KeyResult, ResponseScores, Sufficiency, TrajectoryPoint,
                     VerifyOptions, VerifyResult)

__all__ = [
    "verify", "verify_exchanges", "verify_evidence", "Progress", "key_vocab_notes", "tokenizer_fit_problem",
    "Evidence", "ItemCounts", "merge", "placed_at", "text_evidence", "MODES", "DUPLICATE_RULE",
    "VerifyOptions", "VerifyResult", "KeyResult", "DecoySummary", "TrajectoryPoint", "BayesSummary",
    "ResponseScores", "Sufficiency",
    "VERDICT_DETECTED", "VERDICT_NOT_DETECTED", "VERDICT_INCONCLUSIVE", "VERDICT_INSUFFICIENT", "VERDICTS",
]
