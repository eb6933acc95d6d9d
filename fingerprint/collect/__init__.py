"""Collecting evidence from suspect models over OpenAI-compatible HTTP APIs.

:mod:`.client` sends the requests (httpx, async, retries, rate and concurrency limits);
:mod:`.evidence` keeps every exchange in an append-only, hash-chained JSONL file.
"""

from .client import (ClientLimits, CollectSettings, CollectStats, PromptRecord, StopMonitor, collect, read_prompts,
                     run_collect)
from .evidence import ChainCheck, EvidenceWriter, check_chain, read_records
from .summary import EvidenceSummary, summarize_evidence

__all__ = ["ClientLimits", "CollectSettings", "CollectStats", "PromptRecord", "StopMonitor", "collect", "read_prompts",
           "run_collect", "ChainCheck", "EvidenceWriter", "check_chain", "read_records", "EvidenceSummary",
           "summarize_evidence"]
