"""The served-window index: the set of context windows in the owner's served outputs, on disk.

``verify --served X.idx`` scores only the suspect's tuples whose window the owner served. The
index holds exactly the set :meth:`fingerprint.windows.WindowFilter.from_tokens` builds in
memory from the served responses (same unkeyed window ids, so the same ``len`` and the same
``contains`` answers for the same texts, tokenizer and ``V``), but it is built out of core, on
Dask or in this process, and grows by appending generations.

Layout of an index directory ``X.idx/``::

    manifest.json            format "fingerprint-window-index", version 1, vocab_size, tokenizer_sha256
                             (null when the inputs were token ids), widths, buckets, generations
    g00000/h2-b017.npy       generation 0, width h = 2, bucket 17: sorted distinct uint64 window ids
    g00001/...               generation 1: only windows absent from every earlier generation

A window id goes to bucket ``mix64(id) % buckets`` (:func:`bucket_of`, a fixed unkeyed mixer).
Generations are disjoint, so the window count of width ``h`` is the sum of its shards' lengths.
A generation lists the source files it indexed (path, sha256, records, tokens, skipped) and,
per width, the windows it added (in all, and per bucket).

Building (:func:`build_index`) runs in two phases of tasks (:func:`~.cluster.run_ordered`):

1. per partition (a file, or a Parquet row group): read it, tokenize its responses, and write
   the distinct window ids of every width, grouped by bucket, as a run file in
   ``building-gNNNNN/``;
2. per (width, bucket): gather that bucket's slice of every run, de-duplicate, drop the windows
   earlier generations hold, write the shard ``gNNNNN/hH-bBBB.npy``.

Only then is the new manifest written (temporary file, then ``os.replace``), and the runs
deleted. A build that dies leaves the previous manifest, and so the previous index, valid; the
next build removes what the unfinished generation left. Memory per task: one partition (read
in chunks of texts), or one bucket. With a Dask cluster, the index directory and the inputs must
be on a file system every worker sees.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..corpus import sha256_file
from ..errors import InputError, ParameterError
from ..prf import MAX_CONTEXT_WIDTH
from ..secretfiles import fsync_dir
from ..tokenize import load_tokenizer
from ..windows import WindowFilter, is_member, tuple_table
from .cluster import Engine, run_ordered
from .sources import Columns, Partition, expand_inputs, file_digest, plan_partitions, read_partition

__all__ = ["FORMAT", "VERSION", "DEFAULT_BUCKETS", "WindowIndex", "Generation", "IndexedWindowFilter",
           "build_index", "is_index", "mix64", "bucket_of", "PartitionRuns", "BucketJob", "index_partition",
           "merge_bucket"]

FORMAT = "fingerprint-window-index"
VERSION = 1
DEFAULT_BUCKETS = 64
MANIFEST = "manifest.json"
#: Texts are tokenized and windowed this many at a time inside a partition's task.
CHUNK_TEXTS = 8192
#: Shards of at most this many ids are read into memory; larger ones are memory-mapped.
MMAP_MIN_IDS = 1 << 17

_GEN_DIR = re.compile(r"^g\d{5,}$")
_BUILD_DIR = re.compile(r"^building-g\d{5,}$")
_LOCK = ".lock"

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(ids: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer, an unkeyed bijection of uint64: ``(n,)`` -> ``(n,)`` uint64.

    Part of the on-disk format (version 1): it places window ids in buckets."""
    x = np.asarray(ids, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def bucket_of(ids: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket of each window id, ``mix64(id) % buckets``: ``(n,)`` uint64 -> ``(n,)`` int64."""
    return (mix64(ids) % np.uint64(buckets)).astype(np.int64)


def _group_by_bucket(ids: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """A stable order ``(n,)`` that groups ids ``(n,)`` by bucket, and the groups' bounds
    ``(buckets + 1,)`` int64: bucket ``b`` is ``ids[order[cuts[b]:cuts[b + 1]]]``."""
    b = bucket_of(ids, buckets)
    order = np.argsort(b.astype(np.uint16) if buckets <= 1 << 16 else b, kind="stable")
    cuts = np.concatenate(([0], np.cumsum(np.bincount(b, minlength=buckets)))).astype(np.int64)
    return order, cuts


def _distinct(ids: np.ndarray) -> np.ndarray:
    s = np.sort(np.asarray(ids, dtype=np.uint64))
    if s.size > 1:
        s = s[np.concatenate(([True], s[1:] != s[:-1]))]
    return s


def _gen_dir(number: int) -> str:
    return f"g{number:05d}"


def _shard_name(h: int, bucket: int) -> str:
    return f"h{h}-b{bucket:03d}.npy"


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- reading ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Generation:
    """One build's contribution to an index.

    ``windows[h]`` is the number of windows of width ``h`` it added (absent from every earlier
    generation), ``bucket_windows[h]`` the same per bucket (a tuple of ``buckets`` counts);
    ``sources`` lists the files it indexed as manifest entries (``path``, ``sha256``,
    ``records``, ``tokens``, ``skipped``)."""

    number: int
    created_at: str
    sources: tuple[dict[str, Any], ...]
    windows: dict[int, int]
    bucket_windows: dict[int, tuple[int, ...]]

    @property
    def directory(self) -> str:
        return _gen_dir(self.number)

    def as_json(self) -> dict[str, Any]:
        return {"number": self.number, "created_at": self.created_at, "sources": [dict(s) for s in self.sources],
                "windows": {str(h): n for h, n in self.windows.items()},
                "bucket_windows": {str(h): list(c) for h, c in self.bucket_windows.items()}}


class WindowIndex:
    """An opened served-window index (see the module docstring); read-only.

    Attributes: ``path``, ``manifest_path``, ``vocab_size`` (V), ``widths`` (the context widths
    indexed, ascending), ``tokenizer_sha256`` (None: built from token ids), ``buckets`` and
    ``generations`` (oldest first)."""

    def __init__(self, path: Path, vocab_size: int, widths: tuple[int, ...], tokenizer_sha256: str | None,
                 buckets: int, generations: tuple[Generation, ...]) -> None:
        self.path = path
        self.vocab_size = vocab_size
        self.widths = widths
        self.tokenizer_sha256 = tokenizer_sha256
        self.buckets = buckets
        self.generations = generations

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "WindowIndex":
        """Read and check an index's manifest, and that every shard it names exists.

        Raises :class:`InputError` naming the file for a missing or corrupt manifest or shard."""
        root = Path(path)
        manifest = root / MANIFEST
        if not root.is_dir():
            raise InputError(f"{root}: no such index directory")
        try:
            raw = json.loads(manifest.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{manifest}: missing; {root} is not a served-window index "
                             f"(build one with: fingerprint index build)") from None
        except OSError as exc:
            raise InputError(f"{manifest}: cannot read: {exc.strerror}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{manifest}: not valid JSON ({exc})") from None
        index = cls._from_manifest(root, raw)
        for g in index.generations:
            for h in index.widths:
                for b in range(index.buckets):
                    shard = root / g.directory / _shard_name(h, b)
                    if not shard.is_file():
                        raise InputError(f"{shard}: shard missing (the manifest lists generation {g.number}, "
                                         f"width {h}, bucket {b})")
        return index

    @classmethod
    def _from_manifest(cls, root: Path, raw: Any) -> "WindowIndex":
        where = root / MANIFEST
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise InputError(f"{where}: not a {FORMAT} manifest (field \"format\")")
        if raw.get("version") != VERSION:
            raise InputError(f"{where}: format version {raw.get('version')!r}; this fingerprint reads version "
                             f"{VERSION}")
        try:
            vocab = _int_field(raw, "vocab_size", where, low=2)
            buckets = _int_field(raw, "buckets", where, low=1)
            widths = raw["widths"]
            if (not isinstance(widths, list) or not widths or len(set(widths)) != len(widths)
                    or not all(isinstance(h, int) and 0 <= h <= MAX_CONTEXT_WIDTH for h in widths)):
                raise InputError(f"{where}: field \"widths\" must list distinct context widths, got {widths!r}")
            tok = raw["tokenizer_sha256"]
            if tok is not None and not (isinstance(tok, str) and re.fullmatch(r"[0-9a-f]{64}", tok)):
                raise InputError(f"{where}: field \"tokenizer_sha256\" must be a hex SHA-256 or null")
            gens = []
            for i, g in enumerate(raw["generations"]):
                counts = {int(h): int(n) for h, n in g["windows"].items()}
                per_bucket = {int(h): tuple(int(x) for x in c) for h, c in g["bucket_windows"].items()}
                if set(counts) != set(widths) or set(per_bucket) != set(widths) or any(
                        len(per_bucket[h]) != buckets or sum(per_bucket[h]) != counts[h] for h in widths):
                    raise InputError(f"{where}: generation {i}: window counts do not match widths {widths} and "
                                     f"{buckets} buckets")
                sources = tuple(dict(s) for s in g["sources"])
                for s in sources:
                    if not isinstance(s.get("path"), str) or not isinstance(s.get("sha256"), str):
                        raise InputError(f"{where}: generation {i}: a source lacks its path or sha256")
                gens.append(Generation(int(g["number"]), str(g["created_at"]), sources, counts, per_bucket))
        except KeyError as exc:
            raise InputError(f"{where}: field {exc.args[0]!r} missing") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{where}: malformed generations ({exc})") from None
        if [g.number for g in gens] != sorted({g.number for g in gens}):
            raise InputError(f"{where}: generation numbers must increase")
        return cls(root, vocab, tuple(sorted(widths)), tok, buckets, tuple(gens))

    def as_json(self) -> dict[str, Any]:
        """The manifest's content."""
        return {"format": FORMAT, "version": VERSION, "vocab_size": self.vocab_size,
                "tokenizer_sha256": self.tokenizer_sha256, "widths": list(self.widths), "buckets": self.buckets,
                "generations": [g.as_json() for g in self.generations]}

    def n_windows(self, h: int) -> int:
        """Distinct windows of width ``h`` in the index."""
        self._check_width(h)
        return sum(g.windows[h] for g in self.generations)

    @property
    def sources(self) -> list[dict[str, Any]]:
        """Every indexed file's manifest entry (``path``, ``sha256``, ``records``, ``tokens``,
        ``skipped``), oldest generation first."""
        return [dict(s) for g in self.generations for s in g.sources]

    def shard_paths(self, h: int) -> list[Path]:
        """The shard files of width ``h``, in (generation, bucket) order."""
        self._check_width(h)
        return [self.path / g.directory / _shard_name(h, b) for g in self.generations for b in range(self.buckets)]

    @property
    def nbytes(self) -> int:
        """Size on disk: the manifest and every shard, in bytes."""
        return self.manifest_path.stat().st_size + sum(p.stat().st_size for h in self.widths
                                                       for p in self.shard_paths(h))

    def _check_width(self, h: int) -> None:
        if h not in self.widths:
            raise ParameterError(f"{self.path}: context width {h} is not indexed (widths: "
                                 f"{', '.join(map(str, self.widths))}); rebuild with -H {h}")

    def window_filter(self, h: int, vocab_size: int) -> WindowFilter:
        """The windows of width ``h`` as a :class:`~fingerprint.windows.WindowFilter` (an
        :class:`IndexedWindowFilter`).

        ``vocab_size`` must be the index's (window ids depend on V); raises
        :class:`ParameterError` otherwise, or when ``h`` is not indexed."""
        if int(vocab_size) != self.vocab_size:
            raise ParameterError(f"{self.path}: index built for vocab_size {self.vocab_size}, the key has "
                                 f"{vocab_size}; window ids differ, rebuild the index with --vocab-size {vocab_size}")
        self._check_width(h)
        return IndexedWindowFilter(self, h)


def _int_field(raw: dict[str, Any], name: str, where: Path, *, low: int) -> int:
    value = raw[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InputError(f"{where}: field {name!r} must be an integer >= {low}, got {value!r}")
    return value


def is_index(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory holding a served-window index manifest."""
    manifest = Path(path) / MANIFEST
    try:
        with open(manifest, encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and raw.get("format") == FORMAT


def _load_shard(path: Path, expected: int) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r" if expected > MMAP_MIN_IDS else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable shard ({exc})") from None
    if arr.dtype != np.uint64 or arr.ndim != 1 or arr.shape[0] != expected:
        raise InputError(f"{path}: shard holds {arr.shape} {arr.dtype}, the manifest says ({expected},) uint64")
    return arr


class IndexedWindowFilter(WindowFilter):
    """The windows of one width of a :class:`WindowIndex`: a drop-in
    :class:`~fingerprint.windows.WindowFilter` (``context_width``, ``len``, ``contains``) that
    reads the shards (memory-mapped when large) instead of holding the set.

    Pickles as (index path, width, generations), so sending it to Dask workers sends no ids;
    a worker reopens the index (on a shared file system) and sees the same generations."""

    def __init__(self, index: WindowIndex, context_width: int, *, n_generations: int | None = None) -> None:
        self.context_width = int(context_width)
        self._path = index.path
        self._gens = index.generations[:n_generations] if n_generations is not None else index.generations
        self._buckets = index.buckets
        h = self.context_width
        self._shards: list[list[np.ndarray]] = [
            [_load_shard(index.path / g.directory / _shard_name(h, b), g.bucket_windows[h][b])
             for g in self._gens if g.bucket_windows[h][b]]
            for b in range(index.buckets)]
        self._size = sum(g.windows[h] for g in self._gens)

    def __reduce__(self) -> tuple[Any, ...]:
        last = self._gens[-1].created_at if self._gens else ""
        return _reopen_filter, (str(self._path.resolve()), self.context_width, len(self._gens), last)

    def __len__(self) -> int:
        return self._size

    def contains(self, window_ids: np.ndarray) -> np.ndarray:
        """Membership of window ids ``(n,)`` uint64 -> ``(n,)`` bool (all true for ``h = 0``)."""
        ids = np.asarray(window_ids, dtype=np.uint64)
        if self.context_width == 0:
            return np.ones(ids.shape, dtype=bool)
        flat = ids.ravel()
        order, cuts = _group_by_bucket(flat, self._buckets)
        grouped = flat[order]
        hit = np.zeros(flat.size, dtype=bool)
        for b in np.flatnonzero(np.diff(cuts)):
            lo, hi = int(cuts[b]), int(cuts[b + 1])
            for shard in self._shards[b]:
                hit[lo:hi] |= is_member(grouped[lo:hi], shard)
        out = np.empty(flat.size, dtype=bool)
        out[order] = hit
        return out.reshape(ids.shape)


@functools.lru_cache(maxsize=16)
def _reopen_filter(path: str, context_width: int, n_generations: int, last_created_at: str) -> IndexedWindowFilter:
    """An unpickled filter: the same index, cut to the generations it had when pickled."""
    index = WindowIndex.open(path)
    gens = index.generations
    if len(gens) < n_generations or (n_generations and gens[n_generations - 1].created_at != last_created_at):
        raise InputError(f"{path}: the index changed since its window filter was opened (rebuilt, or not on a "
                         f"file system this worker shares)")
    return IndexedWindowFilter(index, context_width, n_generations=n_generations)


# ---- building: the tasks ------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _tokenizer(path: str, pattern: str | None, mtime_ns: int) -> Any:
    return load_tokenizer(path, tiktoken_pattern=pattern)


@dataclass(frozen=True)
class PartitionRuns:
    """What one partition's task returns: what it read, and per width its run file and where
    each bucket's ids start in it (``cuts[h]``: ``(buckets + 1,)`` int64)."""

    number: int
    path: str
    records: int
    tokens: int
    skipped: int
    sha256: str | None
    runs: dict[int, str]
    cuts: dict[int, np.ndarray]


@dataclass(frozen=True)
class BucketJob:
    """One phase-2 task: gather bucket ``bucket`` of width ``h`` from the runs (``(path, start,
    stop)`` slices), drop the ids in ``older`` shards, write ``out``."""

    h: int
    bucket: int
    runs: tuple[tuple[str, int, int], ...]
    older: tuple[tuple[str, int], ...]
    out: str


def _token_chunks(batch_tokens: np.ndarray, offsets: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    n = offsets.size - 1
    for i in range(0, n, CHUNK_TEXTS):
        j = min(n, i + CHUNK_TEXTS)
        yield batch_tokens[offsets[i]:offsets[j]], offsets[i:j + 1] - offsets[i]


def _check_vocab(tokens: np.ndarray, offsets: np.ndarray, vocab_size: int, part: Partition, first_text: int) -> None:
    if tokens.size == 0:
        return
    bad = (tokens < 0) | (tokens >= vocab_size)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        text = int(np.searchsorted(offsets, pos, side="right") - 1)
        raise InputError(f"{part.path} row {part.first_row + first_text + text}: token id {int(tokens[pos])} is "
                         f"outside the vocabulary [0, {vocab_size})")


def index_partition(part: Partition, columns: Columns, tokenizer_path: str | None, tiktoken_pattern: str | None,
                    vocab_size: int, widths: Sequence[int], buckets: int, run_dir: str,
                    skip_invalid: bool) -> PartitionRuns:
    """Phase 1, one partition (module-level, so Dask can run it on any worker): the distinct
    window ids of every width in its responses, grouped by bucket, written to ``run_dir``."""
    batch = read_partition(part, columns, skip_invalid=skip_invalid, require_prompt=False)
    pending: dict[int, list[np.ndarray]] = {h: [] for h in widths}
    n_tokens = 0
    if batch.tokens is None:
        if tokenizer_path is None:
            raise ParameterError(f"{part.path}: holds text; indexing it needs the tokenizer")
        tok = _tokenizer(tokenizer_path, tiktoken_pattern, os.stat(tokenizer_path).st_mtime_ns)
        responses = batch.exchanges.responses
        chunks: Iterator[tuple[np.ndarray, np.ndarray]] = (
            tok.encode_batch(responses[i:i + CHUNK_TEXTS]) for i in range(0, len(responses), CHUNK_TEXTS))
        sha = batch.exchanges.files[0].sha256 if batch.exchanges.files else None
        skipped = len(batch.exchanges.skipped)
    else:
        assert batch.offsets is not None
        chunks = _token_chunks(batch.tokens, batch.offsets)
        sha, skipped = None, 0
    first_text = 0
    for tokens, offsets in chunks:
        _check_vocab(tokens, offsets, vocab_size, part, first_text)
        first_text += offsets.size - 1
        n_tokens += int(tokens.size)
        for h in widths:
            pending[h].append(_distinct(tuple_table(tokens, offsets, h, vocab_size=vocab_size).window_ids))
    runs, cuts = {}, {}
    for h in widths:
        ids = _distinct(np.concatenate(pending.pop(h) or [np.zeros(0, np.uint64)]))
        order, cuts[h] = _group_by_bucket(ids, buckets)
        runs[h] = os.path.join(run_dir, f"p{part.number:07d}-h{h}.npy")
        np.save(runs[h], ids[order])
    return PartitionRuns(part.number, part.path, batch.n_texts, n_tokens, skipped, sha, runs, cuts)


def merge_bucket(job: BucketJob) -> int:
    """Phase 2, one (width, bucket) (module-level, for Dask): the new shard; returns its length."""
    pieces = [np.array(np.load(path, mmap_mode="r")[start:stop]) for path, start, stop in job.runs]
    ids = _distinct(np.concatenate(pieces)) if pieces else np.zeros(0, np.uint64)
    for path, n in job.older:
        if ids.size and n:
            ids = ids[~is_member(ids, _load_shard(Path(path), n))]
    with open(job.out, "wb") as fh:
        np.save(fh, ids)
        fh.flush()
        os.fsync(fh.fileno())
    return int(ids.size)


# ---- building: the driver -----------------------------------------------------------------------

@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform
        yield
        return
    with open(root / _LOCK, "a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"{root}: another build is writing this index") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _ours(name: str) -> bool:
    return (name in (MANIFEST, _LOCK) or name.startswith(MANIFEST + ".tmp") or bool(_GEN_DIR.match(name))
            or bool(_BUILD_DIR.match(name)))


def _remove_leftovers(root: Path, keep: set[str]) -> list[str]:
    """Remove what unfinished builds left (generation and run folders the manifest does not
    list, temporary manifests); returns their names."""
    removed = []
    for entry in sorted(root.iterdir()):
        name = entry.name
        if name in keep or name in (MANIFEST, _LOCK) or not _ours(name):
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(name)
    return removed


def _discard_generation(root: Path, number: int) -> None:
    """Best-effort removal of an unfinished generation's folders (a failed build)."""
    for name in (_gen_dir(number), f"building-{_gen_dir(number)}"):
        shutil.rmtree(root / name, ignore_errors=True)


def _write_manifest(root: Path, doc: dict[str, Any]) -> None:
    tmp = root / f"{MANIFEST}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / MANIFEST)
    fsync_dir(root)


def _check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    out = []
    for h in widths:
        if not isinstance(h, (int, np.integer)) or isinstance(h, bool) or not 0 <= h <= MAX_CONTEXT_WIDTH:
            raise ParameterError(f"context width {h!r}: must be an integer in [0, {MAX_CONTEXT_WIDTH}]")
        out.append(int(h))
    if not out:
        raise ParameterError("give at least one context width")
    if len(set(out)) != len(out):
        raise ParameterError(f"context widths {out}: each once")
    return tuple(sorted(out))


def _tokenizer_digest(tokenizer: Any) -> str:
    source = getattr(tokenizer, "source", None)
    if not source or not Path(source).is_file():
        raise ParameterError(f"the tokenizer must be loaded from a file (its source is {source!r}): tasks load "
                             f"it by path and the index records its SHA-256")
    return sha256_file(source)


def _prior_index(root: Path, append: bool) -> WindowIndex | None:
    """The index to append to (append), or None after checking ``root`` may hold a new one."""
    if append:
        if not (root / MANIFEST).is_file():
            raise InputError(f"{root}: no index to append to ({MANIFEST} missing); build it first without --append")
        return WindowIndex.open(root)
    if (root / MANIFEST).exists():
        raise InputError(f"{root}: already a served-window index; add files to it with --append "
                         f"(append=True), or give a new directory")
    foreign = sorted(e.name for e in root.iterdir() if not _ours(e.name))
    if foreign:
        raise InputError(f"{root}: directory is not empty ({', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}); give a new or empty directory")
    return None


def _check_compatible(prior: WindowIndex, vocab_size: int, widths: tuple[int, ...], tok_sha: str | None,
                      buckets: int) -> None:
    where = prior.path
    if prior.vocab_size != vocab_size:
        raise ParameterError(f"{where}: index has vocab_size {prior.vocab_size}, this build {vocab_size}")
    if prior.widths != widths:
        raise ParameterError(f"{where}: index has context widths {list(prior.widths)}, this build {list(widths)}")
    if prior.tokenizer_sha256 != tok_sha:
        def name(s: str | None) -> str:
            return "token ids (no tokenizer)" if s is None else f"tokenizer sha256 {s[:16]}..."
        raise ParameterError(f"{where}: index was built from {name(prior.tokenizer_sha256)}, this build from "
                             f"{name(tok_sha)}")
    if prior.buckets != buckets:
        raise ParameterError(f"{where}: index has {prior.buckets} buckets, this build {buckets}")


def build_index(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *, vocab_size: int,
                widths: Sequence[int], tokenizer: Any = None, columns: Columns = Columns(),
                engine: Engine | None = None, append: bool = False, skip_invalid: bool = False,
                buckets: int = DEFAULT_BUCKETS, tiktoken_pattern: str | None = None,
                progress: Callable[[str], None] | None = None) -> WindowIndex:
    """Index the context windows of the served responses in ``inputs`` (files, directories,
    globs: :func:`.sources.expand_inputs`) into the directory ``out``; return the opened index.

    Parameters
    ----------
    vocab_size:
        V, the key's vocabulary; window ids depend on it.
    widths:
        Context widths h to index (each in ``[0, 64]``).
    tokenizer:
        The owner's tokenizer (loaded from a file: tasks reload it by ``tokenizer.source``) for
        text inputs; None for token-id inputs (Parquet with ``columns.tokens``).
    columns:
        Parquet column names; only ``response`` or ``tokens`` is read (prompts play no part).
    engine:
        A Dask :class:`~.cluster.Engine` (``None``: in this process). Its workers must see
        ``out`` and the inputs.
    append:
        Add a generation to the index in ``out`` (same V, widths, tokenizer and buckets);
        without it ``out`` must be new or empty.
    skip_invalid:
        Skip malformed records (counted per source) instead of raising.
    buckets:
        Shards per width and generation (fixed when the index is created).
    tiktoken_pattern:
        The split pattern the tasks load a tiktoken rank file with (default: Qwen's).

    Raises :class:`InputError` for unreadable inputs, a source already indexed (same SHA-256),
    or an ``out`` that cannot take this build; :class:`ParameterError` for bad or mismatched
    parameters."""
    if not isinstance(vocab_size, (int, np.integer)) or isinstance(vocab_size, bool) or vocab_size < 2:
        raise ParameterError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
    vocab_size = int(vocab_size)
    hs = _check_widths(widths)
    if not isinstance(buckets, int) or not 1 <= buckets <= 1 << 16:
        raise ParameterError(f"buckets must be an integer in [1, 65536], got {buckets!r}")
    token_input = columns.tokens is not None
    cols = replace(columns, prompt=None, messages=None, prompt_tokens=None, id=None).validate()
    if token_input and tokenizer is not None:
        raise ParameterError("inputs hold token ids (a token column): give no tokenizer")
    if not token_input and tokenizer is None:
        raise ParameterError("text inputs need the owner's tokenizer (or name a token-id column)")
    tok_sha = _tokenizer_digest(tokenizer) if tokenizer is not None else None
    if tokenizer is not None and tokenizer.vocab_size > vocab_size:
        raise ParameterError(f"vocab_size {vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size}")
    paths = expand_inputs(inputs)
    if token_input:
        text_files = [p for p in paths if not p.lower().endswith((".parquet", ".pq"))]
        if text_files:
            raise InputError(f"{text_files[0]}: token ids are read from Parquet only (a token column)")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: exists and is not a directory")
    if root.exists():
        _prior_index(root, append)
    elif append:
        raise InputError(f"{root}: no index to append to; build it first without --append")
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(root):
            _add_generation(root, append, paths, cols, tokenizer, tok_sha, tiktoken_pattern, vocab_size, hs,
                            buckets, engine, skip_invalid, progress)
    except BaseException:
        if created and not (root / MANIFEST).exists():
            shutil.rmtree(root, ignore_errors=True)
        raise
    return WindowIndex.open(root)


def _add_generation(root: Path, append: bool, paths: list[str], columns: Columns, tokenizer: Any,
                    tok_sha: str | None, tiktoken_pattern: str | None, vocab_size: int, widths: tuple[int, ...],
                    buckets: int, engine: Engine | None, skip_invalid: bool,
                    progress: Callable[[str], None] | None) -> None:
    """Under the index's lock: check, clean, build the next generation, write the manifest."""
    prior = _prior_index(root, append)
    if prior is not None:
        _check_compatible(prior, vocab_size, widths, tok_sha, buckets)
    removed = _remove_leftovers(root, {g.directory for g in prior.generations} if prior else set())
    if removed and progress is not None:
        progress(f"removed what an unfinished build left: {', '.join(removed)}")
    number = prior.generations[-1].number + 1 if prior and prior.generations else 0
    digests: dict[str, str] = {}
    for i, d in run_ordered(engine, file_digest, paths, what="checksums", progress=progress):
        digests[paths[i]] = d
    known = {s["sha256"]: s["path"] for s in prior.sources} if prior else {}
    given: dict[str, str] = {}
    for p in paths:
        if digests[p] in known:
            raise InputError(f"{p}: already indexed (same SHA-256 as {known[digests[p]]})")
        if digests[p] in given:
            raise InputError(f"{p}: same contents (SHA-256) as {given[digests[p]]}, given in this build")
        given[digests[p]] = p
    gen_dir, run_dir = root / _gen_dir(number), root / f"building-{_gen_dir(number)}"
    gen_dir.mkdir()
    run_dir.mkdir()
    try:
        generation = _build_generation(prior, paths, digests, number, gen_dir, run_dir, columns, tokenizer,
                                       tiktoken_pattern, vocab_size, widths, buckets, engine, skip_invalid,
                                       progress)
        older = [g.as_json() for g in prior.generations] if prior else []
        _write_manifest(root, {"format": FORMAT, "version": VERSION, "vocab_size": vocab_size,
                               "tokenizer_sha256": tok_sha, "widths": list(widths), "buckets": buckets,
                               "generations": older + [generation]})
    except BaseException:
        _discard_generation(root, number)
        raise
    shutil.rmtree(run_dir, ignore_errors=True)


def _build_generation(prior: WindowIndex | None, paths: list[str], digests: dict[str, str], number: int,
                      gen_dir: Path, run_dir: Path, columns: Columns, tokenizer: Any,
                      tiktoken_pattern: str | None, vocab_size: int,
                      widths: tuple[int, ...], buckets: int, engine: Engine | None, skip_invalid: bool,
                      progress: Callable[[str], None] | None) -> dict[str, Any]:
    parts = plan_partitions(paths)
    tok_path = None if tokenizer is None else str(Path(tokenizer.source).resolve())
    got: dict[int, PartitionRuns] = {}
    for i, pr in run_ordered(engine, index_partition, parts, columns, tok_path, tiktoken_pattern,
                             vocab_size, widths, buckets, str(run_dir.resolve()), skip_invalid,
                             what="partitions", progress=progress):
        got[i] = pr
    runs = [got[i] for i in range(len(parts))]
    for pr in runs:
        if pr.sha256 is not None and pr.sha256 != digests[pr.path]:
            raise InputError(f"{pr.path}: changed while being indexed (SHA-256 differs); index it again")
    prior_root = gen_dir.parent.resolve()
    prior_gens = prior.generations if prior is not None else ()
    jobs = []
    for h in widths:
        for b in range(buckets):
            slices = tuple((pr.runs[h], int(pr.cuts[h][b]), int(pr.cuts[h][b + 1])) for pr in runs
                           if pr.cuts[h][b + 1] > pr.cuts[h][b])
            older = tuple((str(prior_root / g.directory / _shard_name(h, b)), g.bucket_windows[h][b])
                          for g in prior_gens)
            jobs.append(BucketJob(h, b, slices, older, str((gen_dir / _shard_name(h, b)).resolve())))
    added: dict[int, list[int]] = {h: [0] * buckets for h in widths}
    for i, n in run_ordered(engine, merge_bucket, jobs, what="buckets", progress=progress):
        added[jobs[i].h][jobs[i].bucket] = n
    sources: dict[str, dict[str, Any]] = {
        p: {"path": _display_path(p), "sha256": digests[p], "records": 0, "tokens": 0, "skipped": 0} for p in paths}
    for pr in runs:
        s = sources[pr.path]
        s["records"] += pr.records
        s["tokens"] += pr.tokens
        s["skipped"] += pr.skipped
    return Generation(number, _utc_now(), tuple(sources[p] for p in paths),
                      {h: sum(added[h]) for h in widths}, {h: tuple(added[h]) for h in widths}).as_json()


def _display_path(path: str) -> str:
    return path if "://" in path else str(Path(path).resolve())

