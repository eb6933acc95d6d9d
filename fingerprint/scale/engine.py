"""Verify a corpus partition by partition, on Dask workers or in this process, exactly.

Each partition (a file, or a Parquet row group: :mod:`.sources`) is one task: read, tokenize
with the owner's tokenizer, build the text evidence of every context width the keys use
(prompt windows excluded, the served-window filter applied, de-duplicated within the
partition), numbered from 0. The driver places every shard at its global text and token
offset (known once all shard sizes are) and merges them
(:func:`fingerprint.verify.evidence.merge`: de-duplication stays global, the first position of
a tuple anywhere in the corpus wins). One exact test then runs over the whole corpus, with its
decoys, exactly as :func:`fingerprint.verify.verify_exchanges` runs it in one process: the
two give the same report, number for number.

What travels: a task takes a partition's address and returns the distinct surviving tuples of
that partition (about 40 bytes each: the tuple, its id, position and text); the driver holds the
merged distinct tuples of the corpus and scores them with the keys. The decoy keys (the bulk of
the scoring: 100 keys by default) run on the workers: each task scores one slice of the items
(at most :data:`fingerprint.verify.pipeline.DECOY_SLICE_ITEMS`) with 25 decoys and returns
their sums per trajectory segment, so a worker holds a slice, never the whole corpus. (Schemes
whose decoys de-duplicate per key, hf-kgw, send the whole evidence to the tasks instead.)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from ..corpus import ExchangeSet
from ..errors import InputError, ParameterError
from ..keys import FingerprintKey
from ..tokenize import load_tokenizer
from ..verify import (Evidence, VerifyOptions, VerifyResult, key_vocab_notes, merge, placed_at, text_evidence,
                      tokenizer_fit_problem, verify_evidence)
from ..windows import WindowFilter
from .cluster import Engine, run_ordered, task_runner
from .sources import Batch, Columns, Partition, expand_inputs, files_of, plan_partitions, read_partition

__all__ = ["PartitionEvidence", "ScaledVerification", "partition_evidence", "verify_partitions"]


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
    got: dict[int, PartitionEvidence] = {}
    for i, pe in run_ordered(engine, partition_evidence, parts, columns, str(tokenizer.source),
                             getattr(tokenizer, "pattern", None), widths, vocab, window_filters, skip_invalid,
                             what="partitions", progress=progress):
        got[i] = pe
    ordered = [got[i] for i in range(len(parts))]
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
    text_start = np.concatenate(([0], np.cumsum([pe.n_texts for pe in ordered])))
    token_start = np.concatenate(([0], np.cumsum([pe.n_tokens for pe in ordered])))
    say("merging partition evidence (global de-duplication)")
    evidence = [merge(*[placed_at(pe.evidence[h], int(text_start[j]), int(token_start[j]))
                        for j, pe in enumerate(ordered)]) for h in widths]
    filter_size = None if window_filters is None else len(window_filters[widths[-1]])
    chars = [pe.n_chars for pe in ordered]
    problem = None if None in chars else tokenizer_fit_problem(sum(c for c in chars if c is not None),
                                                               int(token_start[-1]))
    result = verify_evidence(evidence, keys, options=options, notes=notes, tokenizer_vocab_size=tokenizer.vocab_size,
                             window_filter_size=filter_size, progress=progress, input_problem=problem,
                             decoy_runner=None if engine is None else task_runner(engine))
    return ScaledVerification(result, suspect, len(parts), options)
