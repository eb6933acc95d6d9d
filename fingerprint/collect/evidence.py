"""Append-only evidence store: JSONL records in a SHA-256 hash chain.

Every line is one JSON object in canonical form (sorted keys, no spaces, UTF-8) carrying

* ``seq``: its 0-based line number;
* ``prev_sha256``: the ``sha256`` of the previous record (64 zeros for the first);
* ``sha256``: SHA-256 of the canonical JSON of the record without this field.

An edited record fails its own hash; a deleted, inserted or reordered record breaks the
chain or the sequence at that line. (A chain detects tampering by anyone who does not also
recompute every later hash; keep the final hash, printed by ``fingerprint evidence summary``,
somewhere else to pin the whole file.)

The first record is a header (``"type": "header"``) holding the collection settings; the
others are ``"type": "exchange"`` records written by the collector.

Durability: each record is written with one ``write()`` on an ``O_APPEND`` descriptor, so a
killed process loses at most the record being written (a torn last line, which
:func:`open_for_append` cuts off before resuming). ``fsync`` runs at least every
``fsync_every`` records and every ``fsync_interval`` seconds, which bounds what a power
failure can lose.

A torn (unterminated) last line is never part of the chain: :func:`check_chain` reports it as a
problem (``ok`` false, ``torn_tail`` true), because a record appended by hand without its
newline would otherwise pass for an interrupted write. ``fingerprint verify`` refuses such a
file; resuming the collection cuts the line off.

Locking: :func:`open_for_append` takes an exclusive lock (:func:`lock_evidence`: ``flock`` on
``<evidence>.lock``, which holds the pid, host and start time of the holder) for as long as the
writer is open, so a second collector on the same file fails at once with
:class:`~fingerprint.errors.EvidenceLockedError` naming the holder.

Signing: a chain alone detects edits only by someone who does not recompute the later hashes.
Give :func:`open_for_append` a ``signer`` (:class:`fingerprint.collect.custody.EvidenceSigner`,
holding the investigator's Ed25519 key) and the writer signs checkpoints (every N records and
at close) into ``<evidence>.manifest.json``; see :mod:`fingerprint.collect.custody`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterator, Protocol

from ..errors import EvidenceLockedError, InputError

__all__ = ["EvidenceWriter", "ChainCheck", "check_chain", "read_records", "open_for_append",
           "canonical_json", "record_hash", "GENESIS", "FORMAT", "EvidenceLock", "lock_evidence", "lock_path",
           "manifest_path", "CheckpointSigner"]

GENESIS = "0" * 64
FORMAT = "fingerprint-evidence"
VERSION = 1


def canonical_json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``record`` without its ``sha256`` field."""
    body = {k: v for k, v in record.items() if k != "sha256"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


@dataclass
class ChainCheck:
    """Result of checking an evidence file.

    ``ok`` is true when every line is a complete record that parses, hashes, chains and is in
    sequence, and the first is an evidence header. ``first_bad_line`` (1-based) and ``problem``
    name the first break. ``records`` and ``last_sha256`` describe the intact prefix before it
    (the whole file when ``ok``): ``last_sha256`` is the head hash. ``torn_tail`` marks an
    unterminated last line after an intact prefix: an interrupted write, or a record appended by
    hand without its newline. It is not part of the chain, is never scored, and makes ``ok``
    false (resuming a collection cuts it off). ``heads`` maps each record count asked for in
    ``heads_at`` (and reached) to the ``sha256`` of that record (the head after that many).
    """

    ok: bool
    records: int
    last_sha256: str
    first_bad_line: int | None = None
    problem: str | None = None
    torn_tail: bool = False
    header: dict[str, Any] | None = None
    heads: dict[int, str] = field(default_factory=dict)


def read_records(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, record) of each complete line; raises on unparsable lines. An
    unterminated last line (torn tail) is not a record and is not yielded."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                return  # torn tail: the interrupted last write
            try:
                yield lineno, json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise InputError(f"{path} line {lineno}: not a valid evidence record ({exc})") from None


def check_chain(path: str | os.PathLike[str], *, heads_at: Collection[int] = ()) -> ChainCheck:
    """Verify the hash chain of an evidence file and name the first broken record.

    ``heads_at``: record counts whose head hash to report in :attr:`ChainCheck.heads` (the
    checkpoints of a manifest). Raises :class:`InputError` only when the file cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: evidence file not found")
    want = set(heads_at)
    heads: dict[int, str] = {}
    prev = GENESIS
    n = 0
    header = None

    def broken(lineno: int, problem: str, *, torn: bool = False) -> ChainCheck:
        return ChainCheck(False, n, prev, lineno, problem, torn_tail=torn, header=header, heads=heads)

    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read evidence file: {exc.strerror}") from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                return broken(lineno, f"torn tail: line {lineno} has no terminating newline (an interrupted "
                                      f"write, or a record appended by hand); it is not part of the chain and "
                                      f"must not be scored", torn=True)
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                return broken(lineno, "not valid JSON")
            if not isinstance(rec, dict):
                return broken(lineno, "not a JSON object")
            try:
                digest = record_hash(rec)
            except ValueError:  # NaN or Infinity: never written by the collector
                return broken(lineno, "record holds a non-finite number (not canonical JSON)")
            if rec.get("sha256") != digest:
                return broken(lineno, "record content does not match its sha256 (edited)")
            if rec.get("prev_sha256") != prev:
                return broken(lineno, "prev_sha256 does not match the previous record (a record was deleted, "
                                      "inserted or moved before this line)")
            if rec.get("seq") != lineno - 1:
                return broken(lineno, f"seq {rec.get('seq')!r} where {lineno - 1} was expected (records "
                                      f"reordered or missing)")
            if lineno == 1:
                if rec.get("type") != "header" or rec.get("format") != FORMAT:
                    return broken(1, "first record is not an evidence header")
                header = rec
            prev = rec["sha256"]
            n += 1
            if n in want:
                heads[n] = prev
    if n == 0:
        return broken(1, "empty file: no evidence header")
    return ChainCheck(True, n, prev, header=header, heads=heads)


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file of an evidence file: ``<evidence>.lock`` next to it."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def manifest_path(path: str | os.PathLike[str]) -> Path:
    """The signed manifest of an evidence file: ``<evidence>.manifest.json`` next to it."""
    path = Path(path)
    return path.with_name(path.name + ".manifest.json")


@dataclass
class EvidenceLock:
    """An exclusive lock on an evidence file, held until :meth:`release` (or the process ends:
    the kernel drops a ``flock`` with its holder, so a killed collector leaves no stale lock).

    ``holder``: what the lock file records about the holder (``pid``, ``host``, ``started_at``,
    ``purpose``)."""

    evidence: Path
    path: Path
    holder: dict[str, Any]
    _fd: int = field(repr=False, default=-1)

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            if os.path.samestat(os.stat(self.path, follow_symlinks=False), os.fstat(self._fd)):
                os.unlink(self.path)  # while still holding it: a waiter re-checks the inode
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> "EvidenceLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe_holder(raw: bytes) -> str:
    try:
        h = json.loads(raw.decode("utf-8"))
        return (f"pid {h.get('pid')} on host {h.get('host')}, since {h.get('started_at')}"
                + (f" ({h['purpose']})" if h.get("purpose") else ""))
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, RecursionError):
        return "a process that has not yet recorded itself"


def lock_evidence(path: str | os.PathLike[str], *, purpose: str = "collect") -> EvidenceLock:
    """Take the exclusive lock of an evidence file or fail at once.

    Uses ``flock(LOCK_EX | LOCK_NB)`` on :func:`lock_path` (advisory: every fingerprint writer
    takes it; on NFS, Linux maps it to a POSIX byte-range lock). Raises
    :class:`~fingerprint.errors.EvidenceLockedError` naming the holder (pid, host, start time)
    when another process (or another writer in this process) holds it. Use as a context
    manager, or call :meth:`EvidenceLock.release`."""
    evidence = Path(path)
    lp = lock_path(evidence)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(50):
        try:
            fd = os.open(lp, flags, 0o644)
        except OSError as exc:
            raise InputError(f"{evidence}: cannot create the lock file {lp}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _describe_holder(os.pread(fd, 4096, 0))
            os.close(fd)
            raise EvidenceLockedError(f"{evidence}: locked by another collector ({who}; lock file {lp}); "
                                      f"wait for it to finish, or stop it") from None
        try:
            same = os.path.samestat(os.stat(lp, follow_symlinks=False), os.fstat(fd))
        except FileNotFoundError:
            same = False
        if not same:  # its previous holder removed it as we opened it: take the new one
            os.close(fd)
            continue
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "purpose": purpose}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
        return EvidenceLock(evidence, lp, holder, fd)
    raise EvidenceLockedError(f"{evidence}: could not take the lock {lp} (it keeps being replaced)")


class CheckpointSigner(Protocol):
    """What :class:`EvidenceWriter` needs from a signer (implemented by
    :class:`fingerprint.collect.custody.EvidenceSigner`)."""

    def prepare(self, evidence: Path) -> Collection[int]:
        """Read the evidence's manifest (if any); return the record counts whose head hashes
        :meth:`resume` needs."""
        ...

    def resume(self, chain: ChainCheck | None) -> None:
        """Check the manifest against the existing chain (``None``: a new file); raise
        :class:`InputError` rather than sign over a history that does not match."""
        ...

    def due(self, records: int) -> bool:
        """Whether a checkpoint is due after ``records`` records."""
        ...

    def checkpoint(self, records: int, head_sha256: str, *, final: bool) -> None:
        """Sign (records, head) and rewrite the manifest."""
        ...


def open_for_append(path: str | os.PathLike[str], header_fields: dict[str, Any], *,
                    fsync_every: int = 64, fsync_interval: float = 0.2, signer: CheckpointSigner | None = None,
                    lock: bool = True) -> tuple["EvidenceWriter", list[dict[str, Any]]]:
    """Open (or create) an evidence file for appending; returns the writer and the records
    already there (for resuming).

    With ``lock`` (the default) the file's exclusive lock (:func:`lock_evidence`) is taken first
    and held until :meth:`EvidenceWriter.close`; a second writer raises
    :class:`~fingerprint.errors.EvidenceLockedError`. A torn last line is cut off (under the
    lock). A broken chain, or a header whose settings differ from ``header_fields``, raises
    :class:`InputError` rather than appending to it. With a ``signer``, an existing manifest must
    match the chain and be signed by the same key, and the writer signs checkpoints; without
    one, a file that has a manifest is refused (appending would leave records unsigned).
    """
    path = Path(path)
    held = lock_evidence(path) if lock else None
    try:
        return _open_locked(path, header_fields, fsync_every=fsync_every, fsync_interval=fsync_interval,
                            signer=signer, lock=held)
    except BaseException:
        if held is not None:
            held.release()
        raise


def _open_locked(path: Path, header_fields: dict[str, Any], *, fsync_every: int, fsync_interval: float,
                 signer: CheckpointSigner | None,
                 lock: EvidenceLock | None) -> tuple["EvidenceWriter", list[dict[str, Any]]]:
    manifest = manifest_path(path)
    if signer is None and manifest.exists():
        raise InputError(f"{path}: the evidence is signed ({manifest}); pass the investigator's signing key "
                         f"(collect --signing-key) to append to it, or use another --out file")
    want = signer.prepare(path) if signer is not None else ()
    existing: list[dict[str, Any]] = []
    check: ChainCheck | None = None
    if path.exists() and path.stat().st_size > 0:
        check = check_chain(path, heads_at=want)
        if not check.ok and not check.torn_tail:
            raise InputError(f"{path} line {check.first_bad_line}: {check.problem}; refusing to append "
                             f"to a broken evidence chain")
        if check.torn_tail:
            with open(path, "rb+") as fh:
                data = fh.read()
                fh.truncate(data.rfind(b"\n") + 1)
                fh.flush()
                os.fsync(fh.fileno())
    if path.exists() and path.stat().st_size > 0:
        existing = [rec for _, rec in read_records(path)]
        old = existing[0].get("settings")
        if old != header_fields.get("settings"):
            diff = sorted(k for k in set(old or {}) | set(header_fields.get("settings") or {})
                          if (old or {}).get(k) != (header_fields.get("settings") or {}).get(k))
            raise InputError(f"{path}: collected with different settings ({', '.join(diff)}); "
                             f"use another --out file or the original settings")
        if signer is not None:
            signer.resume(check)
        writer = EvidenceWriter(path, len(existing), existing[-1]["sha256"], fsync_every=fsync_every,
                                fsync_interval=fsync_interval, signer=signer, lock=lock)
        return writer, existing[1:]
    if signer is not None:
        signer.resume(None)
    writer = EvidenceWriter(path, 0, GENESIS, fsync_every=fsync_every, fsync_interval=fsync_interval,
                            signer=signer, lock=lock)
    writer.append({"type": "header", "format": FORMAT, "version": VERSION, **header_fields})
    writer.sync()
    return writer, []


@dataclass
class EvidenceWriter:
    """Appends chained records to an evidence file (see the module docstring).

    ``signer`` (optional) signs a checkpoint whenever :meth:`CheckpointSigner.due` and a final
    one at :meth:`close`; ``lock`` (optional) is released at :meth:`close`."""

    path: Path
    next_seq: int
    last_sha256: str
    fsync_every: int = 64
    fsync_interval: float = 0.2
    signer: CheckpointSigner | None = None
    lock: EvidenceLock | None = None
    _fd: int = field(init=False, repr=False)
    _unsynced: int = field(init=False, default=0, repr=False)
    _last_sync: float = field(init=False, default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        self._last_sync = time.monotonic()

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Chain, hash and write one record; returns it as written."""
        rec = {k: v for k, v in record.items() if k not in ("sha256", "prev_sha256", "seq")}
        rec["seq"] = self.next_seq
        rec["prev_sha256"] = self.last_sha256
        rec["sha256"] = record_hash(rec)
        data = (canonical_json(rec) + "\n").encode("utf-8")
        written = os.write(self._fd, data)
        if written != len(data):  # pragma: no cover - a full disk
            raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")
        self.next_seq += 1
        self.last_sha256 = rec["sha256"]
        self._unsynced += 1
        if self.signer is not None and self.signer.due(self.next_seq):
            self.sync()  # sign only what is on disk
            self.signer.checkpoint(self.next_seq, self.last_sha256, final=False)
        elif self._unsynced >= self.fsync_every or time.monotonic() - self._last_sync >= self.fsync_interval:
            self.sync()
        return rec

    def sync(self) -> None:
        os.fsync(self._fd)
        self._unsynced = 0
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """Flush, sign the final checkpoint (with a signer), close, and release the lock."""
        if self._fd < 0:
            return
        try:
            self.sync()
            if self.signer is not None:
                self.signer.checkpoint(self.next_seq, self.last_sha256, final=True)
        finally:
            os.close(self._fd)
            self._fd = -1
            if self.lock is not None:
                self.lock.release()
