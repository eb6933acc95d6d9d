"""What an evidence file holds: counts, time span, duplicates, chain and signature status."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from .custody import ManifestStatus, check_custody
from .evidence import ChainCheck, read_records

__all__ = ["EvidenceSummary", "summarize_evidence"]


@dataclass(frozen=True)
class EvidenceSummary:
    """Counts over the exchange records of an evidence file (the header is not counted; a torn
    last line is not a record). ``manifest``: the signed manifest's status, None when unsigned."""

    chain: ChainCheck
    records: int
    succeeded: int
    failed: int
    distinct_prompts: int
    duplicate_successes: int
    statuses: dict[str, int]
    first_started_at: str | None
    last_finished_at: str | None
    settings: dict | None
    manifest: ManifestStatus | None = None


def summarize_evidence(path: str | os.PathLike[str]) -> EvidenceSummary:
    """Counts, statuses, time span, settings, and the chain and manifest status of a file."""
    custody = check_custody(path)
    chain = custody.chain
    statuses: Counter[str] = Counter()
    ok_pairs: Counter[tuple] = Counter()
    prompts = set()
    n = ok = 0
    first = last = None
    for _, rec in read_records(path):
        if rec.get("type") != "exchange":
            continue
        n += 1
        statuses[str(rec.get("status"))] += 1
        prompts.add(rec.get("prompt_id"))
        if rec.get("status") == 200 and rec.get("response") is not None:
            ok += 1
            ok_pairs[(rec.get("prompt_id"), rec.get("sample"))] += 1
        first = rec.get("started_at") if first is None else min(first, rec.get("started_at") or first)
        last = rec.get("finished_at") if last is None else max(last, rec.get("finished_at") or last)
    dups = sum(c - 1 for c in ok_pairs.values() if c > 1)
    return EvidenceSummary(chain, n, ok, n - ok, len(prompts), dups, dict(statuses), first, last,
                           (chain.header or {}).get("settings"), custody.manifest)
