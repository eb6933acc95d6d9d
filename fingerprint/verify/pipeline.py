"""The verify pipeline, the one every caller uses: evidence -> scores -> null -> test -> verdict.

For every key:

1. the evidence for the key's context width (distinct surviving items: prompt windows excluded,
   optional window filter, de-duplicated across the whole corpus; see :mod:`.evidence`) is built
   once and shared by all keys of that width;
2. the key scores the items (the scheme's own extra de-duplication applied, e.g. hf-kgw's
   (seed, token)), and the scheme names the exact null of the statistic; one exact test runs
   over the whole corpus;
3. ``n_decoys`` decoy keys go through the same steps (an empirical null): their randomized
   p-values must look uniform (Kolmogorov-Smirnov), else the verdict is ``inconclusive``;
4. the Bayes factor and posterior, the minimum detectable effect (a verdict on too little data
   is ``insufficient data``, never a bare ``not detected``), the trajectory of the p-value
   against tokens read with the decoys' band, and per-response scores;
5. several keys on one suspect are Holm-corrected.

Nothing here prints: progress goes to an optional callback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats

from ..corpus import ExchangeSet
from ..errors import InputError, ParameterError, TokenError
from ..keys import FingerprintKey
from ..schemes import Scheme
from ..stats import NullModel, TestResult, posterior_probability
from ..stats.sequential import anytime_log10_pvalues
from ..windows import WindowFilter
from .decision import adjust, mde_log10_alpha, tokenizer_fit_problem, verdict_of
from .evidence import Evidence, ItemCounts, text_evidence
from .result import (BayesSummary, DecoySummary, KeyResult, ResponseScores, Sufficiency, TrajectoryPoint,
                     VerifyOptions, VerifyResult)

__all__ = ["verify", "verify_evidence", "verify_exchanges", "key_vocab_notes", "text_evidence_by_width", "tokenizer_fit_problem", "decoy_rows", "decoy_segment_sums", "TaskRunner", "Progress",
           "ScoreSums", "score_sums", "sums_are_exact", "verify_sums", "eprocess_grid", "trajectory_marks_of"]

Progress = Callable[[str], None]

#: What the items of each mode are called in sentences.
_ITEM_NAME = {"text": "distinct tuples", "logprobs": "scored candidates", "reading": "distinct pairs"}


def _quiet(_msg: str) -> None:
    return None


def _as_keys(keys: FingerprintKey | Sequence[FingerprintKey]) -> list[FingerprintKey]:
    out = [keys] if isinstance(keys, FingerprintKey) else list(keys)
    if not out:
        raise ParameterError("at least one key is needed")
    for k in out:
        if not isinstance(k, FingerprintKey):
            raise ParameterError(f"keys must be FingerprintKey objects, got {type(k).__name__}")
    return out


def _trajectory_marks(n_tokens: int, points: int) -> np.ndarray:
    if n_tokens <= 0:
        return np.zeros(0, dtype=np.int64)
    start = min(100, n_tokens)
    marks = np.unique(np.geomspace(start, n_tokens, points).round().astype(np.int64))
    marks[-1] = n_tokens
    return marks


@dataclass(frozen=True)
class _Scored:
    """One key's view of the evidence: kept items, their (weighted) scores and the null."""

    keep: np.ndarray | None  # (n,) bool of the evidence's items, None = all
    scores: np.ndarray  # (n_kept,) weights applied (float64), else the scheme's own dtype
    null: NullModel
    raw: np.ndarray  # (n_kept,) the items' own scores (weights not applied)


def _score(scheme: Scheme, ev: Evidence, reuse: "_Scored | None" = None) -> _Scored:
    raw = scheme.scores_of_blocks(ev.blocks)  # native dtype (int8 flags): sums and cumsums take float64
    keep = scheme.distinct_mask(ev.blocks) if len(ev) else None
    if keep is not None and bool(keep.all()):
        keep = None
    blocks = ev.blocks if keep is None else ev.blocks[keep]
    weights = ev.weights if (keep is None or ev.weights is None) else ev.weights[keep]
    kept_raw = raw if keep is None else raw[keep]
    scores = kept_raw if weights is None else kept_raw * weights
    same = reuse is not None and ((reuse.keep is None and keep is None) or (
        reuse.keep is not None and keep is not None and np.array_equal(reuse.keep, keep)))
    null = reuse.null if (same and reuse is not None) else scheme.null(int(scores.size), blocks=blocks,
                                                                          weights=weights)
    return _Scored(keep, scores, null, kept_raw)


def _kept(arr: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    return arr if keep is None else arr[keep]


def _trajectory(s: _Scored, positions: np.ndarray, marks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log10 p-values at each mark ``(M,)`` and the number of items read by then ``(M,)``."""
    n_at = np.searchsorted(_kept(positions, s.keep), marks, side="left")
    # totals at the marks: one pass of slice sums, not a cumsum of every item (decoys repeat this)
    bounds = np.concatenate(([0], n_at))
    totals = np.cumsum([s.scores[a:b].sum(dtype=np.float64) for a, b in zip(bounds[:-1], bounds[1:])])
    return s.null.log10_sf_prefixes(np.asarray(totals, dtype=np.float64), n_at), n_at


def _response_scores(scheme: Scheme, ev: Evidence, s: _Scored) -> ResponseScores:
    n_texts = ev.n_texts
    local = np.searchsorted(ev.text_numbers, _kept(ev.text_index, s.keep))
    per_n = np.bincount(local, minlength=n_texts)
    per_stat = np.bincount(local, weights=s.scores, minlength=n_texts)
    if s.null.n_items == 0 or type(s.null).log10_sf_prefixes is not NullModel.log10_sf_prefixes:
        per_log10 = s.null.log10_sf_prefixes(per_stat, per_n) if n_texts else np.zeros(0)
    else:  # a null that depends on which items were scored: one per response
        order = np.argsort(local, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(per_n)))
        blocks = _kept(ev.blocks, s.keep)
        weights = None if ev.weights is None else _kept(ev.weights, s.keep)
        per_log10 = np.zeros(n_texts)
        for i in np.flatnonzero(per_n):
            idx = order[bounds[i]:bounds[i + 1]]
            null = scheme.null(int(idx.size), blocks=blocks[idx], weights=None if weights is None else weights[idx])
            per_log10[i] = float(null.log10_sf(per_stat[i:i + 1])[0])
    return ResponseScores(ids=list(ev.text_ids), n_tokens=ev.text_tokens, n_scored=per_n, statistic=per_stat,
                          log10_pvalue=per_log10)


def decoy_rows(ev: Evidence, spec: tuple, seed: int, indices: Sequence[int], u: np.ndarray, keep: np.ndarray | None,
               null: NullModel, marks: np.ndarray) -> np.ndarray:
    """Decoys ``indices`` of ``spec`` (:meth:`FingerprintKey.decoy_spec`) and ``seed`` on the whole
    evidence ``ev``, for schemes whose decoys keep their own items (:meth:`Scheme.distinct_mask`):
    one row per decoy, ``(len(indices), 3 + M)`` float64: log10 p, randomized p (with ``u``
    ``(len(indices),)``), effect, then the log10 p at each of the ``M`` trajectory ``marks``.
    ``keep``/``null``: the main key's kept items and null, reused where a decoy keeps the same
    items. A pure function of its arguments, so any worker of a cluster can run it."""
    from ..keys import decoy_key

    main = _Scored(keep, np.zeros(0), null, np.zeros(0))
    out = np.empty((len(indices), 3 + marks.size))
    for row, i in enumerate(indices):
        d = _score(decoy_key(spec, seed, int(i)).scheme_object(), ev, reuse=main)
        total = float(d.scores.sum(dtype=np.float64))
        out[row, 0] = float(d.null.log10_sf(np.array([total]))[0])
        out[row, 1] = float(d.null.randomized_pvalues(np.array([total]), u[row:row + 1])[0])
        out[row, 2] = (total / d.null.n_trials - d.null.null_rate) if d.null.n_trials else math.nan
        out[row, 3:] = _trajectory(d, ev.positions, marks)[0]
    return out


def decoy_segment_sums(blocks: np.ndarray, weights: np.ndarray | None, spec: tuple, seed: int,
                       indices: Sequence[int], starts: np.ndarray) -> np.ndarray:
    """Score sums of decoys ``indices`` over segments of a contiguous slice of items: ``blocks``
    ``(n, ...)`` and ``weights`` ``(n,)`` (or None) of the slice, segment ``j`` being items
    ``starts[j]`` to ``starts[j + 1]`` (the last to the end). Returns ``(len(indices),
    len(starts))`` float64. For schemes that score every item (no per-key de-duplication), where
    these sums are all a decoy's test and trajectory need; a pure function of its arguments."""
    from ..keys import decoy_key

    out = np.empty((len(indices), starts.size))
    for row, i in enumerate(indices):
        scores = decoy_key(spec, seed, int(i)).scheme_object().scores_of_blocks(blocks)
        if weights is not None:
            scores = scores * weights
        out[row] = np.add.reduceat(scores.astype(np.float64, copy=False), starts) if scores.size else 0.0
    return out


#: Items per slice of evidence sent to one decoy task (bounds a worker's memory: about 60 bytes
#: per item with its scores).
DECOY_SLICE_ITEMS = 1 << 21
#: Decoy keys per task.
DECOY_CHUNK = 25

#: Runs tasks: ``runner(fn, [args, ...])`` returns ``[fn(*args), ...]`` in order (in this process
#: by default; on a cluster's workers with :func:`fingerprint.scale.cluster.task_runner`).
TaskRunner = Callable[[Callable[..., np.ndarray], list[tuple]], list[np.ndarray]]


def _in_process(fn: Callable[..., np.ndarray], tasks: list[tuple]) -> list[np.ndarray]:
    return [fn(*args) for args in tasks]


def _sliceable(key: FingerprintKey, ev: Evidence, main: _Scored) -> bool:
    """Decoys of this key score every item of ``ev`` (no per-key de-duplication) and share the
    main key's null, so their statistics are sums over slices of the items."""
    if main.keep is not None or len(ev) == 0:
        return False
    from ..keys import decoy_key

    probe = decoy_key(key.decoy_spec(), 0, 0).scheme_object()
    return probe.distinct_mask(ev.blocks[:1]) is None


def _decoy_rows_by_segments(key: FingerprintKey, ev: Evidence, main: _Scored, marks: np.ndarray, u: np.ndarray,
                            options: VerifyOptions, runner: TaskRunner, say: Progress) -> np.ndarray:
    """The rows of :func:`decoy_rows`, from segment sums computed slice by slice (in tasks)."""
    k, n = options.n_decoys, len(ev)
    n_at = np.searchsorted(ev.positions, marks, side="left")
    bounds = np.unique(np.concatenate(([0], n_at, np.arange(0, n, DECOY_SLICE_ITEMS))))
    bounds = bounds[bounds < n]  # segment starts, strictly increasing, none empty
    cuts = np.unique(np.searchsorted(bounds, np.arange(0, n, DECOY_SLICE_ITEMS)))  # slices of whole segments
    slice_seg = np.append(cuts, bounds.size)
    slices = []  # one view per slice, shared by its tasks (a cluster receives each slice once)
    for s0, s1 in zip(slice_seg[:-1], slice_seg[1:]):
        lo, hi = int(bounds[s0]), int(bounds[s1]) if s1 < bounds.size else n
        slices.append((s0, ev.blocks[lo:hi], None if ev.weights is None else ev.weights[lo:hi], bounds[s0:s1] - lo))
    spec = key.decoy_spec()
    tasks, shape = [], []
    for s0, blocks, weights, starts in slices:
        for a in range(0, k, DECOY_CHUNK):
            tasks.append((blocks, weights, spec, options.decoy_seed, list(range(a, min(k, a + DECOY_CHUNK))), starts))
            shape.append((a, s0))
    say(f"decoys: {k} keys x {len(slice_seg) - 1} slice(s) of the items, {len(tasks)} task(s)")
    sums = np.zeros((k, bounds.size))
    for (a, s0), part in zip(shape, runner(decoy_segment_sums, tasks)):
        sums[a:a + part.shape[0], s0:s0 + part.shape[1]] = part
    cum = np.concatenate((np.zeros((k, 1)), np.cumsum(sums, axis=1)), axis=1)  # (k, segments + 1)
    return _decoy_rows_of_totals(main.null, cum[:, -1], cum[:, np.searchsorted(np.append(bounds, n), n_at)], n_at, u)


def _decoy_rows_of_totals(null: NullModel, totals: np.ndarray, at_marks: np.ndarray, n_at: np.ndarray,
                          u: np.ndarray) -> np.ndarray:
    """The rows of :func:`decoy_rows` from each decoy's total ``(k,)`` and its score sums over
    the first ``n_at`` ``(M,)`` items, ``at_marks`` ``(k, M)``."""
    k = totals.size
    out = np.empty((k, 3 + n_at.size))
    out[:, 0] = null.log10_sf(totals)
    out[:, 1] = null.randomized_pvalues(totals, u)
    out[:, 2] = (totals / null.n_trials - null.null_rate) if null.n_trials else math.nan
    for i in range(k):
        out[i, 3:] = null.log10_sf_prefixes(at_marks[i], n_at)
    return out


def _decoys(key: FingerprintKey, ev: Evidence, main: _Scored, test: TestResult, marks: np.ndarray,
            options: VerifyOptions, say: Progress, runner: TaskRunner | None = None
            ) -> tuple[DecoySummary | None, np.ndarray | None]:
    k = options.n_decoys
    if k == 0:
        return None, None
    u = np.random.default_rng([options.decoy_seed, 0x6B73]).random(k)
    if _sliceable(key, ev, main):
        rows = _decoy_rows_by_segments(key, ev, main, marks, u, options, runner or _in_process, say)
    else:
        say(f"decoys: {k} keys through the same pipeline")
        tasks = [(ev, key.decoy_spec(), options.decoy_seed, list(range(a, min(k, a + DECOY_CHUNK))),
                  u[a:a + DECOY_CHUNK], main.keep, main.null, marks) for a in range(0, k, DECOY_CHUNK)]
        rows = np.concatenate((runner or _in_process)(decoy_rows, tasks))
    return _decoy_summary(options, test, main.null, rows)


def _decoy_summary(options: VerifyOptions, test: TestResult, null: NullModel, rows: np.ndarray
                   ) -> tuple[DecoySummary, np.ndarray]:
    """The decoys' summary and their trajectories ``(k, M)`` from their rows (:func:`decoy_rows`)."""
    k = options.n_decoys
    log10, randomized, effects, traj = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3:]
    ks = float(stats.kstest(randomized, "uniform").pvalue) if null.n_items else 1.0
    empirical = (1 + int((log10 <= test.log10_pvalue).sum())) / (k + 1)
    finite = effects[np.isfinite(effects)]
    summary = DecoySummary(k=k, seed=options.decoy_seed, empirical_pvalue=empirical, ks_pvalue=ks,
                           passed=ks >= options.ks_threshold, log10_pvalue_mean=float(log10.mean()),
                           log10_pvalue_sd=float(log10.std(ddof=1)) if k > 1 else 0.0,
                           effect_mean=float(finite.mean()) if finite.size else math.nan,
                           effect_sd=float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
                           min_log10_pvalue=float(log10.min()), log10_pvalues=np.ascontiguousarray(log10))
    return summary, traj


#: The e-process is evaluated after every item up to this many items, then at this many evenly
#: spaced items (and at the trajectory marks): a sup over a subset of times is still valid.
EPROCESS_TIMES = 1 << 17


def eprocess_grid(n: int) -> np.ndarray:
    """The item indices ``(G,)`` at which the e-process is evaluated over ``n`` items (besides
    the trajectory marks): every item up to :data:`EPROCESS_TIMES`, else that many evenly spaced."""
    if n <= EPROCESS_TIMES:
        return np.arange(n)
    return np.linspace(0, n - 1, EPROCESS_TIMES).astype(np.int64)


def _anytime(s: _Scored, options: VerifyOptions, n_at: np.ndarray) -> tuple[float | None, np.ndarray]:
    """The anytime-valid log10 p-value after all items and after ``n_at`` ``(M,)`` items each
    (``None`` and NaNs when the statistic has no e-process; an error if the evidence was gathered
    with a stopping rule, since then no other p-value is valid)."""
    return _anytime_of(int(s.raw.size), lambda times: s.null.log10_eprocess(s.raw, at=times), options, n_at)


def _anytime_of(n: int, log10_e: Callable[[np.ndarray], np.ndarray], options: VerifyOptions, n_at: np.ndarray
                ) -> tuple[float | None, np.ndarray]:
    """:func:`_anytime` for ``n`` items whose running log10 e-values at sorted item indices come
    from ``log10_e``."""
    if n == 0:
        return 0.0, np.zeros(n_at.size)
    if n <= EPROCESS_TIMES:
        times = eprocess_grid(n)
    else:
        times = np.unique(np.concatenate([eprocess_grid(n), np.clip(n_at - 1, 0, n - 1)]))
    try:
        running = anytime_log10_pvalues(log10_e(times))
    except ParameterError as exc:
        if options.optional_stopping:
            raise ParameterError(f"the evidence was gathered with a stopping rule, but {exc}") from None
        return None, np.full(n_at.size, math.nan)
    where = np.searchsorted(times, n_at - 1, side="right") - 1  # last evaluated time within each mark
    at_marks = np.where((n_at > 0) & (where >= 0), running[np.maximum(where, 0)], 0.0)
    return float(running[-1]), at_marks


def _key_result(key: FingerprintKey, ev: Evidence, options: VerifyOptions, n_keys: int,
                say: Progress, runner: TaskRunner | None = None) -> dict:
    scheme = key.scheme_object()
    say(f"scoring {len(ev):,} items with key {key.key_id[:12]} ({key.scheme})")
    main = _score(scheme, ev)
    counts = ev.counts
    n = main.null.n_items
    if n < counts.scored:
        counts = counts.with_duplicates(ev.duplicate_rule, counts.scored - n)
    total = float(main.scores.sum(dtype=np.float64))
    test = main.null.test(total, confidence_level=options.confidence_level)
    marks = _trajectory_marks(ev.n_tokens, options.trajectory_points)
    traj_main, n_at = _trajectory(main, ev.positions, marks)
    anytime_final, anytime_at = _anytime(main, options, n_at)
    decoys, decoy_traj = _decoys(key, ev, main, test, marks, options, say, runner)
    return _assembled(key, main.null, counts, total, options, n_keys, marks, traj_main, n_at, anytime_final,
                      anytime_at, decoys, decoy_traj, _response_scores(scheme, ev, main))


def _assembled(key: FingerprintKey, null: NullModel, counts: ItemCounts, total: float, options: VerifyOptions,
               n_keys: int, marks: np.ndarray, traj_main: np.ndarray, n_at: np.ndarray, anytime_final: float | None,
               anytime_at: np.ndarray, decoys: DecoySummary | None, decoy_traj: np.ndarray | None,
               responses: ResponseScores) -> dict:
    """One key's result from its statistic: the test, the Bayes factor, sufficiency and the
    trajectory (``marks``, the log10 p ``traj_main`` after ``n_at`` items, the anytime p-values,
    the decoys' band)."""
    test = null.test(total, confidence_level=options.confidence_level)
    n = null.n_items
    effect_max = options.effect_prior_max if options.effect_prior_max is not None else null.effect_prior_default
    log10_bf = null.log10_bayes_factor(total, effect_max) if n else 0.0
    bayes = BayesSummary(log10_bayes_factor=log10_bf,
                         effect_prior=f"uniform(0, {effect_max:g}) on the excess over the null rate",
                         effect_prior_max=effect_max, prior_probability=options.prior_probability,
                         posterior=posterior_probability(log10_bf, options.prior_probability))
    level = mde_log10_alpha(options.alpha, n_keys)
    mde = null.min_detectable_effect(level)
    sufficiency = Sufficiency(min_detectable_effect=mde, target_effect=effect_max,
                              items_needed=null.items_needed(effect_max, level), sufficient=mde <= effect_max)
    trajectory = []
    for j, mark in enumerate(marks):
        if decoy_traj is not None:
            lo, med, hi = np.quantile(decoy_traj[:, j], [0.05, 0.5, 0.95])
        else:
            lo = med = hi = math.nan
        trajectory.append(TrajectoryPoint(int(mark), int(n_at[j]), float(traj_main[j]), float(lo), float(med),
                                          float(hi), float(anytime_at[j])))
    return {"key": key.to_public_dict(), "test": test, "anytime": anytime_final, "counts": counts, "bayes": bayes,
            "sufficiency": sufficiency, "decoys": decoys, "trajectory": trajectory, "responses": responses}


def verify_evidence(evidence: Evidence | Sequence[Evidence], keys: FingerprintKey | Sequence[FingerprintKey], *,
                    options: VerifyOptions = VerifyOptions(), notes: Sequence[str] = (),
                    tokenizer_vocab_size: int | None = None, window_filter_size: int | None = None,
                    progress: Progress | None = None, decoy_runner: TaskRunner | None = None,
                    input_problem: str | None = None) -> VerifyResult:
    """Test evidence (one object per context width the keys use) for each key's fingerprint.

    This is the pipeline's core: everything that builds evidence (token arrays, exchanges in
    every access mode, merged shards) ends here. ``decoy_runner`` runs the decoy keys' tasks
    elsewhere (e.g. on a Dask cluster's workers); the result is the same either way.
    ``input_problem``: a reason the input could not show a fingerprint (see
    :func:`.decision.tokenizer_fit_problem`): a verdict other than detected is then inconclusive.
    """
    options.validate()
    say = progress or _quiet
    key_list = _as_keys(keys)
    ev_list = [evidence] if isinstance(evidence, Evidence) else list(evidence)
    by_width: dict[int, Evidence] = {}
    for ev in ev_list:
        by_width.setdefault(ev.context_width, ev)
    raws = []
    for key in key_list:
        scheme = key.scheme_object()
        found = by_width.get(scheme.context_width)
        if found is None:
            raise ParameterError(f"no evidence for key {key.key_id[:12]}'s context width {scheme.context_width} "
                                 f"(have {sorted(by_width)})")
        ev = found
        if ev.mode != options.mode:
            raise ParameterError(f"evidence of mode {ev.mode!r} given for options.mode {options.mode!r}")
        if ev.vocab_size > key.vocab_size:
            raise InputError(f"key {key.key_id} has vocab_size {key.vocab_size}, smaller than the evidence's "
                             f"{ev.vocab_size}: wrong key or tokenizer")
        raws.append(_key_result(key, ev, options, len(key_list), say, decoy_runner))
    first = by_width[next(iter(by_width))]
    return _results(raws, options, notes, input_problem, n_texts=first.n_texts, n_tokens=first.n_tokens,
                    tokenizer_vocab_size=tokenizer_vocab_size, window_filter_size=window_filter_size)


def _results(raws: list[dict], options: VerifyOptions, notes: Sequence[str], input_problem: str | None, *,
             n_texts: int, n_tokens: int, tokenizer_vocab_size: int | None, window_filter_size: int | None
             ) -> VerifyResult:
    """The verify result from each key's result (:func:`_assembled`): Holm over the keys, verdicts."""
    decisive = [r["anytime"] if options.optional_stopping else r["test"].log10_pvalue for r in raws]
    adjusted, holm_applied = adjust(decisive)
    out_notes = list(notes)
    results = []
    for raw, adj in zip(raws, adjusted):
        verdict, reason = verdict_of(float(adj), options.alpha, raw["decoys"], raw["sufficiency"],
                                     n_items=raw["counts"].scored, item_name=_ITEM_NAME[options.mode],
                                     input_problem=input_problem)
        if verdict != "detected" and verdict != "not detected":
            out_notes.append(f"key {raw['key']['key_id']}: {verdict}: {reason}")
        results.append(KeyResult(key=raw["key"], mode=options.mode, test=raw["test"], holm_log10_pvalue=float(adj),
                                 anytime_log10_pvalue=raw["anytime"],
                                 valid_pvalue="anytime" if options.optional_stopping else "fixed-n",
                                 counts=raw["counts"], decoys=raw["decoys"], bayes=raw["bayes"],
                                 sufficiency=raw["sufficiency"], trajectory=raw["trajectory"],
                                 responses=raw["responses"], verdict=verdict, reason=reason))
    return VerifyResult(results=results, options=options, n_texts=n_texts, n_tokens=n_tokens,
                        tokenizer_vocab_size=tokenizer_vocab_size, window_filter_size=window_filter_size,
                        holm_applied=holm_applied, notes=out_notes)


def _as_ids(a: object, i: int, what: str) -> np.ndarray:
    """One text's ids as a 1-D int64 array; :class:`TokenError` naming the text otherwise."""
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError, OverflowError) as exc:
        raise TokenError(f"{what} {i}: not an array of token ids ({exc})") from None
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1:
        raise TokenError(f"{what} {i}: must be a 1-D array of token ids, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TokenError(f"{what} {i}: must be integer token ids, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def offsets_of(arrays: Sequence[object], what: str = "text") -> tuple[np.ndarray, np.ndarray]:
    parts = [_as_ids(a, i, what) for i, a in enumerate(arrays)]
    arrays = parts
    tokens = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    offsets = np.concatenate(([0], np.cumsum([np.asarray(a).size for a in arrays]))).astype(np.int64)
    return tokens, offsets


def verify(tokens: np.ndarray | Sequence[np.ndarray], offsets: np.ndarray | None = None, *,
           keys: FingerprintKey | Sequence[FingerprintKey],
           prompt_tokens: np.ndarray | Sequence[np.ndarray] | None = None, prompt_offsets: np.ndarray | None = None,
           served_tokens: np.ndarray | Sequence[np.ndarray] | None = None, served_offsets: np.ndarray | None = None,
           text_ids: Sequence[str] | None = None, options: VerifyOptions = VerifyOptions(),
           window_filters: dict[int, WindowFilter] | None = None, input_problem: str | None = None,
           progress: Progress | None = None) -> VerifyResult:
    """Verify a suspect's token ids against one or more keys (text mode).

    Parameters
    ----------
    tokens, offsets:
        The suspect's responses as flat ids ``(N,)`` with offsets ``(T + 1,)`` (text ``i`` is
        ``tokens[offsets[i]:offsets[i + 1]]``), or a list of ``T`` id arrays (``offsets`` omitted).
    keys:
        A :class:`FingerprintKey` or several (Holm-corrected).
    prompt_tokens, prompt_offsets:
        The prompt of each response, laid out the same way (windows seen there are not scored).
    served_tokens, served_offsets:
        The owner's served outputs: score only windows seen there (the supervised setting).
    text_ids:
        Names of the responses in per-response scores (default ``"0"``, ``"1"``, ...).
    window_filters:
        Instead of ``served_tokens``: a ready window filter per context width (e.g. from a
        served-window index, :mod:`fingerprint.scale.index`).
    """
    if offsets is None:
        if isinstance(tokens, np.ndarray) and tokens.ndim == 1 and np.issubdtype(tokens.dtype, np.integer):
            raise TokenError("offsets are needed with a flat token array (or pass a list of arrays)")
        tokens, offsets = offsets_of(list(tokens))
    if prompt_tokens is not None and prompt_offsets is None:
        prompt_tokens, prompt_offsets = offsets_of(list(prompt_tokens), "prompt")
    if served_tokens is not None and window_filters is not None:
        raise ParameterError("give served_tokens or window_filters, not both")
    if served_tokens is not None and served_offsets is None:
        served_tokens, served_offsets = offsets_of(list(served_tokens), "served text")
    options.validate()
    if options.mode != "text":
        raise ParameterError(f"verify() takes token ids (text mode); use verify_exchanges for mode {options.mode!r}")
    key_list = _as_keys(keys)
    say = progress or _quiet
    vocab = max(k.vocab_size for k in key_list)  # one id packing for the evidence and its window filter
    widths = list(dict.fromkeys(key.scheme_object().context_width for key in key_list))
    evidence, filter_size = text_evidence_by_width(
        np.asarray(tokens), np.asarray(offsets), widths=widths, vocab_size=vocab,
        prompt_tokens=None if prompt_tokens is None else np.asarray(prompt_tokens), prompt_offsets=prompt_offsets,
        served_tokens=None if served_tokens is None else np.asarray(served_tokens), served_offsets=served_offsets, window_filters=window_filters,
        text_ids=text_ids, progress=say)
    return verify_evidence(list(evidence.values()), key_list, options=options, window_filter_size=filter_size,
                           progress=say, input_problem=input_problem)


def text_evidence_by_width(tokens: np.ndarray, offsets: np.ndarray, *, widths: Sequence[int], vocab_size: int,
                           prompt_tokens: np.ndarray | None = None, prompt_offsets: np.ndarray | None = None,
                           served_tokens: np.ndarray | None = None, served_offsets: np.ndarray | None = None,
                           window_filters: dict[int, WindowFilter] | None = None,
                           text_ids: Sequence[str] | None = None, progress: Progress | None = None
                           ) -> tuple[dict[int, Evidence], int | None]:
    """Text-mode evidence for each context width in ``widths`` (flat ids and offsets as for
    :func:`verify`), and the size of the window filter applied (None without one)."""
    say = progress or _quiet
    evidence: dict[int, Evidence] = {}
    filter_size = None
    for h in widths:
        if h in evidence:
            continue
        wf = None
        if window_filters is not None:
            if h not in window_filters:
                raise ParameterError(f"no window filter for context width {h} (have {sorted(window_filters)})")
            wf = window_filters[h]
            filter_size = len(wf)
        elif served_tokens is not None:
            wf = WindowFilter.from_tokens(np.asarray(served_tokens), np.asarray(served_offsets), h,
                                          vocab_size=vocab_size)
            filter_size = len(wf)
        say(f"selecting tuples (h={h}): prompt exclusion, filter, de-duplication")
        evidence[h] = text_evidence(np.asarray(tokens), np.asarray(offsets), context_width=h,
                                    vocab_size=vocab_size,
                                    prompt_tokens=None if prompt_tokens is None else np.asarray(prompt_tokens),
                                    prompt_offsets=None if prompt_offsets is None else np.asarray(prompt_offsets),
                                    window_filter=wf, text_ids=None if text_ids is None else list(text_ids))
    return evidence, filter_size


def key_vocab_notes(tokenizer, keys: Sequence[FingerprintKey]) -> list[str]:
    """Check every key covers the tokenizer's ids (:class:`InputError` otherwise); the notes a
    report carries about keys wider than the tokenizer (padded logits)."""
    notes: list[str] = []
    vocab = tokenizer.vocab_size
    for key in keys:
        if key.vocab_size < vocab:
            raise InputError(f"key {key.key_id} has vocab_size {key.vocab_size}, smaller than the "
                             f"tokenizer's {vocab} ({tokenizer.source}): wrong key or tokenizer")
        if key.vocab_size > vocab:
            notes.append(f"key {key.key_id} vocab_size {key.vocab_size} exceeds the tokenizer's {vocab} "
                         f"(padded logits): ids {vocab}..{key.vocab_size - 1} never occur in text")
    return notes


def verify_exchanges(exchanges: ExchangeSet, tokenizer, keys: FingerprintKey | Sequence[FingerprintKey], *,
                     options: VerifyOptions = VerifyOptions(), served: ExchangeSet | None = None,
                     window_filters: dict[int, WindowFilter] | None = None,
                     progress: Progress | None = None) -> VerifyResult:
    """Verify suspect exchanges (read with :func:`fingerprint.read_exchanges`) in any mode.

    ``tokenizer`` is the owner's (:func:`fingerprint.load_tokenizer`); ``served`` (text mode)
    holds the owner's served outputs, whose windows restrict scoring; ``window_filters`` (one
    per context width, e.g. from a served-window index) restrict it the same way.
    """
    from .access import access_evidence, access_notes

    options.validate()
    say = progress or _quiet
    key_list = _as_keys(keys)
    if not exchanges.exchanges:
        raise InputError("no suspect responses to verify (all inputs empty or skipped)")
    notes = key_vocab_notes(tokenizer, key_list)
    vocab = tokenizer.vocab_size
    if options.mode != "text":
        if served is not None or window_filters is not None:
            raise ParameterError(f"--served applies to text mode only, not to mode {options.mode!r}")
        by_width: dict[int, Evidence] = {}
        for key in key_list:
            h = key.scheme_object().context_width
            if h not in by_width:
                by_width[h] = access_evidence(exchanges, tokenizer, key, options, progress=say)
        return verify_evidence(list(by_width.values()), key_list, options=options,
                               notes=[*notes, *access_notes(exchanges, options)], tokenizer_vocab_size=vocab,
                               progress=say)
    say(f"tokenizing {len(exchanges.exchanges):,} responses and prompts")
    tokens, offsets = tokenizer.encode_batch(exchanges.responses)
    p_tokens, p_offsets = tokenizer.encode_batch(exchanges.prompts)
    served_tokens = served_offsets = None
    if served is not None:
        if not served.exchanges:
            raise InputError("the served-outputs input holds no responses")
        served_tokens, served_offsets = tokenizer.encode_batch(served.responses)
    problem = tokenizer_fit_problem(sum(len(r) for r in exchanges.responses), int(tokens.size))
    result = verify(tokens, offsets, keys=key_list, prompt_tokens=p_tokens, prompt_offsets=p_offsets,
                    served_tokens=served_tokens, served_offsets=served_offsets,
                    text_ids=[e.id for e in exchanges.exchanges], options=options, window_filters=window_filters,
                    input_problem=problem, progress=say)
    result.notes[:0] = notes
    result.tokenizer_vocab_size = vocab
    return result


# ---- the statistic from sums over pieces of the corpus (partitions scored where they are) -------

@dataclass
class ScoreSums:
    """One key's scores over a contiguous piece of the corpus' distinct items (a partition's kept
    items, in position order): all that the test, the trajectory, the anytime p-value, the
    decoys and the per-response scores need. Sums over pieces add up to the whole corpus'; with
    integer item scores (:func:`sums_are_exact`) float64 adds them exactly, in any grouping.

    ``n`` items; ``total`` their score sum; ``n_at`` ``(M,)`` int64 items before each trajectory
    mark (a global token position) and ``at_marks`` ``(M,)`` their score sums; ``grid_prefix``
    ``(G,)`` the inclusive prefix sums at the piece's e-process times (local item indices, given
    by the caller); ``text_n``/``text_stat`` ``(T,)`` items and score sums of the piece's texts;
    ``decoy_totals`` ``(k,)`` and ``decoy_at_marks`` ``(k, M)`` the same for the decoy keys (None
    without decoys)."""

    n: int
    total: float
    n_at: np.ndarray
    at_marks: np.ndarray
    grid_prefix: np.ndarray
    text_n: np.ndarray
    text_stat: np.ndarray
    decoy_totals: np.ndarray | None
    decoy_at_marks: np.ndarray | None


def sums_are_exact(key: FingerprintKey) -> bool:
    """Whether ``key`` and its decoys score every distinct tuple (no per-key de-duplication), with
    integer scores and a null that depends only on the item count: then :class:`ScoreSums` of
    pieces give the single-process result number for number."""
    from ..keys import decoy_key
    from ..prf import encode_tuples

    scheme = key.scheme_object()
    h = scheme.context_width
    empty = encode_tuples(np.zeros((0, h), dtype=np.int64), np.zeros(0, dtype=np.int64))
    for sc in (scheme, decoy_key(key.decoy_spec(), 0, 0).scheme_object()):
        if sc.distinct_mask(empty) is not None or not np.issubdtype(sc.scores_of_blocks(empty).dtype, np.integer):
            return False
    null = scheme.null(1)
    return type(null).log10_sf_prefixes is not NullModel.log10_sf_prefixes


def _sums_at(scores: np.ndarray, positions: np.ndarray, marks: np.ndarray, grid: np.ndarray | None
             ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Total, items before each mark ``(M,)``, their sums ``(M,)`` and the inclusive prefix sums
    at ``grid`` ``(G,)`` of item scores ``(n,)`` at ``positions`` ``(n,)``."""
    cum = np.concatenate(([0.0], np.cumsum(scores, dtype=np.float64)))
    n_at = np.searchsorted(positions, marks, side="left")
    return (float(cum[-1]), n_at, cum[n_at], np.zeros(0) if grid is None else cum[grid + 1])


def score_sums(key: FingerprintKey, blocks: np.ndarray, positions: np.ndarray, text_index: np.ndarray, *,
               marks: np.ndarray, grid: np.ndarray, n_texts: int, text_start: int, n_decoys: int,
               decoy_seed: int) -> ScoreSums:
    """:class:`ScoreSums` of ``key`` (and its ``n_decoys`` decoys of ``decoy_seed``) over one
    piece's items: ``blocks`` ``(n, k, 4)``, global ``positions`` and ``text_index`` ``(n,)`` in
    position order; ``marks`` ``(M,)`` global token positions; ``grid`` ``(G,)`` local item
    indices; the piece's texts are ``text_start`` to ``text_start + n_texts``. A pure function of
    its arguments (a cluster's worker runs it)."""
    from ..keys import decoy_key

    scores = key.scheme_object().scores_of_blocks(blocks)
    total, n_at, at_marks, grid_prefix = _sums_at(scores, positions, marks, grid)
    local = text_index - np.int64(text_start)
    text_n = np.bincount(local, minlength=n_texts)
    text_stat = np.bincount(local, weights=scores, minlength=n_texts)
    d_totals = d_marks = None
    if n_decoys:
        d_totals, d_marks = np.empty(n_decoys), np.empty((n_decoys, marks.size))
        spec = key.decoy_spec()
        for i in range(n_decoys):
            d_scores = decoy_key(spec, decoy_seed, i).scheme_object().scores_of_blocks(blocks)
            d_totals[i], _, d_marks[i], _ = _sums_at(d_scores, positions, marks, None)
    return ScoreSums(int(scores.size), total, n_at, at_marks, grid_prefix, text_n, text_stat, d_totals, d_marks)


def _prefixes_at(times: np.ndarray, grid: np.ndarray, grid_prefix: np.ndarray, n_at: np.ndarray,
                 at_marks: np.ndarray) -> np.ndarray:
    """Inclusive prefix sums at item indices ``times`` ``(t,)``: each is a grid time or the last
    item before a trajectory mark (``n_at - 1``), whose prefix is the sum at that mark."""
    pos = np.minimum(np.searchsorted(grid, times), max(grid.size - 1, 0))
    on_grid = grid[pos] == times if grid.size else np.zeros(times.size, dtype=bool)
    out = np.empty(times.size)
    out[on_grid] = grid_prefix[pos[on_grid]]
    rest = times[~on_grid]
    m = np.searchsorted(n_at - 1, rest)
    if rest.size and not np.array_equal((n_at - 1)[np.minimum(m, n_at.size - 1)], rest):
        raise ParameterError("an e-process time is neither a grid time nor the last item before a mark")
    out[~on_grid] = at_marks[m]
    return out


def verify_sums(shells: Sequence[Evidence], sums: Sequence[Sequence[ScoreSums]],
                keys: FingerprintKey | Sequence[FingerprintKey], *, options: VerifyOptions = VerifyOptions(),
                notes: Sequence[str] = (), tokenizer_vocab_size: int | None = None,
                window_filter_size: int | None = None, input_problem: str | None = None,
                progress: Progress | None = None) -> VerifyResult:
    """:func:`verify_evidence` from sums: ``shells`` the corpus' evidence per context width
    without its items (texts and counts; ``counts.scored`` the distinct items), ``sums[i]`` key
    ``i``'s :class:`ScoreSums` of each piece of the corpus, in corpus order, made with the
    trajectory marks of :func:`trajectory_marks_of` and the e-process times of
    :func:`eprocess_grid` cut at the pieces' item offsets. For keys with :func:`sums_are_exact`,
    the result equals :func:`verify_evidence` on the whole evidence, number for number."""
    options.validate()
    say = progress or _quiet
    key_list = _as_keys(keys)
    by_width = {ev.context_width: ev for ev in reversed(list(shells))}
    raws = []
    for key, pieces in zip(key_list, sums):
        if not sums_are_exact(key):
            raise ParameterError(f"key {key.key_id[:12]} ({key.scheme}): its statistic is not a sum of integer "
                                 f"item scores over the corpus' distinct tuples; verify its evidence whole")
        shell = by_width[key.scheme_object().context_width]
        if shell.mode != options.mode:
            raise ParameterError(f"evidence of mode {shell.mode!r} given for options.mode {options.mode!r}")
        if shell.vocab_size > key.vocab_size:
            raise InputError(f"key {key.key_id} has vocab_size {key.vocab_size}, smaller than the evidence's "
                             f"{shell.vocab_size}: wrong key or tokenizer")
        say(f"combining {len(pieces)} piece(s) of key {key.key_id[:12]} ({key.scheme})")
        n = sum(p.n for p in pieces)
        if n != shell.counts.scored:
            raise ParameterError(f"the pieces hold {n} items, the evidence {shell.counts.scored}")
        null = key.scheme_object().null(n)
        total = 0.0
        offsets = []
        for p in pieces:
            offsets.append(total)
            total += p.total
        marks = trajectory_marks_of(shell.n_tokens, options)
        n_at = np.zeros(marks.size, dtype=np.int64)
        for p in pieces:
            n_at = n_at + p.n_at
        at_marks = np.zeros(marks.size)
        for p in pieces:
            at_marks = at_marks + p.at_marks
        grid = eprocess_grid(n)
        grid_prefix = np.concatenate([p.grid_prefix + off for p, off in zip(pieces, offsets)] or [np.zeros(0)])
        if grid_prefix.size != grid.size:
            raise ParameterError(f"the pieces give {grid_prefix.size} e-process times, expected {grid.size}")
        traj_main = null.log10_sf_prefixes(at_marks, n_at)
        anytime_final, anytime_at = _anytime_of(
            n, lambda times: null.log10_eprocess_of_prefixes(_prefixes_at(times, grid, grid_prefix, n_at, at_marks),
                                                             times + 1.0), options, n_at)
        test = null.test(total, confidence_level=options.confidence_level)
        decoys = decoy_traj = None
        if options.n_decoys:
            k = options.n_decoys
            u = np.random.default_rng([options.decoy_seed, 0x6B73]).random(k)
            d_totals, d_marks = np.zeros(k), np.zeros((k, marks.size))
            for p in pieces:
                if p.decoy_totals is None or p.decoy_at_marks is None or p.decoy_totals.size != k:
                    raise ParameterError(f"a piece lacks the sums of the {k} decoys")
                d_totals = d_totals + p.decoy_totals
                d_marks = d_marks + p.decoy_at_marks
            decoys, decoy_traj = _decoy_summary(options, test, null,
                                                _decoy_rows_of_totals(null, d_totals, d_marks, n_at, u))
        per_n = np.concatenate([p.text_n for p in pieces] or [np.zeros(0, np.int64)])
        per_stat = np.concatenate([p.text_stat for p in pieces] or [np.zeros(0)])
        if per_n.size != shell.n_texts:
            raise ParameterError(f"the pieces hold {per_n.size} texts, the evidence {shell.n_texts}")
        per_log10 = null.log10_sf_prefixes(per_stat, per_n) if shell.n_texts else np.zeros(0)
        responses = ResponseScores(ids=list(shell.text_ids), n_tokens=shell.text_tokens, n_scored=per_n,
                                   statistic=per_stat, log10_pvalue=per_log10)
        raws.append(_assembled(key, null, shell.counts, total, options, len(key_list), marks, traj_main, n_at,
                               anytime_final, anytime_at, decoys, decoy_traj, responses))
    first = list(shells)[0]
    return _results(raws, options, notes, input_problem, n_texts=first.n_texts, n_tokens=first.n_tokens,
                    tokenizer_vocab_size=tokenizer_vocab_size, window_filter_size=window_filter_size)


def trajectory_marks_of(n_tokens: int, options: VerifyOptions) -> np.ndarray:
    """The trajectory's marks ``(M,)`` (global token positions) for a corpus of ``n_tokens``."""
    return _trajectory_marks(n_tokens, options.trajectory_points)
