"""The verify pipeline: suspect texts -> tokens -> tuples -> scores -> exact test -> result.

For every key:

1. the responses (and prompts) are tokenized with the owner's tokenizer into flat arrays;
2. tuples are selected once per context width, independently of any key: prompt windows
   excluded, optional window filter from the owner's served outputs, de-duplicated across
   the whole corpus (first occurrence);
3. the key scores the selected tuples and one exact test runs over the whole corpus;
4. ``n_decoys`` decoy keys go through the same pipeline (an empirical null): their p-values
   must look uniform (Kolmogorov-Smirnov on randomized p-values), else the verdict is
   ``inconclusive``;
5. the Bayes factor of H1 (effect ~ Uniform(0, effect_max)) against H0 and the posterior
   for a stated prior probability; the trajectory of the p-value against tokens read, with
   the decoys' band; per-response scores for inspection.

Several keys on one suspect are Holm-corrected. Nothing here prints: progress goes to an
optional callback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
from scipy import stats

from .corpus import ExchangeSet
from .errors import InputError, ParameterError
from .keys import FingerprintKey
from .prf import encode_tuples
from .stats import TestResult, holm, posterior_probability
from .windows import DropCounts, WindowFilter, select_tuples, tuple_table

__all__ = ["VerifyOptions", "DecoySummary", "TrajectoryPoint", "BayesSummary", "ResponseScores",
           "KeyResult", "VerifyResult", "verify_exchanges", "Progress"]

Progress = Callable[[str], None]

VERDICT_DETECTED = "detected"
VERDICT_NOT_DETECTED = "not detected"
VERDICT_INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class VerifyOptions:
    """Settings of a verification. Defaults are the documented ones.

    Attributes
    ----------
    alpha:
        Significance level of the verdict (after Holm when several keys are tested).
    n_decoys, decoy_seed:
        Decoy keys for the empirical null (reproducible from the seed).
    prior_probability:
        Prior probability that the suspect was trained on the owner's outputs.
    effect_prior_max:
        Upper end of the uniform prior over the effect under H1; ``None`` takes the scheme's
        default (green-rate / g-bit-rate excess 0.1, gumbel mean-score excess 0.5).
    ks_threshold:
        The decoys fail (verdict ``inconclusive``) when their KS p-value is below this.
    trajectory_points:
        Number of points of the p-value trajectory.
    confidence_level:
        Of the effect's interval.
    """

    alpha: float = 1e-6
    n_decoys: int = 100
    decoy_seed: int = 0
    prior_probability: float = 0.5
    effect_prior_max: float | None = None
    ks_threshold: float = 0.001
    trajectory_points: int = 40
    confidence_level: float = 0.95

    def validate(self) -> None:
        if not 0 < self.alpha < 1:
            raise ParameterError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if self.n_decoys < 0:
            raise ParameterError(f"number of decoys must be >= 0, got {self.n_decoys!r}")
        if not 0 < self.prior_probability < 1:
            raise ParameterError(f"prior probability must be in (0, 1), got {self.prior_probability!r}")
        if self.effect_prior_max is not None and not self.effect_prior_max > 0:
            raise ParameterError(f"effect prior maximum must be > 0, got {self.effect_prior_max!r}")
        if not 0 < self.ks_threshold < 1:
            raise ParameterError(f"KS threshold must be in (0, 1), got {self.ks_threshold!r}")
        if self.trajectory_points < 2:
            raise ParameterError(f"trajectory points must be >= 2, got {self.trajectory_points!r}")


@dataclass(frozen=True)
class DecoySummary:
    """The empirical null from decoy keys.

    ``empirical_pvalue`` = (1 + decoys at least as significant as the key) / (k + 1);
    ``ks_pvalue`` tests the decoys' randomized p-values against U(0, 1); ``passed`` is
    ``ks_pvalue >= threshold``. Means and spreads are over decoys.
    """

    k: int
    seed: int
    empirical_pvalue: float
    ks_pvalue: float
    passed: bool
    log10_pvalue_mean: float
    log10_pvalue_sd: float
    effect_mean: float
    effect_sd: float
    min_log10_pvalue: float


@dataclass(frozen=True)
class TrajectoryPoint:
    """The evidence after reading the first ``tokens_read`` suspect tokens.

    ``decoy_low``/``decoy_median``/``decoy_high`` are the 5%, 50% and 95% quantiles of the
    decoys' log10 p-values at the same point (NaN without decoys).
    """

    tokens_read: int
    n_scored: int
    log10_pvalue: float
    decoy_low: float
    decoy_median: float
    decoy_high: float


@dataclass(frozen=True)
class BayesSummary:
    """Bayes factor of H1 (effect ~ Uniform(0, effect_max)) vs H0, and the posterior."""

    log10_bayes_factor: float
    effect_prior: str
    effect_prior_max: float
    prior_probability: float
    posterior: float


@dataclass(frozen=True)
class ResponseScores:
    """Per-response scores, arrays of shape ``(T,)`` in input order (for inspection only:
    the test is over the whole corpus)."""

    ids: list[str]
    n_tokens: np.ndarray
    n_scored: np.ndarray
    statistic: np.ndarray
    log10_pvalue: np.ndarray


@dataclass(frozen=True)
class KeyResult:
    """Everything measured for one key on one suspect corpus."""

    key: dict
    test: TestResult
    holm_log10_pvalue: float
    counts: DropCounts
    decoys: DecoySummary | None
    bayes: BayesSummary
    trajectory: list[TrajectoryPoint]
    responses: ResponseScores
    verdict: str


@dataclass
class VerifyResult:
    """A whole verification: one :class:`KeyResult` per key, and what it ran on."""

    results: list[KeyResult]
    options: VerifyOptions
    n_texts: int
    n_tokens: int
    tokenizer_vocab_size: int
    window_filter_size: int | None
    holm_applied: bool
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        verdicts = [r.verdict for r in self.results]
        if VERDICT_DETECTED in verdicts:
            return VERDICT_DETECTED
        if VERDICT_INCONCLUSIVE in verdicts:
            return VERDICT_INCONCLUSIVE
        return VERDICT_NOT_DETECTED


def _trajectory_marks(n_tokens: int, points: int) -> np.ndarray:
    if n_tokens <= 0:
        return np.zeros(0, dtype=np.int64)
    start = min(100, n_tokens)
    marks = np.unique(np.geomspace(start, n_tokens, points).round().astype(np.int64))
    marks[-1] = n_tokens
    return marks


def verify_exchanges(exchanges: ExchangeSet, tokenizer, keys: Sequence[FingerprintKey], *,
                     options: VerifyOptions = VerifyOptions(),
                     served: ExchangeSet | None = None,
                     progress: Progress | None = None) -> VerifyResult:
    """Test the suspect exchanges for each key's fingerprint.

    ``tokenizer`` is the owner's (anything with ``vocab_size`` and ``encode_batch``);
    ``served`` (optional) holds the owner's served outputs, whose windows restrict scoring.
    """
    options.validate()
    say = progress or (lambda _msg: None)
    if not keys:
        raise ParameterError("at least one key is needed")
    if not exchanges.exchanges:
        raise InputError("no suspect responses to verify (all inputs empty or skipped)")
    notes: list[str] = []
    vocab = tokenizer.vocab_size
    for key in keys:
        if key.vocab_size < vocab:
            raise InputError(f"key {key.key_id} has vocab_size {key.vocab_size}, smaller than the "
                             f"tokenizer's {vocab} ({tokenizer.source}): wrong key or tokenizer")
        if key.vocab_size > vocab:
            notes.append(f"key {key.key_id} vocab_size {key.vocab_size} exceeds the tokenizer's {vocab} "
                         f"(padded logits): ids {vocab}..{key.vocab_size - 1} never occur in text")

    say(f"tokenizing {len(exchanges.exchanges):,} responses and prompts")
    tokens, offsets = tokenizer.encode_batch(exchanges.responses)
    p_tokens, p_offsets = tokenizer.encode_batch(exchanges.prompts)
    ids = [e.id for e in exchanges.exchanges]
    served_tokens = None
    if served is not None:
        if not served.exchanges:
            raise InputError("the served-outputs input holds no responses")
        served_tokens = tokenizer.encode_batch(served.responses)

    selections: dict[int, tuple] = {}
    filter_size: int | None = None
    results_raw = []
    for key in keys:
        scheme = key.scheme_object()
        h = scheme.context_width
        if h not in selections:
            say(f"selecting tuples (h={h}): prompt exclusion, filter, de-duplication")
            table = tuple_table(tokens, offsets, h, vocab_size=key.vocab_size)
            wf = None
            if served_tokens is not None:
                wf = WindowFilter.from_tokens(*served_tokens, h, vocab_size=key.vocab_size)
                filter_size = len(wf)
            sel = select_tuples(table, prompt_tokens=p_tokens, prompt_offsets=p_offsets, window_filter=wf)
            blocks = encode_tuples(table.windows(sel.mask), table.next_tokens(sel.mask))
            selections[h] = (table, sel, blocks)
        table, sel, blocks = selections[h]
        say(f"scoring {sel.counts.scored:,} tuples with key {key.key_id[:12]} ({key.scheme})")
        results_raw.append(_score_key(key, scheme, table, sel, blocks, ids, options, say))

    log10_ps = np.array([r["test"].log10_pvalue for r in results_raw])
    holm_applied = len(keys) > 1
    adjusted = holm(log10_ps) if holm_applied else log10_ps
    log10_alpha = math.log10(options.alpha)
    results = []
    for raw, adj in zip(results_raw, adjusted):
        decoys = raw["decoys"]
        if decoys is not None and not decoys.passed:
            verdict = VERDICT_INCONCLUSIVE
            notes.append(f"key {raw['key']['key_id']}: decoy p-values are not uniform (KS p = "
                         f"{decoys.ks_pvalue:.2g}); the theoretical null may not hold for this input "
                         f"(heavy repetition, tokenizer mismatch?)")
        elif adj <= log10_alpha:
            verdict = VERDICT_DETECTED
        else:
            verdict = VERDICT_NOT_DETECTED
        results.append(KeyResult(key=raw["key"], test=raw["test"], holm_log10_pvalue=float(adj),
                                 counts=raw["counts"], decoys=decoys, bayes=raw["bayes"],
                                 trajectory=raw["trajectory"], responses=raw["responses"], verdict=verdict))
    return VerifyResult(results=results, options=options, n_texts=len(ids), n_tokens=int(tokens.size),
                        tokenizer_vocab_size=vocab, window_filter_size=filter_size,
                        holm_applied=holm_applied, notes=notes)


def _key_scores(scheme, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores of the selected tuples under one key, and the key's own extra de-duplication
    mask (``None`` when the scheme needs none)."""
    scores = scheme.scores_of_blocks(blocks)
    keep = scheme.distinct_mask(blocks)
    return (scores, None) if keep is None else (scores[keep], keep)


def _score_key(key: FingerprintKey, scheme, table, sel, blocks: np.ndarray, ids: list[str],
               options: VerifyOptions, say: Progress) -> dict:
    scores, keep = _key_scores(scheme, blocks)
    n = int(scores.size)
    counts = sel.counts
    if keep is not None and n < counts.scored:
        counts = replace(counts, duplicate_tuple=counts.duplicate_tuple + counts.scored - n, scored=n)
    by_tuples = scheme.null_depends_on_tuples
    kept_blocks = blocks if keep is None else blocks[keep]
    if by_tuples:  # the exact null depends on which tuples were scored (shared by the decoys)
        null = scheme.set_null(kept_blocks)
        test = null.test(float(scores.sum(dtype=np.float64)), confidence_level=options.confidence_level)
    else:
        test = scheme.test_totals(float(scores.sum(dtype=np.float64)), n, confidence_level=options.confidence_level)

    effect_max = options.effect_prior_max if options.effect_prior_max is not None else scheme.effect_prior_default
    log10_bf = scheme.log10_bayes_factor(test.statistic, n, effect_max)
    bayes = BayesSummary(log10_bayes_factor=log10_bf,
                         effect_prior=f"uniform(0, {effect_max:g}) on the excess over the null rate",
                         effect_prior_max=effect_max, prior_probability=options.prior_probability,
                         posterior=posterior_probability(log10_bf, options.prior_probability))

    selected_pos = table.positions[sel.mask]
    marks = _trajectory_marks(table.n_tokens, options.trajectory_points)

    def scored_before_marks(kept: np.ndarray | None) -> np.ndarray:
        return np.searchsorted(selected_pos if kept is None else selected_pos[kept], marks, side="left")

    n_at = scored_before_marks(keep)
    nulls_at = None
    if by_tuples:
        say(f"exact nulls at {marks.size} trajectory points")
        nulls_at = [scheme.set_null(kept_blocks[:m]) for m in n_at]

    def trajectory_of(s: np.ndarray, kept: np.ndarray | None) -> np.ndarray:
        at = n_at if kept is keep else scored_before_marks(kept)
        cum = np.concatenate(([0.0], np.cumsum(s, dtype=np.float64)))
        if nulls_at is not None:
            return np.array([float(nl.log10_sf(cum[m:m + 1])[0]) for nl, m in zip(nulls_at, at)])
        return scheme.log10_pvalues(cum[at], at)

    traj_main = trajectory_of(scores, keep)

    decoys = None
    decoy_traj = None
    if options.n_decoys > 0:
        say(f"decoys: {options.n_decoys} keys through the same pipeline")
        k = options.n_decoys
        totals = np.empty(k)
        sizes = np.empty(k, dtype=np.int64)
        decoy_traj = np.empty((k, marks.size))
        for i, dkey in enumerate(key.decoys(k, seed=options.decoy_seed)):
            dscores, dkeep = _key_scores(dkey.scheme_object(), blocks)
            totals[i] = float(dscores.sum(dtype=np.float64))
            sizes[i] = dscores.size
            decoy_traj[i] = trajectory_of(dscores, dkeep)
            if (i + 1) % 25 == 0 and i + 1 < k:
                say(f"decoys: {i + 1}/{k}")
        u = np.random.default_rng([options.decoy_seed, 0x6B73]).random(k)
        if by_tuples:
            d_log10 = null.log10_sf(totals)
            randomized = null.randomized(totals, u)
        else:
            d_log10 = scheme.log10_pvalues(totals, sizes)
            randomized = scheme.randomized_pvalues(totals, sizes, u)
        ks = float(stats.kstest(randomized, "uniform").pvalue) if n else 1.0
        trials_per_tuple = test.n / n if n else 1.0  # e.g. tournament layers, SynthID depth
        d_effect = (totals / np.maximum(sizes * trials_per_tuple, 1) - test.null_rate if test.n
                    else np.full(k, math.nan))
        empirical = (1 + int((d_log10 <= test.log10_pvalue).sum())) / (k + 1)
        decoys = DecoySummary(k=k, seed=options.decoy_seed, empirical_pvalue=empirical, ks_pvalue=ks,
                              passed=ks >= options.ks_threshold,
                              log10_pvalue_mean=float(d_log10.mean()),
                              log10_pvalue_sd=float(d_log10.std(ddof=1)) if k > 1 else 0.0,
                              effect_mean=float(np.mean(d_effect)),
                              effect_sd=float(np.std(d_effect, ddof=1)) if k > 1 else 0.0,
                              min_log10_pvalue=float(d_log10.min()))

    trajectory = []
    for j, mark in enumerate(marks):
        if decoy_traj is not None:
            lo, med, hi = np.quantile(decoy_traj[:, j], [0.05, 0.5, 0.95])
        else:
            lo = med = hi = math.nan
        trajectory.append(TrajectoryPoint(int(mark), int(n_at[j]), float(traj_main[j]), float(lo),
                                          float(med), float(hi)))

    text_idx = table.text_index[sel.mask] if keep is None else table.text_index[sel.mask][keep]
    n_texts = table.n_texts
    per_n = np.bincount(text_idx, minlength=n_texts)
    per_stat = np.bincount(text_idx, weights=scores, minlength=n_texts)
    if by_tuples:
        order = np.argsort(text_idx, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(per_n)))
        per_log10 = np.array([float(scheme.set_null(kept_blocks[order[bounds[i]:bounds[i + 1]]])
                                    .log10_sf(per_stat[i:i + 1])[0]) for i in range(n_texts)])
    else:
        per_log10 = scheme.log10_pvalues(per_stat, per_n)
    responses = ResponseScores(ids=ids, n_tokens=np.diff(table.offsets), n_scored=per_n,
                               statistic=per_stat, log10_pvalue=per_log10)
    return {"key": key.to_public_dict(), "test": test, "counts": counts, "bayes": bayes,
            "decoys": decoys, "trajectory": trajectory, "responses": responses}
