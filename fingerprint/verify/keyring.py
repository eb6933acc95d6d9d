"""Verify a suspect against a keyring: did it learn from some cohort's outputs, and whose?

On the evidence the single-key pipeline builds (prompt windows excluded, optional window
filter, de-duplicated tuples), every cohort key of the ring scores the same items:

1. **global test** "some cohort's outputs were used": the Šidák p-value of the smallest cohort
   p-value, ``1 - (1 - p_min)^K``. Under H0 (the suspect never learned from the ring) the cohort
   keys are independent PRF keys, so the K p-values are independent and each is exact
   (conservative when discrete): the global p-value is valid, and never above Bonferroni's
   ``K p_min``;
2. **identification**: which cohorts, by Holm (family-wise error, valid under any dependence,
   the default) or Benjamini-Hochberg (false discovery rate; the null cohorts' p-values are
   independent of each other and of the used cohorts', since their keys are); each cohort's
   exact test gives its effect (rate above the null rate) and confidence interval;
3. **decoy cohorts** of the same master that were never served: their randomized p-values must
   look uniform (Kolmogorov-Smirnov), else the verdict is inconclusive.

Scoring is one array call per cohort key over all items (OpenSSL's AES over the tuples already
laid out once for every key; about 4 ms per key per million tuples on one core); the p-values
of all cohorts come from one vectorized tail evaluation.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy import stats

from ..errors import InputError, ParameterError
from ..keyring import Keyring
from ..stats import NullModel, TestResult, benjamini_hochberg, holm, sidak_min
from .decision import verdict_of
from .evidence import Evidence, ItemCounts
from .result import VERDICT_DETECTED, DecoySummary, Sufficiency, VerifyOptions

__all__ = ["CohortResult", "KeyringResult", "verify_keyring", "verify_keyring_tokens", "verify_keyring_exchanges",
           "cohort_totals", "CORRECTIONS"]

Progress = Callable[[str], None]
#: Identification corrections: family-wise error (Holm) or false discovery rate (Benjamini-Hochberg).
CORRECTIONS = ("holm", "bh")
#: Cohort keys scored between two progress messages.
_PROGRESS_EVERY = 2000


@dataclass(frozen=True)
class CohortResult:
    """One cohort's exact test and its corrected p-values.

    ``test``: the cohort key's exact one-sided test on the shared items (statistic, trials, null
    rate, log10 p, effect with its interval). ``holm_log10_pvalue`` / ``bh_log10_pvalue``: the
    Holm (family-wise) and Benjamini-Hochberg (false discovery rate) adjusted log10 p-values over
    all cohorts of the ring. ``flagged``: the adjusted p-value of the run's correction is at most
    alpha.
    """

    cohort: str
    test: TestResult
    holm_log10_pvalue: float
    bh_log10_pvalue: float
    flagged: bool


@dataclass(frozen=True)
class KeyringResult:
    """The outcome of verifying one suspect against a keyring.

    ``ring``: the keyring's public description (no secret). ``counts``: what happened to the
    suspect's tuples (shared by every cohort). ``global_log10_pvalue``: the Šidák test that some
    cohort's outputs were used; ``detected``: it is at most ``log10(alpha)`` and the decoys
    passed. ``cohorts``: every cohort, most significant first. ``flagged``: the cohorts
    identified at ``alpha`` under ``correction``. ``decoys``: the never-served decoy cohorts.
    ``verdict``/``reason``: as for a single key (detected, not detected, insufficient data,
    inconclusive) with the sentence that explains it.
    """

    ring: dict
    mode: str
    n_texts: int
    n_tokens: int
    counts: ItemCounts
    alpha: float
    correction: str
    global_log10_pvalue: float
    detected: bool
    cohorts: tuple[CohortResult, ...]
    flagged: tuple[str, ...]
    decoys: DecoySummary | None
    sufficiency: Sufficiency
    verdict: str
    reason: str
    notes: list[str] = field(default_factory=list)

    @property
    def global_pvalue(self) -> float:
        """The global p-value as a float (0.0 once it underflows)."""
        return float(10.0 ** self.global_log10_pvalue) if self.global_log10_pvalue > -330 else 0.0

    def cohort(self, cohort_id: str) -> CohortResult:
        """The result of one cohort by id."""
        for c in self.cohorts:
            if c.cohort == cohort_id:
                return c
        raise ParameterError(f"no cohort {cohort_id!r} in this result")


def _quiet(_msg: str) -> None:
    return None


def _shared_null(ring: Keyring, ev: Evidence) -> NullModel | None:
    """The null every cohort key shares on ``ev`` (schemes that score every item), else None
    (schemes with a keyed per-item de-duplication, e.g. hf-kgw, need one per key)."""
    probe = ring.decoy_cohort_key(ring.decoy_ids(1, seed=0)[0]).scheme_object()
    if len(ev) and probe.distinct_mask(ev.blocks[:1]) is not None:
        return None
    return probe.null(len(ev), blocks=ev.blocks, weights=ev.weights)


#: Key-item scores above which :func:`cohort_totals` splits the keys over forked processes (below,
#: the fork costs more than it saves).
PARALLEL_MIN_WORK = 200_000_000
#: Cohort keys per task of the process pool (the parent reports progress as tasks finish).
_TASK_KEYS = 500
_JOB: dict = {}


def _plain_totals(ev: Evidence, keys: Sequence) -> np.ndarray:
    """Totals ``(len(keys),)`` of keys whose scheme scores every item, without weights: one
    array call per key over all items."""
    return np.array([key.scheme_object().total_of_blocks(ev.blocks) for key in keys], dtype=np.float64)


def _task_totals(bounds: tuple[int, int]) -> np.ndarray:
    return _plain_totals(_JOB["ev"], _JOB["keys"][bounds[0]:bounds[1]])


def _parallel_totals(ev: Evidence, keys: Sequence, processes: int, say: Progress) -> np.ndarray:
    """:func:`_plain_totals` split over ``processes`` forked workers, which inherit the items and
    the keys (nothing secret or large is pickled: key ranges go out, totals come back)."""
    tasks = [(a, min(len(keys), a + _TASK_KEYS)) for a in range(0, len(keys), _TASK_KEYS)]
    _JOB.update(ev=ev, keys=keys)
    try:
        parts = []
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            for i, part in enumerate(pool.imap(_task_totals, tasks)):
                parts.append(part)
                done = tasks[i][1]
                if done // _PROGRESS_EVERY != tasks[i][0] // _PROGRESS_EVERY or done == len(keys):
                    say(f"scored {done:,} of {len(keys):,} cohort keys ({processes} processes)")
    finally:
        _JOB.clear()
    return np.concatenate(parts)


def cohort_totals(ev: Evidence, keys: Sequence, *, processes: int | None = None, progress: Progress | None = None
                  ) -> tuple[np.ndarray, list[NullModel] | None]:
    """Statistic of each key on the items of ``ev``: totals ``(len(keys),)`` float64, and the
    per-key nulls when the scheme de-duplicates per key (else None: the shared null applies).

    One array call per key over all items, no per-item Python work. ``processes``: forked worker
    processes for schemes that score every item (default: one per core, up to 4, once the work
    passes :data:`PARALLEL_MIN_WORK` key-item scores; 1 = in this process). The totals are the
    same either way."""
    say = progress or _quiet
    if not keys:
        return np.zeros(0), None
    probe = keys[0].scheme_object()
    plain = ev.weights is None and (len(ev) == 0 or probe.distinct_mask(ev.blocks[:1]) is None)
    if plain:
        if processes is None:
            processes = min(os.cpu_count() or 1, 4) if len(keys) * len(ev) >= PARALLEL_MIN_WORK else 1
        if processes > 1 and len(keys) > _TASK_KEYS and "fork" in multiprocessing.get_all_start_methods():
            return _parallel_totals(ev, keys, processes, say), None
        totals = np.empty(len(keys))
        for a in range(0, len(keys), _PROGRESS_EVERY):
            totals[a:a + _PROGRESS_EVERY] = _plain_totals(ev, keys[a:a + _PROGRESS_EVERY])
            if a + _PROGRESS_EVERY < len(keys):
                say(f"scored {a + _PROGRESS_EVERY:,} of {len(keys):,} cohort keys")
        return totals, None
    totals = np.empty(len(keys))
    nulls: list[NullModel] = []
    for i, key in enumerate(keys):
        scheme = key.scheme_object()
        keep = scheme.distinct_mask(ev.blocks) if len(ev) else None
        blocks = ev.blocks if keep is None else ev.blocks[keep]
        weights = ev.weights if (keep is None or ev.weights is None) else ev.weights[keep]
        scores = scheme.scores_of_blocks(blocks).astype(np.float64)
        totals[i] = float((scores if weights is None else scores * weights).sum())
        nulls.append(scheme.null(int(blocks.shape[0]), blocks=blocks, weights=weights))
        if (i + 1) % _PROGRESS_EVERY == 0:
            say(f"scored {i + 1:,} of {len(keys):,} cohort keys")
    return totals, nulls


def _log10_pvalues(totals: np.ndarray, shared: NullModel | None, nulls: list[NullModel] | None) -> np.ndarray:
    if shared is not None and nulls is None:
        return np.minimum(0.0, shared.log10_sf(totals))
    assert nulls is not None
    return np.minimum(0.0, np.array([float(n.log10_sf(np.array([t]))[0]) for n, t in zip(nulls, totals)]))


def verify_keyring(evidence: Evidence, ring: Keyring, *, options: VerifyOptions = VerifyOptions(),
                   correction: str = "holm", notes: Sequence[str] = (), input_problem: str | None = None,
                   progress: Progress | None = None) -> KeyringResult:
    """Test ``evidence`` (built for the ring's context width) against every cohort of ``ring``.

    ``options``: ``alpha`` (family-wise for the global test and for Holm; the false discovery
    rate for ``correction="bh"``), ``n_decoys`` decoy cohorts with ``decoy_seed``,
    ``confidence_level`` of each cohort's effect interval, ``ks_threshold``.
    """
    options.validate()
    if correction not in CORRECTIONS:
        raise ParameterError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    if options.optional_stopping:
        raise ParameterError("keyring verification gives fixed-n p-values; optional stopping is not supported")
    say = progress or _quiet
    width = ring.cohort_key(ring.cohorts[0]).scheme_object().context_width
    if evidence.context_width != width:
        raise ParameterError(f"evidence has context width {evidence.context_width}, the keyring's scheme uses {width}")
    if evidence.mode != options.mode:
        raise ParameterError(f"evidence of mode {evidence.mode!r} given for options.mode {options.mode!r}")
    if evidence.vocab_size > ring.vocab_size:
        raise InputError(f"keyring {ring.ring_id} has vocab_size {ring.vocab_size}, smaller than the evidence's "
                         f"{evidence.vocab_size}: wrong keyring or tokenizer")
    k = ring.n_cohorts
    say(f"scoring {len(evidence):,} items with {k:,} cohort keys of keyring {ring.ring_id[:12]}")
    shared = _shared_null(ring, evidence)
    totals, nulls = cohort_totals(evidence, ring.cohort_keys(), progress=say)
    log10 = _log10_pvalues(totals, shared, nulls)
    holm_adj, bh_adj = holm(log10), benjamini_hochberg(log10)
    chosen = holm_adj if correction == "holm" else bh_adj
    level = math.log10(options.alpha)
    global_log10 = sidak_min(log10)

    order = np.argsort(log10, kind="stable")
    if nulls is None:
        assert shared is not None
        tests = shared.tests(totals, confidence_level=options.confidence_level)
    else:
        tests = [nl.test(float(t), confidence_level=options.confidence_level) for nl, t in zip(nulls, totals)]
    results = []
    for i in order:
        test = tests[i]
        results.append(CohortResult(cohort=ring.cohorts[i], test=test, holm_log10_pvalue=float(holm_adj[i]),
                                    bh_log10_pvalue=float(bh_adj[i]), flagged=bool(chosen[i] <= level)))

    decoys = _decoy_cohorts(evidence, ring, options, float(log10.min()), say)
    reference = shared if shared is not None else (nulls[0] if nulls else None)
    assert reference is not None
    effect_max = options.effect_prior_max if options.effect_prior_max is not None else reference.effect_prior_default
    level_one = level - math.log10(k)  # the level one cohort is tested at by the global test (Bonferroni)
    mde = reference.min_detectable_effect(level_one)
    sufficiency = Sufficiency(min_detectable_effect=mde, target_effect=effect_max,
                              items_needed=reference.items_needed(effect_max, level_one),
                              sufficient=mde <= effect_max)
    verdict, reason = verdict_of(global_log10, options.alpha, decoys, sufficiency, n_items=len(evidence),
                                 item_name="distinct tuples", input_problem=input_problem)
    flagged = tuple(r.cohort for r in results if r.flagged) if verdict == VERDICT_DETECTED else ()
    if verdict == VERDICT_DETECTED:
        reason += (f"; {len(flagged)} of {k:,} cohort(s) identified at "
                   f"{'family-wise error (Holm)' if correction == 'holm' else 'false discovery rate (BH)'} "
                   f"{options.alpha:g}")
    return KeyringResult(ring=ring.to_public_dict(), mode=options.mode, n_texts=evidence.n_texts,
                         n_tokens=evidence.n_tokens, counts=evidence.counts, alpha=options.alpha,
                         correction=correction, global_log10_pvalue=global_log10,
                         detected=verdict == VERDICT_DETECTED, cohorts=tuple(results), flagged=flagged,
                         decoys=decoys, sufficiency=sufficiency, verdict=verdict, reason=reason, notes=list(notes))


def _decoy_cohorts(ev: Evidence, ring: Keyring, options: VerifyOptions, best_log10: float,
                   say: Progress) -> DecoySummary | None:
    n = options.n_decoys
    if n == 0:
        return None
    say(f"decoys: {n} never-served cohorts of the same master")
    ids = ring.decoy_ids(n, seed=options.decoy_seed)
    keys = [ring.decoy_cohort_key(d) for d in ids]
    totals, nulls = cohort_totals(ev, keys)
    shared = _shared_null(ring, ev)
    log10 = _log10_pvalues(totals, shared, nulls)
    u = np.random.default_rng([options.decoy_seed, 0x6B74]).random(n)
    null_list = [shared] * n if nulls is None else nulls
    randomized = np.array([float(nl.randomized_pvalues(np.array([t]), u[i:i + 1])[0])  # type: ignore[union-attr]
                           for i, (nl, t) in enumerate(zip(null_list, totals))])
    effects = np.array([(t / nl.n_trials - nl.null_rate) if nl.n_trials else math.nan  # type: ignore[union-attr]
                        for nl, t in zip(null_list, totals)])
    ks = float(stats.kstest(randomized, "uniform").pvalue) if len(ev) else 1.0
    finite = effects[np.isfinite(effects)]
    return DecoySummary(k=n, seed=options.decoy_seed,
                        empirical_pvalue=(1 + int((log10 <= best_log10).sum())) / (n + 1), ks_pvalue=ks,
                        passed=ks >= options.ks_threshold, log10_pvalue_mean=float(log10.mean()),
                        log10_pvalue_sd=float(log10.std(ddof=1)) if n > 1 else 0.0,
                        effect_mean=float(finite.mean()) if finite.size else math.nan,
                        effect_sd=float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
                        min_log10_pvalue=float(log10.min()), log10_pvalues=np.ascontiguousarray(log10))


def verify_keyring_tokens(tokens: np.ndarray | Sequence[np.ndarray], offsets: np.ndarray | None = None, *,
                          ring: Keyring, prompt_tokens: np.ndarray | Sequence[np.ndarray] | None = None,
                          prompt_offsets: np.ndarray | None = None,
                          served_tokens: np.ndarray | Sequence[np.ndarray] | None = None,
                          served_offsets: np.ndarray | None = None, window_filters: dict | None = None,
                          options: VerifyOptions = VerifyOptions(), correction: str = "holm",
                          notes: Sequence[str] = (), input_problem: str | None = None,
                          progress: Progress | None = None) -> KeyringResult:
    """:func:`verify_keyring` on a suspect's token ids (text mode), laid out as for
    :func:`fingerprint.verify` (flat ids with offsets, or a list of id arrays); prompts and served
    outputs likewise."""
    from .pipeline import offsets_of, text_evidence_by_width

    if options.mode != "text":
        raise ParameterError(f"keyring verification reads texts (mode 'text'), not mode {options.mode!r}")
    if offsets is None:
        tokens, offsets = offsets_of(list(tokens))
    if prompt_tokens is not None and prompt_offsets is None:
        prompt_tokens, prompt_offsets = offsets_of(list(prompt_tokens), "prompt")
    if served_tokens is not None and served_offsets is None:
        served_tokens, served_offsets = offsets_of(list(served_tokens), "served text")
    if served_tokens is not None and window_filters is not None:
        raise ParameterError("give served_tokens or window_filters, not both")
    width = ring.cohort_key(ring.cohorts[0]).scheme_object().context_width
    by_width, _ = text_evidence_by_width(
        np.asarray(tokens), np.asarray(offsets), widths=[width], vocab_size=ring.vocab_size,
        prompt_tokens=None if prompt_tokens is None else np.asarray(prompt_tokens), prompt_offsets=prompt_offsets,
        served_tokens=None if served_tokens is None else np.asarray(served_tokens), served_offsets=served_offsets,
        window_filters=window_filters, progress=progress)
    return verify_keyring(by_width[width], ring, options=options, correction=correction, notes=notes,
                          input_problem=input_problem, progress=progress)


def verify_keyring_exchanges(exchanges, tokenizer, ring: Keyring, *, options: VerifyOptions = VerifyOptions(),
                             served=None, window_filters: dict | None = None, correction: str = "holm",
                             progress: Progress | None = None) -> KeyringResult:
    """:func:`verify_keyring` on suspect exchanges (:func:`fingerprint.read_exchanges`), tokenized
    with the owner's ``tokenizer``; ``served`` (an exchange set of the owner's outputs) or
    ``window_filters`` restrict scoring to served windows."""
    from .decision import tokenizer_fit_problem

    if not exchanges.exchanges:
        raise InputError("no suspect responses to verify (all inputs empty or skipped)")
    if ring.vocab_size < tokenizer.vocab_size:
        raise InputError(f"keyring {ring.ring_id} has vocab_size {ring.vocab_size}, smaller than the tokenizer's "
                         f"{tokenizer.vocab_size} ({tokenizer.source}): wrong keyring or tokenizer")
    tokens, offsets = tokenizer.encode_batch(exchanges.responses)
    p_tokens, p_offsets = tokenizer.encode_batch(exchanges.prompts)
    s_tokens = s_offsets = None
    if served is not None:
        if not served.exchanges:
            raise InputError("the served-outputs input holds no responses")
        s_tokens, s_offsets = tokenizer.encode_batch(served.responses)
    problem = tokenizer_fit_problem(sum(len(r) for r in exchanges.responses), int(tokens.size))
    return verify_keyring_tokens(tokens, offsets, ring=ring, prompt_tokens=p_tokens, prompt_offsets=p_offsets,
                                 served_tokens=s_tokens, served_offsets=s_offsets, window_filters=window_filters,
                                 options=options, correction=correction, input_problem=problem, progress=progress)
