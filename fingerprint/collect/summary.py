"""What an evidence file holds: counts, time span, duplicates, chain and signature status."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

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

    @property
    def ok(self) -> bool:
        """The chain is intact and the manifest, when there is one, holds."""
        return self.chain.ok and (self.manifest is None or self.manifest.ok)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (``fingerprint evidence summary --json``)."""
        c = self.chain
        return {"ok": self.ok,
                "chain": {"ok": c.ok, "records": c.records, "last_sha256": c.last_sha256,
                          "first_bad_line": c.first_bad_line, "problem": c.problem, "torn_tail": c.torn_tail},
                "records": self.records, "succeeded": self.succeeded, "failed": self.failed,
                "distinct_prompts": self.distinct_prompts, "duplicate_successes": self.duplicate_successes,
                "statuses": dict(self.statuses), "first_started_at": self.first_started_at,
                "last_finished_at": self.last_finished_at, "settings": self.settings,
                "manifest": None if self.manifest is None else self.manifest.to_dict()}


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
