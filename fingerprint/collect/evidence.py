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
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError

__all__ = ["EvidenceWriter", "ChainCheck", "check_chain", "read_records", "open_for_append",
           "canonical_json", "record_hash", "GENESIS", "FORMAT"]

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

    ``ok`` is true when every record parses, hashes, chains and is in sequence.
    ``first_bad_line`` (1-based) and ``problem`` name the first break. ``torn_tail`` marks an
    unterminated last line (an interrupted write), which is not counted as tampering.
    """

    ok: bool
    records: int
    last_sha256: str
    first_bad_line: int | None = None
    problem: str | None = None
    torn_tail: bool = False
    header: dict[str, Any] | None = None


def read_records(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, record) of each complete line; raises on unparsable lines."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                return  # torn tail: the interrupted last write
            try:
                yield lineno, json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(f"{path} line {lineno}: not a valid evidence record ({exc})") from None


def check_chain(path: str | os.PathLike[str]) -> ChainCheck:
    """Verify the hash chain of an evidence file and name the first broken record."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: evidence file not found")
    prev = GENESIS
    n = 0
    header = None
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                return ChainCheck(True, n, prev, torn_tail=True, header=header)
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                return ChainCheck(False, n, prev, lineno, "not valid JSON", header=header)
            if not isinstance(rec, dict):
                return ChainCheck(False, n, prev, lineno, "not a JSON object", header=header)
            if rec.get("sha256") != record_hash(rec):
                return ChainCheck(False, n, prev, lineno, "record content does not match its sha256 "
                                  "(edited)", header=header)
            if rec.get("prev_sha256") != prev:
                return ChainCheck(False, n, prev, lineno, "prev_sha256 does not match the previous record "
                                  "(a record was deleted, inserted or moved before this line)", header=header)
            if rec.get("seq") != lineno - 1:
                return ChainCheck(False, n, prev, lineno, f"seq {rec.get('seq')!r} where {lineno - 1} was "
                                  f"expected (records reordered)", header=header)
            if lineno == 1:
                if rec.get("type") != "header" or rec.get("format") != FORMAT:
                    return ChainCheck(False, 0, prev, 1, "first record is not an evidence header")
                header = rec
            prev = rec["sha256"]
            n += 1
    return ChainCheck(True, n, prev, header=header)


def open_for_append(path: str | os.PathLike[str], header_fields: dict[str, Any], *,
                    fsync_every: int = 64, fsync_interval: float = 0.2) -> tuple["EvidenceWriter", list[dict[str, Any]]]:
    """Open (or create) an evidence file for appending; returns the writer and the records
    already there (for resuming).

    A torn last line is cut off. A broken chain, or a header whose settings differ from
    ``header_fields``, raises :class:`InputError` rather than appending to it.
    """
    path = Path(path)
    existing: list[dict[str, Any]] = []
    if path.exists() and path.stat().st_size > 0:
        check = check_chain(path)
        if not check.ok:
            raise InputError(f"{path} line {check.first_bad_line}: {check.problem}; refusing to append "
                             f"to a broken evidence chain")
        if check.torn_tail:
            with open(path, "rb+") as fh:
                data = fh.read()
                fh.truncate(data.rfind(b"\n") + 1)
        existing = [rec for _, rec in read_records(path)]
        old = existing[0].get("settings")
        if old != header_fields.get("settings"):
            diff = sorted(k for k in set(old or {}) | set(header_fields.get("settings") or {})
                          if (old or {}).get(k) != (header_fields.get("settings") or {}).get(k))
            raise InputError(f"{path}: collected with different settings ({', '.join(diff)}); "
                             f"use another --out file or the original settings")
        writer = EvidenceWriter(path, len(existing), existing[-1]["sha256"], fsync_every=fsync_every,
                                fsync_interval=fsync_interval)
        return writer, existing[1:]
    writer = EvidenceWriter(path, 0, GENESIS, fsync_every=fsync_every, fsync_interval=fsync_interval)
    writer.append({"type": "header", "format": FORMAT, "version": VERSION, **header_fields})
    writer.sync()
    return writer, []


@dataclass
class EvidenceWriter:
    """Appends chained records to an evidence file (see the module docstring)."""

    path: Path
    next_seq: int
    last_sha256: str
    fsync_every: int = 64
    fsync_interval: float = 0.2
    _fd: int = field(init=False, repr=False)
    _unsynced: int = field(init=False, default=0, repr=False)
    _last_sync: float = field(init=False, default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
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
        if self._unsynced >= self.fsync_every or time.monotonic() - self._last_sync >= self.fsync_interval:
            self.sync()
        return rec

    def sync(self) -> None:
        os.fsync(self._fd)
        self._unsynced = 0
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1
