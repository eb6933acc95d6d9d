"""``collect --until-detected``: stop querying a suspect as soon as the evidence suffices.

The monitor re-runs the verify pipeline (text mode, no decoys) on every successful exchange
collected so far, in the order the records were appended, and stops the collection when the
anytime-valid p-value (an e-process over the de-duplicated tuples in arrival order, see
:mod:`fingerprint.stats.sequential`) reaches alpha. That p-value is valid whatever the stopping
time, so stopping on it is sound; the rule is written into the evidence header, and ``verify``
then reports the anytime-valid p-value as the one that applies.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ..corpus import Exchange, evidence_record_exchanges
from ..errors import ParameterError
from ..keys import FingerprintKey
from ..verify import VerifyOptions, verify

__all__ = ["AnytimeDetectionMonitor"]


class AnytimeDetectionMonitor:
    """A :class:`fingerprint.collect.StopMonitor`: stop once ``key``'s anytime-valid p-value is at
    most ``alpha``.

    ``check_every`` successful exchanges (and at least every ``check_seconds``) the pipeline runs
    on everything collected so far; the cost is linear in the evidence, so checks are batched.
    ``last_log10_pvalue`` holds the latest anytime-valid log10 p-value.
    """

    def __init__(self, key: FingerprintKey, tokenizer: Any, *, alpha: float = 1e-6, check_every: int = 16,
                 check_seconds: float = 2.0, max_requests: int | None = None) -> None:
        if not 0 < alpha < 1:
            raise ParameterError(f"alpha must be in (0, 1), got {alpha!r}")
        if check_every < 1:
            raise ParameterError(f"check_every must be >= 1, got {check_every!r}")
        key.pairwise_scheme_for(tokenizer, "--until-detected")  # same key/tokenizer checks as elsewhere
        self.key = key
        self.tokenizer = tokenizer
        self.alpha = float(alpha)
        self.check_every = int(check_every)
        self.check_seconds = float(check_seconds)
        self.exchanges: list[Exchange] = []
        self.last_log10_pvalue = 0.0
        self.checks = 0
        self._since = 0
        self._last_check = time.monotonic()
        self.rule: dict[str, Any] = {"kind": "anytime-valid", "statistic": "e-process mixture (fingerprint.stats."
                                     "sequential)", "key_id": key.key_id, "alpha": self.alpha,
                                     "max_requests": max_requests}

    def check(self) -> bool:
        """Run the pipeline on the exchanges so far; True when the anytime p-value reaches alpha."""
        self._since = 0
        self._last_check = time.monotonic()
        if not self.exchanges:
            return False
        tokens, offsets = self.tokenizer.encode_batch([e.response for e in self.exchanges])
        p_tokens, p_offsets = self.tokenizer.encode_batch([e.prompt for e in self.exchanges])
        result = verify(tokens, offsets, keys=self.key, prompt_tokens=p_tokens, prompt_offsets=p_offsets,
                        options=VerifyOptions(alpha=self.alpha, n_decoys=0, trajectory_points=2,
                                              optional_stopping=True)).results[0]
        self.checks += 1
        self.last_log10_pvalue = float(result.anytime_log10_pvalue if result.anytime_log10_pvalue is not None
                                       else 0.0)
        return self.last_log10_pvalue <= math.log10(self.alpha)

    def observe(self, record: dict[str, Any]) -> bool:
        found = evidence_record_exchanges(record, source=str(record.get("prompt_id", "")))
        if not found:
            return False
        self.exchanges.extend(found)
        self._since += 1
        if self._since >= self.check_every or time.monotonic() - self._last_check >= self.check_seconds:
            return self.check()
        return False
