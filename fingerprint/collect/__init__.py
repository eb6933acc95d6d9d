"""Collecting evidence from suspect models over OpenAI-compatible HTTP APIs.

:mod:`.client` sends the requests (httpx, async, retries, rate and concurrency limits);
:mod:`.evidence` keeps every exchange in an append-only, hash-chained JSONL file (locked while
written); :mod:`.custody` signs its checkpoints with the investigator's Ed25519 key and checks
chains and signatures before anything is scored.
"""

from .client import (ClientLimits, CollectSettings, CollectStats, PromptRecord, StopMonitor, collect, read_prompts,
                     run_collect)
from .custody import CustodyCheck, EvidenceSigner, check_custody, generate_signing_key, load_public_key, sign_evidence
from .evidence import (ChainCheck, EvidenceLock, EvidenceWriter, check_chain, lock_evidence, open_for_append,
                       read_records)
from .summary import EvidenceSummary, summarize_evidence

__all__ = ["ClientLimits", "CollectSettings", "CollectStats", "PromptRecord", "StopMonitor", "collect", "read_prompts",
           "run_collect", "ChainCheck", "EvidenceWriter", "check_chain", "read_records", "EvidenceSummary",
           "summarize_evidence", "CustodyCheck", "EvidenceSigner", "check_custody", "generate_signing_key",
           "load_public_key", "sign_evidence", "EvidenceLock", "lock_evidence", "open_for_append"]
