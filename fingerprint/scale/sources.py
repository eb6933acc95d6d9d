"""Inputs at scale: directories, globs, JSONL and Parquet, cut into partitions in corpus order.

A *corpus* is an ordered list of files; its texts are numbered in that order (files in the
order given, a directory's or glob's files sorted by name, rows in file order). A
:class:`Partition` is a contiguous run of those texts: a whole JSONL / evidence / text file, or
one Parquet row group. Reading a partition gives a :class:`Batch`, which is what one worker
tokenizes and turns into evidence; reading every partition in order and concatenating is the
single-process path, so both paths see the same texts with the same ids.

Parquet (needs ``pyarrow``, the ``[scale]`` extra): columns are named by :class:`Columns`:
``response`` (string) or ``tokens`` (a list of integer token ids in the owner's vocabulary,
for logs kept as ids), and optionally ``prompt`` (string), ``messages`` (an OpenAI-style
messages list, as a prompt), ``prompt_tokens`` (ids) and ``id``. Remote paths (``s3://``,
``gs://``, ``https://`` ...) are opened with fsspec where it is installed.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..corpus import MAX_TEXT_CHARS, Exchange, ExchangeSet, InputFile, RecordError, SkippedRecord, messages_text, read_exchanges
from ..errors import InputError, ParameterError

__all__ = ["Columns", "Partition", "Batch", "expand_inputs", "plan_partitions", "read_partition", "read_corpus",
           "concat_batches", "file_digest", "PARQUET_SUFFIXES", "TEXT_SUFFIXES"]

PARQUET_SUFFIXES = (".parquet", ".pq")
#: The files a directory contributes (other files in it are ignored, and listed nowhere).
TEXT_SUFFIXES = (".jsonl", ".ndjson", ".json", ".txt") + PARQUET_SUFFIXES
#: Files next to evidence that are not inputs: signed manifests and collector locks.
SIDECAR_SUFFIXES = (".manifest.json", ".lock")


@dataclass(frozen=True)
class Columns:
    """Parquet column names (``None``: the column is not used)."""

    response: str | None = "response"
    prompt: str | None = "prompt"
    messages: str | None = None
    id: str | None = "id"
    tokens: str | None = None
    prompt_tokens: str | None = None

    def validate(self) -> "Columns":
        if (self.response is None) == (self.tokens is None):
            raise ParameterError("give exactly one of the response column (text) and the token column (ids)")
        if self.tokens is not None and (self.prompt is not None and self.prompt != "prompt" or self.messages):
            raise ParameterError("with a token column, prompts come as ids too (--prompt-token-column)")
        return self


@dataclass(frozen=True)
class Partition:
    """A contiguous run of the corpus' texts: a whole file, or one Parquet row group.

    ``number`` is its place in corpus order; ``first_row`` the row of the file it starts at."""

    path: str
    kind: str  # "records" (JSONL, evidence or plain text) or "parquet"
    number: int
    row_group: int | None = None
    first_row: int = 0
    rows: int | None = None


@dataclass
class Batch:
    """The texts of one partition: either strings (``exchanges``) or token ids.

    ``tokens`` ``(N,)`` with ``offsets`` ``(T + 1,)`` (and ``prompt_tokens``/``prompt_offsets``)
    when the input holds ids; ``text_ids`` names the ``T`` texts either way."""

    partition: Partition
    exchanges: ExchangeSet = field(default_factory=ExchangeSet)
    tokens: np.ndarray | None = None
    offsets: np.ndarray | None = None
    prompt_tokens: np.ndarray | None = None
    prompt_offsets: np.ndarray | None = None
    ids: list[str] = field(default_factory=list)

    @property
    def n_texts(self) -> int:
        return len(self.exchanges.exchanges) if self.tokens is None else len(self.ids)

    @property
    def text_ids(self) -> list[str]:
        return [e.id for e in self.exchanges.exchanges] if self.tokens is None else list(self.ids)


def _is_remote(p: str) -> bool:
    return "://" in p and not p.startswith("file://")


def _open(path: str):
    if _is_remote(path):
        try:
            import fsspec
        except ImportError:
            raise InputError(f"{path}: remote paths need fsspec (pip install 'fingerprint[scale]')") from None
        return fsspec.open(path, "rb").open()
    return open(path, "rb")


def expand_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Files of the inputs, in corpus order: a file as given, a directory's files (recursively,
    with a known suffix) and a glob's matches sorted by path. Raises :class:`InputError` naming
    an input that matches nothing."""
    out: list[str] = []
    for raw in inputs:
        p = str(raw)
        if _is_remote(p):
            if any(ch in p for ch in "*?["):
                import fsspec

                fs, _, paths = fsspec.get_fs_token_paths(p)
                if not paths:
                    raise InputError(f"{p}: matches no file")
                out.extend(fs.unstrip_protocol(q) for q in sorted(paths))
            else:
                out.append(p)
            continue
        path = Path(p)
        if path.is_dir():
            found = sorted(str(q) for q in path.rglob("*") if q.is_file() and q.suffix.lower() in TEXT_SUFFIXES
                           and not q.name.lower().endswith(SIDECAR_SUFFIXES))
            if not found:
                raise InputError(f"{p}: directory holds no input file ({', '.join(TEXT_SUFFIXES)})")
            out.extend(found)
        elif any(ch in p for ch in "*?["):
            found = sorted(q for q in glob.glob(p, recursive=True)
                           if Path(q).is_file() and not q.lower().endswith(SIDECAR_SUFFIXES))
            if not found:
                raise InputError(f"{p}: matches no file")
            out.extend(found)
        else:
            if not path.exists():
                raise InputError(f"{p}: cannot read: no such file or directory")
            out.append(p)
    seen: set[str] = set()
    for p in out:
        if p in seen:
            raise InputError(f"{p}: given twice (each input file is read once)")
        seen.add(p)
    return out


def _is_parquet(path: str) -> bool:
    return path.lower().endswith(PARQUET_SUFFIXES)


def _parquet_file(path: str):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{path}: Parquet input needs pyarrow (pip install 'fingerprint[scale]')") from None
    try:
        return pq.ParquetFile(_open(path))
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from None


def plan_partitions(paths: Sequence[str]) -> list[Partition]:
    """One partition per JSONL/text file and per Parquet row group, numbered in corpus order."""
    parts: list[Partition] = []
    for path in paths:
        if _is_parquet(path):
            meta = _parquet_file(path).metadata
            first = 0
            for g in range(meta.num_row_groups):
                rows = meta.row_group(g).num_rows
                parts.append(Partition(path, "parquet", len(parts), g, first, rows))
                first += rows
        else:
            parts.append(Partition(path, "records", len(parts)))
    return parts


def file_digest(path: str) -> str:
    """Hex SHA-256 of a (local or remote) file's bytes."""
    h = hashlib.sha256()
    with _open(path) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _ids_column(col, path: str, name: str, first_row: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat ids ``(N,)`` and offsets ``(T + 1,)`` of a list<int> column."""
    import pyarrow as pa

    arr = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)) or not pa.types.is_integer(
            arr.type.value_type):
        raise InputError(f"{path}: column {name!r} must be a list of integer token ids, got {arr.type}")
    if arr.null_count:
        row = first_row + int(np.flatnonzero(np.asarray(arr.is_null()))[0])
        raise InputError(f"{path} row {row}: column {name!r} is null")
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    values = np.asarray(arr.values.to_numpy(zero_copy_only=False), dtype=np.int64)[offsets[0]:offsets[-1]]
    return values, offsets - offsets[0]


def _read_parquet(part: Partition, columns: Columns, *, skip_invalid: bool, require_prompt: bool) -> Batch:
    path = part.path
    pf = _parquet_file(path)
    present = set(pf.schema_arrow.names)
    named = [c for c in (columns.response, columns.tokens, columns.messages, columns.prompt_tokens) if c]
    if columns.prompt and columns.prompt in present and not columns.messages:
        named.append(columns.prompt)
    elif require_prompt and columns.response and not columns.messages:
        raise InputError(f"{path}: column {columns.prompt!r} missing (columns: {', '.join(sorted(present))}); "
                         f"name the prompt column, or the messages column")
    if columns.id and columns.id in present:
        named.append(columns.id)
    for c in named:
        if c not in present:
            raise InputError(f"{path}: column {c!r} missing (columns: {', '.join(sorted(present))})")
    wanted = named
    table = pf.read_row_group(part.row_group, columns=wanted)
    n = table.num_rows
    rows = range(part.first_row, part.first_row + n)
    name = Path(path).name if not _is_remote(path) else path.rsplit("/", 1)[-1]
    ids = ([str(v) if v is not None else f"{name}#{r}" for v, r in zip(table.column(columns.id).to_pylist(), rows)]
           if columns.id in wanted else [f"{name}#{r}" for r in rows])
    batch = Batch(part)
    if columns.tokens:
        batch.tokens, batch.offsets = _ids_column(table.column(columns.tokens), path, columns.tokens, part.first_row)
        if columns.prompt_tokens:
            batch.prompt_tokens, batch.prompt_offsets = _ids_column(table.column(columns.prompt_tokens), path,
                                                                    columns.prompt_tokens, part.first_row)
        else:
            batch.prompt_tokens, batch.prompt_offsets = np.zeros(0, np.int64), np.zeros(n + 1, np.int64)
        batch.ids = ids
        return batch
    responses = table.column(columns.response).to_pylist()
    if columns.messages:
        raw_prompts = table.column(columns.messages).to_pylist()
    elif columns.prompt in wanted:
        raw_prompts = table.column(columns.prompt).to_pylist()
    else:
        raw_prompts = [None] * n
    es = batch.exchanges
    for rid, row, resp, prm in zip(ids, rows, responses, raw_prompts):
        try:
            if not isinstance(resp, str):
                raise ValueError(f"column {columns.response!r} must be a string, got "
                                 f"{'null' if resp is None else type(resp).__name__}")
            if not resp.strip():
                raise ValueError(f"column {columns.response!r} is empty")
            if len(resp) > MAX_TEXT_CHARS:
                raise ValueError(f"a text of {len(resp):,} characters exceeds the limit of {MAX_TEXT_CHARS:,}")
            if prm is None:
                if require_prompt:
                    raise ValueError(f"column {columns.messages or columns.prompt!r} is null")
                prompt = ""
            elif isinstance(prm, str):
                prompt = prm
            else:
                prompt = messages_text(list(prm), columns.messages or columns.prompt or "prompt")
        except (ValueError, RecordError) as exc:  # a bad row
            if not skip_invalid:
                raise InputError(f"{path} row {row}: {exc}") from None
            es.skipped.append(SkippedRecord(path, row, str(exc)))
            continue
        es.exchanges.append(Exchange(rid, prompt, resp, f"{path}#{row}"))
    return batch


def read_partition(part: Partition, columns: Columns = Columns(), *, skip_invalid: bool = False,
                   require_prompt: bool = True) -> Batch:
    """The texts of one partition (a :class:`Batch`). The file digest is not computed here
    (see :func:`file_digest`): records files carry theirs, Parquet files get one per file."""
    if part.kind == "parquet":
        return _read_parquet(part, columns, skip_invalid=skip_invalid, require_prompt=require_prompt)
    if _is_remote(part.path):
        raise InputError(f"{part.path}: remote JSONL is not supported; copy it locally or convert it to Parquet")
    es = read_exchanges([part.path], skip_invalid=skip_invalid, require_prompt=require_prompt)
    return Batch(part, es)


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """Batches of consecutive partitions as one (all text, or all ids)."""
    if not batches:
        raise InputError("no input partitions")
    kinds = {b.tokens is None for b in batches}
    if len(kinds) > 1:
        raise InputError("inputs mix text and token-id files; give one kind")
    out = Batch(batches[0].partition)
    if batches[0].tokens is None:
        for b in batches:
            out.exchanges.exchanges.extend(b.exchanges.exchanges)
            out.exchanges.skipped.extend(b.exchanges.skipped)
            out.exchanges.failed_requests += b.exchanges.failed_requests
            out.exchanges.stopping_rules.extend(b.exchanges.stopping_rules)
        return out
    out.tokens = np.concatenate([b.tokens for b in batches if b.tokens is not None])
    out.offsets = _join_offsets([b.offsets for b in batches])
    out.prompt_tokens = np.concatenate([b.prompt_tokens for b in batches if b.prompt_tokens is not None])
    out.prompt_offsets = _join_offsets([b.prompt_offsets for b in batches])
    out.ids = [i for b in batches for i in b.ids]
    return out


def _join_offsets(parts: Sequence[np.ndarray | None]) -> np.ndarray:
    pieces, base = [np.zeros(1, np.int64)], 0
    for o in parts:
        assert o is not None
        pieces.append(o[1:] + base)
        base += int(o[-1])
    return np.concatenate(pieces)


def input_files(parts: Sequence[Partition], batches_records: dict[str, int], digests: dict[str, str],
                formats: dict[str, str]) -> list[InputFile]:
    """One :class:`InputFile` per file of the partitions, in corpus order."""
    out, seen = [], set()
    for p in parts:
        if p.path in seen:
            continue
        seen.add(p.path)
        out.append(InputFile(p.path, digests[p.path], formats[p.path], batches_records.get(p.path, 0)))
    return out


def read_corpus(inputs: Sequence[str | os.PathLike[str]], columns: Columns = Columns(), *,
                skip_invalid: bool = False, require_prompt: bool = True) -> tuple[Batch, list[Partition]]:
    """The whole corpus in one process: every partition read in order and concatenated, with
    every file's :class:`InputFile` (digest, format, records) in ``exchanges.files``."""
    paths = expand_inputs(inputs)
    parts = plan_partitions(paths)
    batches = [read_partition(p, columns, skip_invalid=skip_invalid, require_prompt=require_prompt) for p in parts]
    out = concat_batches(batches)
    out.exchanges.files = files_of(parts, batches)
    return out, parts


def files_of(parts: Sequence[Partition], batches: Sequence[Batch], rows: Sequence[int] | None = None,
             digests: dict[str, str] | None = None) -> list[InputFile]:
    """The :class:`InputFile` of every input file, from its partitions' batches (``rows``: the
    texts each partition held, when the batches no longer hold them)."""
    records: dict[str, int] = {}
    formats: dict[str, str] = {}
    digest = dict(digests or {})
    for j, (p, b) in enumerate(zip(parts, batches)):
        if p.kind == "parquet":
            records[p.path] = records.get(p.path, 0) + (b.n_texts if rows is None else rows[j])
            formats[p.path] = "parquet"
            if p.path not in digest:
                digest[p.path] = file_digest(p.path)
        else:
            f = b.exchanges.files[0]
            records[p.path], formats[p.path], digest[p.path] = f.records, f.format, f.sha256
    return input_files(parts, records, digest, formats)
