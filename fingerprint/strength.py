"""Fingerprint strength of a release, for CI: measure, compare with thresholds and a baseline.

Metrics (all computed on the release's own responses, deterministic under a fixed seed):

``effect``, ``effect_ci_low``
    Excess of the score rate over its null (green-rate excess for greenlist), with the lower
    end of its 95% interval, over the whole sample (de-duplicated tuples).
``log10_pvalue``
    The exact test over the whole sample.
``tokens_to_detect_p10`` / ``_median`` / ``_p90``
    Tokens a single response needs before its own p-value (tuples de-duplicated within the
    response) falls below 1e-6; responses that never get there count as infinite.
``detectable_share``
    Share of responses detectable on their own at p < 1e-6.
``unmarked_share``
    Estimated share of responses that carry no fingerprint at all: the weight of the null
    component in a two-component mixture (null rate fixed, fingerprinted rate fitted by EM)
    of per-response scores, with likelihoods from the scheme's null object. A decoding path
    that bypasses the fingerprint shows up here.
``radioactivity_log10_pvalue``
    A proxy for how well the fingerprint survives distillation, given to
    :func:`measure_strength` as a callable (``fingerprint.apps.radioactivity.TrigramProxy``: a
    trigram student trained on clean text plus these responses at rho = 5% answers a fixed
    budget of prompts, and its text is verified on the windows of the release's responses).
    This module never builds models itself.

The whole-sample test runs through the verify pipeline (:func:`fingerprint.verify.verify`,
no decoys); nothing here depends on which scheme the key uses beyond what the scheme and its
null object provide.

Thresholds and tolerances come from a TOML file (``[thresholds]``, ``[tolerances]``) or
flags; a regression is any metric beyond its threshold, or worse than the baseline by more
than its tolerance.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .corpus import ExchangeSet
from .errors import InputError, ParameterError
from .keys import FingerprintKey
from .report.strength import format_metric
from .schemes import Scheme
from .stats import NullModel
from .verify import VerifyOptions, verify
from .windows import TupleTable, first_occurrence_mask, select_tuples, text_keyed_ids, tuple_table

__all__ = ["Thresholds", "Tolerances", "StrengthMetrics", "Check", "StrengthResult", "RadioactivityProxy",
           "measure_strength", "evaluate", "load_config", "METRIC_DIRECTIONS",
           "DETECT_LOG10", "MIN_SEPARATION", "REFERENCE_TRIAL_SD"]

DETECT_LOG10 = -6.0
#: The fingerprinted component of the unmarked-share mixture has a per-trial rate at least
#: ``MIN_SEPARATION * trial_sd / REFERENCE_TRIAL_SD`` above the null rate (``trial_sd``: the
#: null's per-trial standard deviation), so that it cannot collapse onto the null component:
#: 0.05 on the green rate at gamma = 0.25 (the reference), 0.058 on the g-bit rate of
#: tournament, 0.115 on gumbel's mean score.
MIN_SEPARATION = 0.05
REFERENCE_TRIAL_SD = math.sqrt(0.25 * 0.75)

#: The distillation proxy :func:`measure_strength` is given: ``proxy(key, tokens (N,), offsets (T + 1,))``
#: returns the log10 p-value of a student distilled from the responses. Optional attributes
#: ``rho`` (share of the student's training tokens that are the responses) and ``seed`` are
#: recorded with the metrics; ``description`` is shown in progress messages.
RadioactivityProxy = Callable[[FingerprintKey, np.ndarray, np.ndarray], float]

#: +1: larger is better; -1: smaller is better.
METRIC_DIRECTIONS = {
    "effect": +1, "effect_ci_low": +1, "log10_pvalue": -1, "tokens_to_detect_p10": -1,
    "tokens_to_detect_median": -1, "tokens_to_detect_p90": -1, "detectable_share": +1,
    "unmarked_share": -1, "radioactivity_log10_pvalue": -1,
}


@dataclass(frozen=True)
class Thresholds:
    """Absolute limits; None disables a check."""

    min_effect_ci_low: float | None = 0.05
    max_tokens_to_detect_median: float | None = 400.0
    min_detectable_share: float | None = 0.5
    max_unmarked_share: float | None = 0.05
    max_radioactivity_log10_pvalue: float | None = -6.0


@dataclass(frozen=True)
class Tolerances:
    """Allowed worsening against a baseline (relative for effect and tokens, else absolute)."""

    effect_relative_drop: float = 0.15
    tokens_relative_increase: float = 0.25
    detectable_share_drop: float = 0.10
    unmarked_share_increase: float = 0.02
    radioactivity_log10_increase: float = 3.0


@dataclass(frozen=True)
class StrengthMetrics:
    scheme: str
    key_id: str
    n_responses: int
    n_tokens: int
    n_scored: int
    effect: float
    effect_ci_low: float
    effect_ci_high: float
    log10_pvalue: float
    tokens_to_detect_p10: float
    tokens_to_detect_median: float
    tokens_to_detect_p90: float
    detectable_share: float
    unmarked_share: float
    radioactivity_log10_pvalue: float | None
    radioactivity_rho: float | None
    seed: int


@dataclass(frozen=True)
class Check:
    """One comparison: ``metric`` against a ``limit`` (threshold or baseline +- tolerance)."""

    metric: str
    kind: str  # "threshold" or "baseline"
    value: float
    limit: float
    passed: bool
    message: str


@dataclass
class StrengthResult:
    metrics: StrengthMetrics
    checks: list[Check] = field(default_factory=list)
    baseline: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "fingerprint-strength", "schema_version": 1, "passed": self.passed,
                "metrics": _finite(asdict(self.metrics)),
                "checks": [_finite(asdict(c)) for c in self.checks], "baseline": self.baseline}


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def load_config(path: str | Path) -> tuple[Thresholds, Tolerances]:
    """Read ``[thresholds]`` and ``[tolerances]`` from a TOML file; unknown names are errors."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read config: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    out: list[Any] = []
    for section, cls in (("thresholds", Thresholds), ("tolerances", Tolerances)):
        values = data.get(section, {})
        known = set(cls.__dataclass_fields__)
        for name, value in values.items():
            if name not in known:
                raise InputError(f"{path}: [{section}] {name}: unknown setting; known: {', '.join(sorted(known))}")
            if value is not None and not isinstance(value, (int, float)):
                raise InputError(f"{path}: [{section}] {name}: must be a number, got {value!r}")
        out.append(cls(**values))
    extra = set(data) - {"thresholds", "tolerances"}
    if extra:
        raise InputError(f"{path}: unknown section(s) {sorted(extra)}")
    return out[0], out[1]


# ---- per-response detection ------------------------------------------------------------------

def _per_response_tokens_to_detect(scheme: Scheme, table: TupleTable, sel_mask: np.ndarray
                                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokens each response needs to reach p < 1e-6 on its own (inf if never), and each
    response's (total, n) for the mixture fit, each ``(T,)``. Tuples (``sel_mask`` ``(n,)`` of
    the table's) are de-duplicated within responses; p-values come from the scheme's null."""
    idx = np.flatnonzero(sel_mask)
    text = table.text_index[idx]
    first = first_occurrence_mask(text_keyed_ids(table.tuple_ids[idx], text))
    idx, text = idx[first], text[first]
    scores = scheme.tuple_scores(table.windows(idx), table.next_tokens(idx)).astype(np.float64)
    n_texts = table.n_texts
    counts = np.bincount(text, minlength=n_texts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    cum = np.cumsum(scores)
    base = np.concatenate(([0.0], cum))[starts][text]
    within = np.arange(idx.size) - starts[text]
    running = cum - base
    log10p = scheme.null(0).log10_sf_prefixes(running, within + 1)
    hit = log10p <= DETECT_LOG10
    tokens_read = table.positions[idx] - table.offsets[text] + 1
    need = np.full(n_texts, np.inf)
    if hit.any():
        hit_idx = np.flatnonzero(hit)
        # first hit per response: hits are in corpus order
        first_hit = hit_idx[np.concatenate(([True], text[hit_idx][1:] != text[hit_idx][:-1]))]
        need[text[first_hit]] = tokens_read[first_hit]
    totals = np.bincount(text, weights=scores, minlength=n_texts)
    return need, totals, counts


def _unmarked_share(null: NullModel, totals: np.ndarray, counts: np.ndarray, iters: int = 200) -> float:
    """EM weight of the null component in a two-component mixture of per-response totals.

    ``totals`` ``(T,)`` is each response's total score over ``counts`` ``(T,)`` items. Under the
    null component a total follows ``null`` at its ``null_rate``; under the fingerprinted one
    the same family at a fitted rate, at least ``null_rate + MIN_SEPARATION * null.trial_sd() /
    REFERENCE_TRIAL_SD`` (see :data:`MIN_SEPARATION`). Responses without items are left out;
    ``nan`` when none is left.
    """
    keep = counts > 0
    t, n = totals[keep], counts[keep]
    if t.size == 0:
        return math.nan
    floor = null.null_rate + MIN_SEPARATION * null.trial_sd() / REFERENCE_TRIAL_SD
    null_ll = null.log_likelihood(t, n, null.null_rate)
    rate, w0 = null.rate_mle(t, n, at_least=floor), 0.5
    for _ in range(iters):
        marked_ll = null.log_likelihood(t, n, rate)
        r0 = 1.0 / (1.0 + (1 - w0) / w0 * np.exp(np.clip(marked_ll - null_ll, -700, 700)))
        w0 = float(np.clip(r0.mean(), 1e-6, 1 - 1e-6))
        rate = null.rate_mle(t, n, 1 - r0, at_least=floor)
    return w0


def measure_strength(responses: ExchangeSet, tokenizer, key: FingerprintKey, *,
                     radioactivity: RadioactivityProxy | None = None, seed: int | None = None,
                     progress: Callable[[str], None] | None = None) -> StrengthMetrics:
    """Measure every strength metric of a release's responses (deterministic).

    Parameters
    ----------
    responses:
        The release's exchanges (prompts are excluded from scoring where present).
    tokenizer, key:
        The owner's tokenizer and the release's key (one of fingerprint's own schemes).
    radioactivity:
        The distillation proxy (see :data:`RadioactivityProxy`), e.g.
        ``fingerprint.apps.radioactivity.TrigramProxy()``; ``None`` skips the metric.
    seed:
        Recorded with the metrics; default: the proxy's ``seed`` attribute, else 0. (Only the
        proxy uses randomness.)
    progress:
        Called with one-line progress messages.
    """
    say = progress or (lambda _m: None)
    if not responses.exchanges:
        raise InputError("no responses to measure")
    scheme = key.pairwise_scheme_for(tokenizer, "strength")
    if seed is None:
        seed = int(getattr(radioactivity, "seed", 0))
    say(f"tokenizing {len(responses.exchanges):,} responses")
    tokens, offsets = tokenizer.encode_batch(responses.responses)
    p_tokens, p_offsets = tokenizer.encode_batch(responses.prompts)
    say("whole-sample test (verify pipeline, no decoys)")
    whole = verify(tokens, offsets, keys=key, prompt_tokens=p_tokens, prompt_offsets=p_offsets,
                   options=VerifyOptions(n_decoys=0)).results[0]
    test = whole.test
    say("per-response detection")
    table = tuple_table(tokens, offsets, scheme.context_width, vocab_size=key.vocab_size)
    no_prompt = select_tuples(table, prompt_tokens=p_tokens, prompt_offsets=p_offsets, deduplicate=False)
    need, totals, counts = _per_response_tokens_to_detect(scheme, table, no_prompt.mask)
    finite_share = float(np.isfinite(need).mean())
    p10, med, p90 = (float(np.quantile(need, q, method="nearest")) for q in (0.1, 0.5, 0.9))
    unmarked = _unmarked_share(scheme.null(0), totals, counts)
    radio = rho = None
    if radioactivity is not None:
        say(f"radioactivity proxy: {getattr(radioactivity, 'description', 'distillation proxy')}")
        radio = float(radioactivity(key, tokens, offsets))
        rho = getattr(radioactivity, "rho", None)
    return StrengthMetrics(scheme=key.scheme, key_id=key.key_id, n_responses=len(responses.exchanges),
                           n_tokens=int(tokens.size), n_scored=int(whole.counts.scored), effect=test.effect.value,
                           effect_ci_low=test.effect.ci_low, effect_ci_high=test.effect.ci_high,
                           log10_pvalue=test.log10_pvalue, tokens_to_detect_p10=p10, tokens_to_detect_median=med,
                           tokens_to_detect_p90=p90, detectable_share=finite_share, unmarked_share=unmarked,
                           radioactivity_log10_pvalue=radio, radioactivity_rho=None if rho is None else float(rho),
                           seed=int(seed))


def evaluate(metrics: StrengthMetrics, thresholds: Thresholds, *, baseline: dict[str, Any] | None = None,
             tolerances: Tolerances = Tolerances()) -> StrengthResult:
    """Compare metrics with thresholds and (optionally) a baseline's metrics."""
    checks: list[Check] = []

    def add(metric: str, kind: str, value: float | None, limit: float, ok: bool, what: str) -> None:
        shown = "n/a" if value is None else format_metric(value)
        msg = f"{metric} = {shown} {'within' if ok else 'beyond'} {what} {format_metric(limit)}"
        checks.append(Check(metric, kind, math.nan if value is None else float(value), float(limit), ok, msg))

    m = metrics
    # (metric, threshold field); METRIC_DIRECTIONS says whether the threshold is a floor or a cap
    for metric, field_name in (("effect_ci_low", "min_effect_ci_low"),
                               ("tokens_to_detect_median", "max_tokens_to_detect_median"),
                               ("detectable_share", "min_detectable_share"),
                               ("unmarked_share", "max_unmarked_share"),
                               ("radioactivity_log10_pvalue", "max_radioactivity_log10_pvalue")):
        limit = getattr(thresholds, field_name)
        value = getattr(m, metric)
        if limit is None or value is None:
            continue
        floor = METRIC_DIRECTIONS[metric] > 0
        add(metric, "threshold", value, limit, value >= limit if floor else value <= limit,
            "threshold >=" if floor else "threshold <=")
    if baseline is not None:
        b = baseline.get("metrics", baseline)
        tol = tolerances
        if b.get("scheme") not in (None, m.scheme):
            raise ParameterError(f"baseline was measured for scheme {b.get('scheme')!r}, this run for {m.scheme!r}")
        if b.get("effect") is not None:
            limit = b["effect"] * (1 - tol.effect_relative_drop)
            add("effect", "baseline", m.effect, limit, m.effect >= limit, "baseline limit >=")
        if b.get("tokens_to_detect_median") is not None:
            limit = b["tokens_to_detect_median"] * (1 + tol.tokens_relative_increase)
            add("tokens_to_detect_median", "baseline", m.tokens_to_detect_median, limit,
                m.tokens_to_detect_median <= limit, "baseline limit <=")
        if b.get("detectable_share") is not None:
            limit = b["detectable_share"] - tol.detectable_share_drop
            add("detectable_share", "baseline", m.detectable_share, limit, m.detectable_share >= limit,
                "baseline limit >=")
        if b.get("unmarked_share") is not None:
            limit = b["unmarked_share"] + tol.unmarked_share_increase
            add("unmarked_share", "baseline", m.unmarked_share, limit, m.unmarked_share <= limit,
                "baseline limit <=")
        if b.get("radioactivity_log10_pvalue") is not None and m.radioactivity_log10_pvalue is not None:
            limit = b["radioactivity_log10_pvalue"] + tol.radioactivity_log10_increase
            add("radioactivity_log10_pvalue", "baseline", m.radioactivity_log10_pvalue, limit,
                m.radioactivity_log10_pvalue <= limit, "baseline limit <=")
    return StrengthResult(metrics, checks, baseline)
