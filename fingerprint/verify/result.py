"""What a verification returns: options in, one :class:`KeyResult` per key out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..stats import TestResult
from .evidence import MODES, ItemCounts

__all__ = ["VerifyOptions", "DecoySummary", "TrajectoryPoint", "BayesSummary", "ResponseScores", "Sufficiency",
           "KeyResult", "VerifyResult", "VERDICT_DETECTED", "VERDICT_NOT_DETECTED", "VERDICT_INCONCLUSIVE",
           "VERDICT_INSUFFICIENT", "VERDICTS"]

VERDICT_DETECTED = "detected"
VERDICT_NOT_DETECTED = "not detected"
VERDICT_INCONCLUSIVE = "inconclusive"
VERDICT_INSUFFICIENT = "insufficient data"
#: In order of precedence when several keys are combined.
VERDICTS = (VERDICT_DETECTED, VERDICT_INCONCLUSIVE, VERDICT_INSUFFICIENT, VERDICT_NOT_DETECTED)


@dataclass(frozen=True)
class VerifyOptions:
    """Settings of a verification. Defaults are the documented ones.

    Attributes
    ----------
    mode:
        ``"text"`` (the suspect's sampled tokens), ``"logprobs"`` (its top-k logprobs) or
        ``"reading"`` (its predictions on fed texts).
    alpha:
        Significance level of the verdict (after Holm when several keys are tested).
    n_decoys, decoy_seed:
        Decoy keys for the empirical null (reproducible from the seed).
    prior_probability:
        Prior probability that the suspect was trained on the owner's outputs.
    effect_prior_max:
        Upper end of the uniform prior over the effect under H1; ``None`` takes the null's
        default (green-rate / g-bit-rate excess 0.1, gumbel mean-score excess 0.5). It is also
        the effect the data must be able to detect for a verdict other than ``insufficient data``.
    ks_threshold:
        The decoys fail (verdict ``inconclusive``) when their KS p-value is below this.
    trajectory_points:
        Number of points of the p-value trajectory.
    confidence_level:
        Of the effect's interval.
    fed_texts_clean:
        Reading mode: the fed texts were not produced with the key (exact null, pairs seen in
        them are scored); otherwise such pairs are dropped.
    optional_stopping:
        The evidence was gathered with a data-dependent stopping rule (e.g. ``collect
        --until-detected``): the verdict then uses the anytime-valid p-value, the only one valid
        under optional stopping.
    """

    mode: str = "text"
    alpha: float = 1e-6
    n_decoys: int = 100
    decoy_seed: int = 0
    prior_probability: float = 0.5
    effect_prior_max: float | None = None
    ks_threshold: float = 0.001
    trajectory_points: int = 40
    confidence_level: float = 0.95
    fed_texts_clean: bool = False
    optional_stopping: bool = False

    def validate(self) -> None:
        """Raise :class:`ParameterError` naming the first invalid setting."""
        if self.mode not in MODES:
            raise ParameterError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < 1):
            raise ParameterError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if isinstance(self.n_decoys, bool) or not isinstance(self.n_decoys, (int, np.integer)) or self.n_decoys < 0:
            raise ParameterError(f"number of decoys must be an integer >= 0, got {self.n_decoys!r}")
        if self.n_decoys > 100_000:
            raise ParameterError(f"number of decoys must be at most 100000, got {self.n_decoys!r}")
        if isinstance(self.decoy_seed, bool) or not isinstance(self.decoy_seed, int) or self.decoy_seed < 0:
            raise ParameterError(f"decoy seed must be an integer >= 0, got {self.decoy_seed!r}")
        if not (isinstance(self.prior_probability, (int, float)) and 0 < self.prior_probability < 1):
            raise ParameterError(f"prior probability must be in (0, 1), got {self.prior_probability!r}")
        if self.effect_prior_max is not None and not (isinstance(self.effect_prior_max, (int, float))
                                                      and 0 < self.effect_prior_max < math.inf):
            raise ParameterError(f"effect prior maximum must be a finite number > 0, got {self.effect_prior_max!r}")
        if not (isinstance(self.ks_threshold, (int, float)) and 0 < self.ks_threshold < 1):
            raise ParameterError(f"KS threshold must be in (0, 1), got {self.ks_threshold!r}")
        if (isinstance(self.trajectory_points, bool) or not isinstance(self.trajectory_points, (int, np.integer))
                or self.trajectory_points < 2):
            raise ParameterError(f"trajectory points must be an integer >= 2, got {self.trajectory_points!r}")
        if not (isinstance(self.confidence_level, (int, float)) and 0 < self.confidence_level < 1):
            raise ParameterError(f"confidence level must be in (0, 1), got {self.confidence_level!r}")


@dataclass(frozen=True)
class DecoySummary:
    """The empirical null from decoy keys.

    ``empirical_pvalue`` = (1 + decoys at least as significant as the key) / (k + 1);
    ``ks_pvalue`` tests the decoys' randomized p-values against U(0, 1); ``passed`` is
    ``ks_pvalue >= threshold``. Means and spreads are over decoys; ``log10_pvalues`` ``(k,)``
    holds every decoy's log10 p-value (in memory only; reports keep the summary).
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
    log10_pvalues: np.ndarray = field(default_factory=lambda: np.zeros(0), compare=False, repr=False)


@dataclass(frozen=True)
class TrajectoryPoint:
    """The evidence after reading the first ``tokens_read`` suspect tokens.

    ``decoy_low``/``decoy_median``/``decoy_high`` are the 5%, 50% and 95% quantiles of the
    decoys' log10 p-values at the same point (NaN without decoys); ``anytime_log10_pvalue`` is the
    anytime-valid p-value by then (NaN when the statistic has none).
    """

    tokens_read: int
    n_scored: int
    log10_pvalue: float
    decoy_low: float
    decoy_median: float
    decoy_high: float
    anytime_log10_pvalue: float = math.nan


@dataclass(frozen=True)
class BayesSummary:
    """Bayes factor of H1 (effect ~ Uniform(0, effect_max)) vs H0, and the posterior."""

    log10_bayes_factor: float
    effect_prior: str
    effect_prior_max: float
    prior_probability: float
    posterior: float


@dataclass(frozen=True)
class Sufficiency:
    """Whether the data could have detected the effect the verdict is about.

    ``min_detectable_effect``: the smallest effect (rate per trial above the null rate) whose
    expected statistic reaches the alpha the key is tested at (``inf`` when no statistic could);
    ``target_effect``: the effect the data must be able to detect (the H1 prior's maximum);
    ``items_needed``: about how many scored items would detect ``target_effect``;
    ``sufficient``: ``min_detectable_effect <= target_effect``.
    """

    min_detectable_effect: float
    target_effect: float
    items_needed: float
    sufficient: bool


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
    """Everything measured for one key on one suspect corpus.

    ``test`` is the exact test over the whole corpus; ``holm_log10_pvalue`` the same after Holm
    over the keys of the run (equal to it for one key) of the p-value the verdict uses;
    ``anytime_log10_pvalue`` the anytime-valid p-value (``None`` when the statistic has no
    e-process); ``valid_pvalue`` which p-value is valid for how the evidence was gathered
    (``"fixed-n"`` or ``"anytime"``); ``counts`` what each selection rule
    dropped; ``decoys`` the null control (``None`` without decoys); ``verdict`` one of
    :data:`VERDICTS`; ``reason`` a sentence saying why.
    """

    key: dict[str, Any]
    mode: str
    test: TestResult
    holm_log10_pvalue: float
    anytime_log10_pvalue: float | None
    valid_pvalue: str
    counts: ItemCounts
    decoys: DecoySummary | None
    bayes: BayesSummary
    sufficiency: Sufficiency
    trajectory: list[TrajectoryPoint]
    responses: ResponseScores
    verdict: str
    reason: str


@dataclass
class VerifyResult:
    """A whole verification: one :class:`KeyResult` per key, and what it ran on."""

    results: list[KeyResult]
    options: VerifyOptions
    n_texts: int
    n_tokens: int
    tokenizer_vocab_size: int | None
    window_filter_size: int | None
    holm_applied: bool
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """The most serious verdict over the keys (detected > inconclusive > insufficient data >
        not detected)."""
        verdicts = {r.verdict for r in self.results}
        return next(v for v in VERDICTS if v in verdicts)
