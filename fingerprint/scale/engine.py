"""Verify a corpus partition by partition, on Dask workers or in this process, exactly.

Each partition (a file, or a Parquet row group: :mod:`.sources`) is one task
(:func:`partition_buckets`): read, tokenize with the owner's tokenizer, build the text evidence
of every context width the keys use (prompt windows excluded, the served-window filter applied,
de-duplicated within the partition), numbered from 0. The task keeps its distinct tuples and
hands on only their ids, split into hash buckets
(:func:`fingerprint.verify.evidence.hash_buckets`: equal tuples share a bucket). One task per
bucket (:func:`dedup_bucket`) concatenates that bucket's ids of every partition in corpus
order, so the first place of an id is its first global position, and flags the first places
(de-duplication stays global, as in one pass).

Then, for keys whose item scores are integers (greenlist and tournament keys, not the
real-valued Gumbel scores: :func:`fingerprint.verify.pipeline.sums_are_exact`), each partition's finish
(:func:`kept_sums`) runs where its tuples are: it keeps the tuples the buckets flagged, placed at
the partition's global text and token offset, scores them with every key and its decoys, and
returns only sums (:class:`fingerprint.verify.pipeline.ScoreSums`: the total, the sums at the
trajectory's marks and at the e-process's times, per-text sums; the same per decoy). The driver
(:class:`Tally`) adds them up: integer sums are exact in any grouping, so
:func:`fingerprint.verify.pipeline.verify_sums` gives what :func:`fingerprint.verify.verify_exchanges`
gives in one process, number for number. The keys' secrets go to the workers only on a local
cluster or over TLS (:attr:`.cluster.Engine.private`).

Other keys (real-valued scores, or per-key de-duplication: hf-kgw, hf-synthid, vLLM's context
de-duplication) take the other finish (:func:`kept_items`): the kept tuples travel to the driver,
which lays them end to end as they arrive (:class:`Assembly`) into the evidence
:func:`fingerprint.verify.evidence.merge` would have built
(:func:`fingerprint.verify.evidence.merge_distinct`; :func:`merged_evidence` does it in one go),
and the exact test runs there, its decoys in tasks on the workers (each task one slice of the
items, at most :data:`fingerprint.verify.pipeline.DECOY_SLICE_ITEMS`, with 25 decoys).

What travels: a partition task returns its sizes and counts to the driver, and 8 bytes per
distinct tuple (its id) to the bucket tasks; a bucket task returns a bit per tuple, and its
kept count per partition to the driver. Summed, a partition's finish returns a few numbers per
key and decoy, per trajectory mark and per text. A worker holds its partitions' distinct tuples
(about 40 bytes each) until their finish, and one bucket's ids; with a memory limit
(``connect(..., memory_limit=...)``, ``--worker-memory``) Dask spills what it holds to disk, so
a worker's memory stays bounded whatever the corpus size.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from ..corpus import ExchangeSet
from ..errors import InputError, ParameterError
from ..keys import FingerprintKey, WorkerKey
from ..tokenize import load_tokenizer
from ..verify import (Evidence, VerifyOptions, VerifyResult, key_vocab_notes, placed_at, text_evidence,
                      tokenizer_fit_problem, verify_evidence)
from ..verify.evidence import distinct_shell, hash_buckets, merge_distinct, without_items
from ..verify.pipeline import ScoreSums, eprocess_grid, score_sums, sums_are_exact, trajectory_marks_of, verify_sums
from ..windows import WindowFilter, first_occurrence_mask
from .cluster import Engine, run_shuffle, task_runner
from .sources import Batch, Columns, Partition, expand_inputs, files_of, plan_partitions, read_partition

__all__ = ["PartitionEvidence", "ScaledVerification", "Items", "partition_evidence", "partition_buckets",
           "dedup_bucket", "kept_items", "merged_evidence", "Assembly", "verify_partitions", "PARTITIONS_PER_BUCKET",
           "bucket_counts", "SumsPlan", "kept_sums", "Tally"]

#: Buckets of the global de-duplication: about this many partitions' worth of tuple ids per
#: bucket (a bucket task's memory: 8 bytes an id, a few times over while it sorts), and a
#: multiple of the worker count.
PARTITIONS_PER_BUCKET = 32


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str, pattern: str | None) -> Any:
    return load_tokenizer(path, tiktoken_pattern=pattern)


@dataclass
class PartitionEvidence:
    """What one partition's task returns: its evidence per context width (numbered from 0),
    its size, and what its reader recorded (``batch`` without its texts)."""

    number: int
    evidence: dict[int, Evidence]
    n_texts: int
    n_tokens: int
    n_chars: int | None
    batch: Batch = field(repr=False, default_factory=lambda: Batch(Partition("", "records", -1)))


def _strip(batch: Batch) -> Batch:
    """The batch without its texts (what the driver needs for the report)."""
    es = batch.exchanges
    kept = ExchangeSet(exchanges=[], files=list(es.files), skipped=list(es.skipped),
                       failed_requests=es.failed_requests, stopping_rules=list(es.stopping_rules))
    return Batch(batch.partition, kept, ids=[])


def partition_evidence(part: Partition, columns: Columns, tokenizer_path: str, tiktoken_pattern: str | None,
                       widths: Sequence[int], vocab_size: int, window_filters: dict[int, WindowFilter] | None,
                       skip_invalid: bool) -> PartitionEvidence:
    """One partition's task (module-level, so Dask can send it to any worker)."""
    batch = read_partition(part, columns, skip_invalid=skip_invalid)
    if batch.tokens is None:
        tok = _tokenizer(tokenizer_path, tiktoken_pattern)
        tokens, offsets = tok.encode_batch(batch.exchanges.responses)
        p_tokens, p_offsets = tok.encode_batch(batch.exchanges.prompts)
    else:
        assert batch.offsets is not None and batch.prompt_tokens is not None and batch.prompt_offsets is not None
        tokens, offsets, p_tokens, p_offsets = batch.tokens, batch.offsets, batch.prompt_tokens, batch.prompt_offsets
    ids = batch.text_ids
    evidence = {h: text_evidence(tokens, offsets, context_width=h, vocab_size=vocab_size, prompt_tokens=p_tokens,
                                 prompt_offsets=p_offsets,
                                 window_filter=None if window_filters is None else window_filters[h],
                                 text_ids=ids)
                for h in widths}
    chars = sum(len(r) for r in batch.exchanges.responses) if batch.tokens is None else None
    return PartitionEvidence(part.number, evidence, len(ids), int(tokens.size), chars, _strip(batch))


@dataclass
class Items:
    """The items of an evidence object (or the kept part of one), in position order: ``blocks``
    ``(n, k, 4)`` uint32, ``ids`` ``(n,)`` uint64 de-duplication ids, ``positions`` and
    ``text_index`` ``(n,)`` int64 (int32 while a partition's task holds them, numbered from 0)."""

    blocks: np.ndarray
    ids: np.ndarray
    positions: np.ndarray
    text_index: np.ndarray

    def __len__(self) -> int:
        return int(self.positions.size)


@dataclass
class _Held:
    """What a partition's task keeps for its finish: its items of one width and the order that
    groups them by bucket (``None``: one bucket). With an order, ``items.ids`` are in that
    (bucket) order: the buckets' pieces are slices of them, not copies."""

    items: Items
    order: np.ndarray | None


#: What a partition's task returns: the partition without its items, the ids of its items of
#: each width per bucket (``pieces[b][h]``, in position order), and its items.
MapResult = tuple["PartitionEvidence", list[dict[int, np.ndarray]], dict[int, _Held]]


def _narrow(a: np.ndarray) -> np.ndarray:
    """A non-decreasing int64 array as int32 when its values fit (a partition's own numbering:
    what a partition's task holds shrinks by a third), else unchanged."""
    return a.astype(np.int32) if a.size == 0 or (0 <= int(a[0]) and int(a[-1]) < 1 << 31) else a


def partition_buckets(part: Partition, columns: Columns, tokenizer_path: str, tiktoken_pattern: str | None,
                      widths: Sequence[int], vocab_size: int, window_filters: dict[int, WindowFilter] | None,
                      skip_invalid: bool, n_buckets: int) -> MapResult:
    """One partition's task in the hash-partitioned merge: :func:`partition_evidence`, its items
    taken out (the evidence keeps its texts and counts) and kept for :func:`kept_items`, and the
    de-duplication ids of its items split into ``n_buckets`` hash buckets
    (:func:`fingerprint.verify.evidence.hash_buckets`), ``pieces[b][h]``, each in position order:
    all a bucket's task needs (8 bytes an item)."""
    pe = partition_evidence(part, columns, tokenizer_path, tiktoken_pattern, widths, vocab_size, window_filters,
                            skip_invalid)
    pieces: list[dict[int, np.ndarray]] = [{} for _ in range(n_buckets)]
    held: dict[int, _Held] = {}
    for h, ev in pe.evidence.items():
        if ev.mode != "text":
            raise ParameterError(f"hash-partitioned merging needs text evidence (one item per position), "
                                 f"got mode {ev.mode!r}")
        items = Items(ev.blocks, ev.dedup_ids, _narrow(ev.positions), _narrow(ev.text_index))
        if n_buckets == 1:
            pieces[0][h] = ev.dedup_ids
            held[h] = _Held(items, None)
            continue
        b = hash_buckets(ev.dedup_ids, n_buckets)
        order = np.argsort(b, kind="stable")
        cuts = np.concatenate(([0], np.cumsum(np.bincount(b, minlength=n_buckets)))).tolist()
        grouped = ev.dedup_ids[order]
        for k in range(n_buckets):
            pieces[k][h] = grouped[cuts[k]:cuts[k + 1]]
        held[h] = _Held(replace(items, ids=grouped), order)
    return replace(pe, evidence={h: without_items(ev) for h, ev in pe.evidence.items()}), pieces, held


def dedup_bucket(pieces: list[dict[int, np.ndarray]]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """One bucket's task: ``pieces[j][h]`` are partition ``j``'s ids in the bucket (width ``h``),
    partitions in corpus order, each in position order, so an id's first place in their
    concatenation is its first global position (every item of an id is in this bucket). Returns
    per width the kept flags of the concatenation, bit-packed (``np.packbits``), and where each
    partition's piece starts in it ``(P + 1,)``."""
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for h in (pieces[0] if pieces else {}):
        parts = [p[h] for p in pieces]
        starts = np.concatenate(([0], np.cumsum([a.size for a in parts]))).astype(np.int64)
        out[h] = (np.packbits(first_occurrence_mask(np.concatenate(parts))), starts)
    return out


def _flags(packed: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Flags ``lo`` to ``hi`` of a bit-packed bool array, ``(hi - lo,)`` bool."""
    bits = np.unpackbits(packed[lo // 8:-(-hi // 8)])
    return bits[lo % 8:lo % 8 + hi - lo].view(bool)


def kept_items(mapped: MapResult, buckets: list[dict[int, tuple[np.ndarray, np.ndarray]]], j: int,
               text_start: int, token_start: int) -> dict[int, Items]:
    """Partition ``j``'s finish: its items (``mapped``: what :func:`partition_buckets` returned)
    that every bucket (``buckets``: what :func:`dedup_bucket` returned, in bucket order) kept,
    placed at global text ``text_start`` and token ``token_start``, per width, in position order."""
    out: dict[int, Items] = {}
    for h, held in mapped[2].items():
        flags = np.concatenate([_flags(bk[h][0], int(bk[h][1][j]), int(bk[h][1][j + 1])) for bk in buckets])
        it = held.items
        ids = it.ids
        if held.order is not None:  # from bucket order back to position order
            mask = np.empty(flags.size, dtype=bool)
            mask[held.order] = flags
            flags = mask
            ids = np.empty_like(it.ids)
            ids[held.order] = it.ids
        idx = np.flatnonzero(flags)
        out[h] = Items(np.take(it.blocks, idx, axis=0), ids[idx], it.positions[idx] + np.int64(token_start),
                       it.text_index[idx] + np.int64(text_start))
    return out


def merged_evidence(metas: list[PartitionEvidence], kept: list[dict[int, Items]], h: int) -> Evidence:
    """The corpus' evidence of width ``h`` from the partitions' tasks (:func:`partition_buckets`'
    first part, in corpus order) and their finishes (:func:`kept_items`): what
    :func:`fingerprint.verify.evidence.merge` gives for the partitions' own evidence, array for
    array. The finishes' width-``h`` items are dropped from ``kept`` as they are used."""
    text_start, token_start = _offsets(metas)
    parts = [k.pop(h) for k in kept]
    blocks = np.concatenate([it.blocks for it in parts])
    ids = np.concatenate([it.ids for it in parts])
    pos = np.concatenate([it.positions for it in parts])
    text = np.concatenate([it.text_index for it in parts])
    del parts
    return merge_distinct([placed_at(pe.evidence[h], int(text_start[j]), int(token_start[j]))
                           for j, pe in enumerate(metas)], blocks, ids, pos, text)


class Assembly:
    """The corpus' kept items, placed into whole-corpus arrays as each partition's finish
    (:func:`kept_items`) arrives, in any order (a partition waits for those before it), so that
    the copying overlaps the workers' work and the evidence is ready when the last one is in.
    :meth:`start` takes the partitions' tasks' first parts (corpus order) and gives each finish
    its offsets; :meth:`add` takes finish ``j``; :meth:`evidence` gives what
    :func:`merged_evidence` gives. The arrays are reserved at the partitions' item counts before
    de-duplication (untouched pages cost no memory) and the evidence holds their filled part."""

    def __init__(self) -> None:
        self.metas: list[PartitionEvidence] = []
        self._waiting: dict[int, dict[int, Items]] = {}
        self._next = 0
        self._arrays: dict[int, Items] = {}
        self._filled: dict[int, int] = {}

    def start(self, metas: list[PartitionEvidence]) -> list[tuple[int, int]]:
        self.metas = list(metas)
        return _finish_args(self.metas)

    def add(self, j: int, kept: dict[int, Items]) -> None:
        self._waiting[j] = kept
        while self._next in self._waiting:
            for h, it in self._waiting.pop(self._next).items():
                out = self._arrays.get(h)
                if out is None:
                    cap = sum(pe.evidence[h].counts.scored for pe in self.metas)
                    out = self._arrays[h] = Items(np.empty((cap, *it.blocks.shape[1:]), dtype=it.blocks.dtype),
                                                  np.empty(cap, dtype=it.ids.dtype), np.empty(cap, dtype=np.int64),
                                                  np.empty(cap, dtype=np.int64))
                    self._filled[h] = 0
                at, n = self._filled[h], len(it)
                out.blocks[at:at + n] = it.blocks
                out.ids[at:at + n] = it.ids
                out.positions[at:at + n] = it.positions
                out.text_index[at:at + n] = it.text_index
                self._filled[h] = at + n
            self._next += 1

    def evidence(self, h: int) -> Evidence:
        if self._next != len(self.metas) or h not in self._arrays:
            raise ParameterError(f"the corpus' items are not all in ({self._next} of {len(self.metas)} partitions)")
        text_start, token_start = _offsets(self.metas)
        n, it = self._filled[h], self._arrays[h]
        return merge_distinct([placed_at(pe.evidence[h], int(text_start[j]), int(token_start[j]))
                               for j, pe in enumerate(self.metas)], it.blocks[:n], it.ids[:n], it.positions[:n],
                              it.text_index[:n])


def bucket_counts(reduced: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict[int, np.ndarray]:
    """How many items each partition keeps in one bucket (what :func:`dedup_bucket` returned),
    per width, ``(P,)`` int64: a bucket's summary, small enough to travel to the driver."""
    out: dict[int, np.ndarray] = {}
    for h, (packed, starts) in reduced.items():
        cum = np.concatenate(([0], np.cumsum(np.unpackbits(packed, count=int(starts[-1])), dtype=np.int64)))
        out[h] = cum[starts[1:]] - cum[starts[:-1]]
    return out


@dataclass(frozen=True)
class SumsPlan:
    """What every partition's scoring needs (:func:`kept_sums`): the keys, the trajectory marks
    per context width ``(M,)`` (global token positions), and the decoys."""

    keys: tuple[WorkerKey, ...]
    marks: dict[int, np.ndarray]
    n_decoys: int
    decoy_seed: int


def kept_sums(mapped: MapResult, buckets: list[dict[int, tuple[np.ndarray, np.ndarray]]], j: int, text_start: int,
              token_start: int, plan: SumsPlan, grids: dict[int, np.ndarray]) -> list[ScoreSums]:
    """Partition ``j``'s finish when the statistic is summed where the items are: its kept items
    (:func:`kept_items`) scored by every key of ``plan`` and its decoys, one
    :class:`fingerprint.verify.pipeline.ScoreSums` per key (``grids``: the partition's e-process
    times per width, local item indices). Only these sums leave the worker."""
    kept = kept_items(mapped, buckets, j, text_start, token_start)
    n_texts = mapped[0].n_texts
    out = []
    for sent in plan.keys:
        key = sent.key()
        h = key.scheme_object().context_width
        it = kept[h]
        out.append(score_sums(key, it.blocks, it.positions, it.text_index, marks=plan.marks[h], grid=grids[h],
                              n_texts=n_texts, text_start=text_start, n_decoys=plan.n_decoys,
                              decoy_seed=plan.decoy_seed))
    return out


class Tally:
    """The driver's side of summed verification: :meth:`start` takes the partitions' tasks' first
    parts (corpus order) and the buckets' :func:`bucket_counts`, builds the corpus' evidence
    without items per width (:attr:`shells`) and gives each partition's finish its arguments;
    :meth:`add` keeps finish ``j``'s sums; :meth:`sums` gives them per key, in corpus order."""

    def __init__(self, keys: Sequence[FingerprintKey], options: VerifyOptions) -> None:
        self.keys = tuple(keys)
        self.options = options
        self.shells: dict[int, Evidence] = {}
        self._got: dict[int, list[ScoreSums]] = {}
        self._parts = 0

    def start(self, metas: list[PartitionEvidence], summaries: list[dict[int, np.ndarray]]
              ) -> list[tuple[int, int, SumsPlan, dict[int, np.ndarray]]]:
        text_start, token_start = _offsets(metas)
        self._parts = len(metas)
        item_start: dict[int, np.ndarray] = {}
        for h in (metas[0].evidence if metas else {}):
            kept = np.zeros(len(metas), dtype=np.int64)
            for counts in summaries:
                kept += counts[h]
            item_start[h] = np.concatenate(([0], np.cumsum(kept)))
            self.shells[h] = distinct_shell([placed_at(pe.evidence[h], int(text_start[j]), int(token_start[j]))
                                             for j, pe in enumerate(metas)], int(item_start[h][-1]))
        plan = SumsPlan(tuple(k.for_workers() for k in self.keys), {h: trajectory_marks_of(ev.n_tokens, self.options) for h, ev in self.shells.items()},
                        self.options.n_decoys, self.options.decoy_seed)
        grids = {h: eprocess_grid(int(starts[-1])) for h, starts in item_start.items()}
        out = []
        for j in range(len(metas)):
            mine = {}
            for h, g in grids.items():
                lo, hi = np.searchsorted(g, item_start[h][j:j + 2])
                mine[h] = g[lo:hi] - item_start[h][j]
            out.append((int(text_start[j]), int(token_start[j]), plan, mine))
        return out

    def add(self, j: int, sums: list[ScoreSums]) -> None:
        self._got[j] = sums

    def sums(self) -> list[list[ScoreSums]]:
        if len(self._got) != self._parts:
            raise ParameterError(f"the corpus' sums are not all in ({len(self._got)} of {self._parts} partitions)")
        return [[self._got[j][i] for j in range(self._parts)] for i in range(len(self.keys))]


def _finish_args(metas: list[PartitionEvidence]) -> list[tuple[int, int]]:
    text_start, token_start = _offsets(metas)
    return [(int(text_start[j]), int(token_start[j])) for j in range(len(metas))]


def _offsets(metas: list[PartitionEvidence]) -> tuple[np.ndarray, np.ndarray]:
    """Global index of each partition's first text and first token, ``(P + 1,)`` each."""
    return (np.concatenate(([0], np.cumsum([pe.n_texts for pe in metas]))).astype(np.int64),
            np.concatenate(([0], np.cumsum([pe.n_tokens for pe in metas]))).astype(np.int64))


@dataclass
class ScaledVerification:
    """The result of :func:`verify_partitions`: the verify result, the suspect inputs as the
    report lists them (files, skipped records, failed requests, stopping rules; no texts) and
    the number of partitions."""

    result: VerifyResult
    suspect: ExchangeSet
    partitions: int
    options: VerifyOptions


def verify_partitions(inputs: Sequence[str], keys: Sequence[FingerprintKey], tokenizer, *,
                      options: VerifyOptions = VerifyOptions(), columns: Columns = Columns(),
                      window_filters: dict[int, WindowFilter] | None = None, engine: Engine | None = None,
                      skip_invalid: bool = False, progress: Callable[[str], None] | None = None
                      ) -> ScaledVerification:
    """Verify the corpus of ``inputs`` (files, directories, globs: :func:`.sources.expand_inputs`)
    partition by partition, on ``engine``'s workers (``None``: in this process), in text mode.

    ``window_filters`` maps each context width to the served-window filter (the owner's served
    outputs, or a served-window index). Evidence gathered with a stopping rule
    (``collect --until-detected``) switches ``options.optional_stopping`` on, as the CLI does.
    """
    say = progress or (lambda _m: None)
    options.validate()
    if options.mode != "text":
        raise ParameterError(f"partitioned verification supports --mode text; mode {options.mode!r} reads logprobs "
                             f"per exchange (run it without --dask)")
    keys = list(keys)
    if not keys:
        raise ParameterError("at least one key is needed")
    notes = key_vocab_notes(tokenizer, keys)
    vocab = max(k.vocab_size for k in keys)
    widths = list(dict.fromkeys(k.scheme_object().context_width for k in keys))  # in key order, as verify()
    paths = expand_inputs(inputs)
    parts = plan_partitions(paths)
    say(f"{len(paths):,} file(s), {len(parts):,} partition(s)" + (f" on {engine.workers} Dask worker(s)"
                                                                   if engine is not None else ""))
    workers = 1 if engine is None else max(1, engine.workers)
    n_buckets = -(-max(1, -(-len(parts) // PARTITIONS_PER_BUCKET)) // workers) * workers
    map_args = (columns, str(tokenizer.source), getattr(tokenizer, "pattern", None), widths, vocab, window_filters,
                skip_invalid, n_buckets)
    summed = all(sums_are_exact(k) for k in keys) and (engine is None or engine.private)
    if engine is not None and not engine.private:
        say(f"the keys stay in this process ({engine.spec} is neither local nor tls://): the distinct tuples come "
            f"here to be scored")
    tally, assembly = Tally(keys, options), Assembly()
    if summed:  # every key's statistic is a sum of integer scores: score where the items are
        ordered, _ = run_shuffle(engine, partition_buckets, parts, map_args, dedup_bucket, n_buckets, kept_sums,
                                 tally.start, consume=tally.add, what="partitions", progress=progress,
                                 summarize_fn=bucket_counts, finish_what="scoring")
    else:
        ordered, _ = run_shuffle(engine, partition_buckets, parts, map_args, dedup_bucket, n_buckets, kept_items,
                                 assembly.start, consume=assembly.add, what="partitions", progress=progress)
    suspect = ExchangeSet(exchanges=[], files=files_of(parts, [pe.batch for pe in ordered],
                                                                    [pe.n_texts for pe in ordered]),
                          skipped=[s for pe in ordered for s in pe.batch.exchanges.skipped],
                          failed_requests=sum(pe.batch.exchanges.failed_requests for pe in ordered),
                          stopping_rules=[r for pe in ordered for r in pe.batch.exchanges.stopping_rules])
    if sum(pe.n_texts for pe in ordered) == 0:
        raise InputError("no suspect responses to verify (all inputs empty or skipped)")
    if suspect.stopping_rules and not options.optional_stopping:
        say(f"evidence gathered with a stopping rule ({suspect.stopping_rules[0]['file']}): the anytime-valid "
            f"p-value decides")
        options = replace(options, optional_stopping=True)
    filter_size = None if window_filters is None else len(window_filters[widths[-1]])
    chars = [pe.n_chars for pe in ordered]
    problem = None if None in chars else tokenizer_fit_problem(sum(c for c in chars if c is not None),
                                                               sum(pe.n_tokens for pe in ordered))
    if summed:
        result = verify_sums([tally.shells[h] for h in widths], tally.sums(), keys, options=options, notes=notes,
                             tokenizer_vocab_size=tokenizer.vocab_size, window_filter_size=filter_size,
                             input_problem=problem, progress=progress)
        return ScaledVerification(result, suspect, len(parts), options)
    say(f"merging partition evidence (global de-duplication in {n_buckets} hash bucket(s))")
    evidence = [assembly.evidence(h) for h in widths]
    del assembly
    result = verify_evidence(evidence, keys, options=options, notes=notes, tokenizer_vocab_size=tokenizer.vocab_size,
                             window_filter_size=filter_size, progress=progress, input_problem=problem,
                             decoy_runner=None if engine is None else task_runner(engine))
    return ScaledVerification(result, suspect, len(parts), options)
