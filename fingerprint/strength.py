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
    of per-response scores. A decoding path that bypasses the fingerprint shows up here.
``radioactivity_log10_pvalue``
    A proxy for how well the fingerprint survives distillation: a trigram student trained on
    clean text plus these responses at rho = 5% answers a fixed budget of prompts, and its
    text is tested on the windows of the release's responses (the supervised setting: the
    owner knows what it served). Needs the packaged English corpus (or ``clean_corpus``).

Thresholds and tolerances come from a TOML file (``[thresholds]``, ``[tolerances]``) or
flags; a regression is any metric beyond its threshold, or worse than the baseline by more
than its tolerance.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy import stats

from .corpus import ExchangeSet
from .errors import InputError, ParameterError
from .keys import FingerprintKey
from .windows import WindowFilter, _with_text, first_occurrence_mask, select_tuples, tuple_table

__all__ = ["Thresholds", "Tolerances", "StrengthMetrics", "Check", "StrengthResult", "measure_strength",
           "evaluate", "load_config", "METRIC_DIRECTIONS"]

DETECT_LOG10 = -6.0
#: The fingerprinted component of the unmarked-share mixture has at least this excess over the
#: null rate (green rate; half of it for g-bits; twice it, relative, for gumbel's mean score),
#: so that it cannot collapse onto the null component.
MIN_SEPARATION = 0.05

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
    out = []
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

def _per_response_tokens_to_detect(scheme, table, sel_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokens each response needs to reach p < 1e-6 on its own (inf if never), and each
    response's (total, n) for the mixture fit. Tuples are de-duplicated within responses."""
    idx = np.flatnonzero(sel_mask)
    text = table.text_index[idx]
    first = first_occurrence_mask(_with_text(table.tuple_ids[idx], text))
    idx, text = idx[first], text[first]
    scores = scheme.tuple_scores(table.windows(idx), table.next_tokens(idx)).astype(np.float64)
    n_texts = table.n_texts
    counts = np.bincount(text, minlength=n_texts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    cum = np.cumsum(scores)
    base = np.concatenate(([0.0], cum))[starts][text]
    within = np.arange(idx.size) - starts[text]
    running = cum - base
    log10p = scheme.log10_pvalues(running, within + 1)
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


def _unmarked_share(scheme, totals: np.ndarray, counts: np.ndarray, iters: int = 200) -> float:
    """EM weight of the null component in a two-component mixture of per-response scores."""
    keep = counts > 0
    t, n = totals[keep], counts[keep].astype(np.float64)
    if t.size == 0:
        return math.nan
    if scheme.name == "gumbel":
        def loglik(theta: float) -> np.ndarray:  # sum of n Exp(theta) scores ~ Gamma(n, theta)
            return stats.gamma.logpdf(t, n, scale=theta)
        null_ll = loglik(1.0)
        theta, w0 = max(1.0 + 2 * MIN_SEPARATION, float(t.sum() / n.sum())), 0.5
        for _ in range(iters):
            l1 = loglik(theta)
            r0 = 1.0 / (1.0 + (1 - w0) / w0 * np.exp(np.clip(l1 - null_ll, -700, 700)))
            w0 = float(np.clip(r0.mean(), 1e-6, 1 - 1e-6))
            r1 = 1 - r0
            theta = max(1.0 + 2 * MIN_SEPARATION, float((r1 * t).sum() / max((r1 * n).sum(), 1e-12)))
        return w0
    m = scheme.params.get("layers", 1) if scheme.name == "tournament" else 1
    trials = n * m
    p0 = 0.5 if scheme.name == "tournament" else scheme.params["gamma"]
    null_ll = stats.binom.logpmf(np.rint(t), trials, p0)
    sep = MIN_SEPARATION / 2 if scheme.name == "tournament" else MIN_SEPARATION
    p1, w0 = max(p0 + sep, float(t.sum() / trials.sum())), 0.5
    for _ in range(iters):
        l1 = stats.binom.logpmf(np.rint(t), trials, p1)
        r0 = 1.0 / (1.0 + (1 - w0) / w0 * np.exp(np.clip(l1 - null_ll, -700, 700)))
        w0 = float(np.clip(r0.mean(), 1e-6, 1 - 1e-6))
        r1 = 1 - r0
        p1 = float(np.clip((r1 * t).sum() / max((r1 * trials).sum(), 1e-12), p0 + sep, 1 - 1e-9))
    return w0


def _radioactivity(key: FingerprintKey, tokens: np.ndarray, offsets: np.ndarray, *, rho: float, seed: int,
                   budget: int, clean_corpus: Sequence[str] | None) -> float:
    from .sim.distill import FingerprintedData, corpus_prompts, distill_student
    from .sim.generate import generate
    from .sim.teacher import build_teacher

    teacher = build_teacher(clean_corpus, vocab_size=key.vocab_size) if clean_corpus else build_teacher()
    if teacher.vocab_size != key.vocab_size:
        raise InputError(f"radioactivity proxy: the clean corpus tokenizer has {teacher.vocab_size} ids, the key "
                         f"{key.vocab_size}; pass --no-radioactivity or a matching --clean-corpus")
    responses = [tokens[offsets[i]:offsets[i + 1]] for i in range(offsets.size - 1)]
    data = FingerprintedData([np.zeros(0, np.int64)] * len(responses), responses)
    rng = np.random.default_rng(seed)
    # clean text sized so that the release's responses are a fraction rho of the student's data
    n_clean = int(data.n_tokens * (1 - rho) / rho)
    ends = np.searchsorted(teacher.offsets, n_clean)
    clean_offsets = teacher.offsets[:max(2, ends + 1)]
    clean_tokens = teacher.tokens[:clean_offsets[-1]]
    student, _ = distill_student(clean_tokens, clean_offsets, data, rho, vocab_size=key.vocab_size)
    queries, _ = corpus_prompts(teacher, max(1, budget // 100), length=12, rng=rng)
    answers = generate(student, queries, 100, rng, batch_size=512)
    a_tokens = np.concatenate(answers)
    a_offsets = np.concatenate(([0], np.cumsum([a.size for a in answers])))
    q_tokens = np.concatenate(queries)
    q_offsets = np.concatenate(([0], np.cumsum([q.size for q in queries])))
    scheme = key.scheme_object()
    scored = scheme.score(a_tokens, a_offsets)
    served = WindowFilter.from_tokens(tokens, offsets, scheme.context_width, vocab_size=key.vocab_size)
    sel = select_tuples(scored.table, prompt_tokens=q_tokens, prompt_offsets=q_offsets, window_filter=served)
    return scheme.test(scored.scores[sel.mask]).log10_pvalue


def measure_strength(responses: ExchangeSet, tokenizer, key: FingerprintKey, *, seed: int = 0,
                     radioactivity: bool = True, radioactivity_rho: float = 0.05,
                     radioactivity_budget: int = 50_000, clean_corpus: Sequence[str] | None = None,
                     progress: Callable[[str], None] | None = None) -> StrengthMetrics:
    """Measure every strength metric of a release's responses (deterministic given ``seed``)."""
    say = progress or (lambda _m: None)
    if not responses.exchanges:
        raise InputError("no responses to measure")
    scheme = key.own_scheme_for(tokenizer, "strength")
    say(f"tokenizing {len(responses.exchanges):,} responses")
    tokens, offsets = tokenizer.encode_batch(responses.responses)
    p_tokens, p_offsets = tokenizer.encode_batch(responses.prompts)
    table = tuple_table(tokens, offsets, scheme.context_width, vocab_size=key.vocab_size)
    sel = select_tuples(table, prompt_tokens=p_tokens, prompt_offsets=p_offsets)
    scores = scheme.tuple_scores(table.windows(sel.mask), table.next_tokens(sel.mask))
    test = scheme.test(scores)
    say("per-response detection")
    no_prompt = select_tuples(table, prompt_tokens=p_tokens, prompt_offsets=p_offsets, deduplicate=False)
    need, totals, counts = _per_response_tokens_to_detect(scheme, table, no_prompt.mask)
    finite_share = float(np.isfinite(need).mean())
    p10, med, p90 = (float(np.quantile(need, q, method="nearest")) for q in (0.1, 0.5, 0.9))
    unmarked = _unmarked_share(scheme, totals, counts)
    radio = None
    if radioactivity:
        say(f"radioactivity proxy: trigram student at rho = {radioactivity_rho:.0%}, {radioactivity_budget:,} "
            f"query tokens")
        radio = _radioactivity(key, tokens, offsets, rho=radioactivity_rho, seed=seed,
                               budget=radioactivity_budget, clean_corpus=clean_corpus)
    return StrengthMetrics(scheme=key.scheme, key_id=key.key_id, n_responses=len(responses.exchanges),
                           n_tokens=int(tokens.size), n_scored=int(sel.counts.scored), effect=test.effect.value,
                           effect_ci_low=test.effect.ci_low, effect_ci_high=test.effect.ci_high,
                           log10_pvalue=test.log10_pvalue, tokens_to_detect_p10=p10, tokens_to_detect_median=med,
                           tokens_to_detect_p90=p90, detectable_share=finite_share, unmarked_share=unmarked,
                           radioactivity_log10_pvalue=radio,
                           radioactivity_rho=radioactivity_rho if radioactivity else None, seed=seed)


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.4g}"


def evaluate(metrics: StrengthMetrics, thresholds: Thresholds, *, baseline: dict[str, Any] | None = None,
             tolerances: Tolerances = Tolerances()) -> StrengthResult:
    """Compare metrics with thresholds and (optionally) a baseline's metrics."""
    checks: list[Check] = []

    def add(metric: str, kind: str, value: float | None, limit: float, ok: bool, what: str) -> None:
        shown = "n/a" if value is None else _fmt(value)
        msg = f"{metric} = {shown} {'within' if ok else 'beyond'} {what} {_fmt(limit)}"
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


def render_markdown(result: StrengthResult) -> str:
    m = result.metrics
    lines = [f"## fingerprint strength: {'PASS' if result.passed else 'REGRESSION'}", "",
             f"{m.n_responses:,} responses, {m.n_tokens:,} tokens, {m.n_scored:,} distinct tuples; scheme "
             f"{m.scheme}, key `{m.key_id[:16]}`, seed {m.seed}.", "",
             "| metric | value |", "|---|---|"]
    for name in ("effect", "effect_ci_low", "log10_pvalue", "tokens_to_detect_p10", "tokens_to_detect_median",
                 "tokens_to_detect_p90", "detectable_share", "unmarked_share", "radioactivity_log10_pvalue"):
        lines.append(f"| {name} | {_fmt(getattr(m, name))} |")
    lines += ["", "| check | limit | result |", "|---|---|---|"]
    for c in result.checks:
        lines.append(f"| {c.metric} ({c.kind}) | {_fmt(c.limit)} | {'pass' if c.passed else '**FAIL**'}: {c.message} |")
    return "\n".join(lines) + "\n"


def render_junit(result: StrengthResult) -> str:
    from xml.sax.saxutils import escape, quoteattr

    failures = sum(not c.passed for c in result.checks)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuite name="fingerprint-strength" tests="{len(result.checks)}" failures="{failures}">']
    for c in result.checks:
        name = quoteattr(f"{c.metric} ({c.kind})")
        if c.passed:
            out.append(f'  <testcase classname="fingerprint.strength" name={name}/>')
        else:
            out.append(f'  <testcase classname="fingerprint.strength" name={name}>'
                       f'<failure message={quoteattr(c.message)}>{escape(c.message)}</failure></testcase>')
    out.append("</testsuite>")
    return "\n".join(out) + "\n"

