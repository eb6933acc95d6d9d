"""Keyrings: one master secret, one fingerprint key per cohort of accounts, derived on demand.

A cohort is whatever the owner serves under its own key: an account, a reseller, a region, a
time window, a random bucket of suspicious accounts. Its key is

    secret(cohort) = HKDF-SHA256(ikm=master, salt="fingerprint.keyring1", info="cohort:" + id)

(as many bytes as the scheme's secret takes), with the ring's scheme, parameters and
vocabulary: an ordinary :class:`~fingerprint.keys.FingerprintKey`, so every scheme, the
samplers and the logits processors take it unchanged. HKDF is a PRF in ``info``, so the cohort
keys are independent keys for every purpose here: under H0 ("the suspect never learned from
this ring's outputs") the per-cohort statistics on the same tuples are independent. Only the
master is stored.

A keyring file is JSON written atomically with mode 0600::

    {"format": "fingerprint-keyring", "version": 1, "ring_id": "...", "scheme": "greenlist",
     "params": {...}, "vocab_size": 8192, "assign": "hash", "cohorts": ["bucket-0000", ...],
     "master": "<64 hex digits>", "mac": "<64 hex digits>"}

``assign`` says how a request's account id (the OpenAI ``user`` field) picks its cohort
(:meth:`Keyring.cohort_for`): ``"exact"`` (the id must be a cohort id) or ``"hash"`` (an id that
is not a cohort id goes to a bucket chosen by a keyed hash of the id, so nobody can choose
their bucket). ``fingerprint keygen --keyring --cohorts N`` makes N hashed buckets;
``--cohorts-file`` one exact cohort per line.

Decoy cohorts (null controls) are keys of the same master under ids no real cohort can have
(``~decoy-<seed>-<i>``): they were never served, so their p-values are uniform, and they test
the independence of keys drawn from one master.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets as _secrets
from pathlib import Path
from typing import Any, Iterable, Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import KeyFileError, ParameterError
from .keys import SECRET_BYTES, FingerprintKey, file_mac
from .schemes import SCHEMES, scheme_class
from .secretfiles import read_secret_json, write_file_atomic

__all__ = ["Keyring", "ASSIGN_RULES", "MAX_COHORT_ID_CHARS"]

_FORMAT = "fingerprint-keyring"
_VERSION = 1
_FIELDS = ("format", "version", "ring_id", "scheme", "params", "vocab_size", "assign", "cohorts", "master", "mac")
_MAC_FIELDS = ("format", "version", "ring_id", "scheme", "params", "vocab_size", "assign", "cohorts")
_SALT = b"fingerprint.keyring1"
#: How a request's account id picks a cohort (see the module docstring).
ASSIGN_RULES = ("exact", "hash")
MAX_COHORT_ID_CHARS = 256
_DECOY_PREFIX = "~decoy-"


def _ring_id(master: bytes) -> str:
    return hashlib.blake2b(master, digest_size=16, person=b"fingerprint.rid1").hexdigest()


def check_cohort_ids(ids: Iterable[object], *, source: str = "cohort ids") -> tuple[str, ...]:
    """Validate cohort ids: non-empty printable strings of at most :data:`MAX_COHORT_ID_CHARS`
    characters, unique, not starting with ``~`` (reserved for decoys). Raises
    :class:`ParameterError` naming the first bad id and its position."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, c in enumerate(ids):
        if not isinstance(c, str) or not c:
            raise ParameterError(f"{source}: id {i} must be a non-empty string, got {c!r}")
        if len(c) > MAX_COHORT_ID_CHARS or not c.isprintable() or c != c.strip():
            raise ParameterError(f"{source}: id {i} ({c[:40]!r}) must be printable, without surrounding spaces, "
                                 f"and at most {MAX_COHORT_ID_CHARS} characters")
        if c.startswith("~"):
            raise ParameterError(f"{source}: id {i} ({c!r}) starts with '~', which is reserved for decoy cohorts")
        if c in seen:
            raise ParameterError(f"{source}: id {c!r} appears twice (positions {seen[c]} and {i})")
        seen[c] = i
        out.append(c)
    if not out:
        raise ParameterError(f"{source}: a keyring needs at least one cohort")
    return tuple(out)


def bucket_ids(n: int) -> tuple[str, ...]:
    """The ids of ``n`` hashed buckets: ``bucket-0000`` ... (zero-padded to a common width)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ParameterError(f"number of cohorts must be an integer >= 1, got {n!r}")
    width = max(4, len(str(n - 1)))
    return tuple(f"bucket-{i:0{width}d}" for i in range(n))


def _ids_and_rule(cohorts: int | Sequence[str], assign: str | None) -> tuple[tuple[str, ...], str]:
    if isinstance(cohorts, bool):
        raise ParameterError(f"cohorts must be a number of buckets or a list of ids, got {cohorts!r}")
    if isinstance(cohorts, int):
        return bucket_ids(cohorts), assign or "hash"
    if isinstance(cohorts, str):
        raise ParameterError("cohorts must be a list of ids, not one string")
    return tuple(cohorts), assign or "exact"


class Keyring:
    """A master secret and the cohorts it derives keys for.

    Parameters
    ----------
    master:
        32 bytes; :meth:`generate` draws one from the OS CSPRNG.
    scheme, params, vocab_size:
        What every cohort key is (as for :class:`~fingerprint.keys.FingerprintKey`).
    cohorts:
        The cohort ids, in the order reports list them.
    assign:
        ``"exact"`` or ``"hash"``: how :meth:`cohort_for` maps an account id to a cohort.
    """

    __slots__ = ("_master", "scheme", "params", "vocab_size", "cohorts", "assign", "ring_id", "_index",
                 "_secret_size")

    def __init__(self, master: bytes, scheme: str, params: dict[str, Any] | None, vocab_size: int,
                 cohorts: Sequence[str], *, assign: str = "exact") -> None:
        if not isinstance(master, (bytes, bytearray)) or len(master) != SECRET_BYTES:
            raise ParameterError(f"keyring master secret must be {SECRET_BYTES} bytes")
        if assign not in ASSIGN_RULES:
            raise ParameterError(f"assign must be one of {ASSIGN_RULES}, got {assign!r}")
        self._master = bytes(master)
        self.cohorts: tuple[str, ...] = check_cohort_ids(cohorts)
        self._index = {c: i for i, c in enumerate(self.cohorts)}
        self.assign = assign
        self.ring_id = _ring_id(self._master)
        # validates scheme, params and vocabulary once (every cohort key shares them)
        probe = self._key_for("probe", scheme, params, vocab_size)
        self.scheme: str = probe.scheme
        self.params: dict[str, Any] = dict(probe.params)
        self.vocab_size: int = probe.vocab_size

    def _key_for(self, cohort_id: str, scheme: str | None = None, params: dict[str, Any] | None = None,
                 vocab_size: int | None = None) -> FingerprintKey:
        scheme = self.scheme if scheme is None else scheme
        params = self.params if params is None else params
        vocab_size = self.vocab_size if vocab_size is None else vocab_size
        cls = scheme_class(scheme)
        size = cls.secret_bytes(cls.validate_params({**cls.defaults, **(params or {})}))
        secret = HKDF(algorithm=hashes.SHA256(), length=size, salt=_SALT,
                      info=b"cohort:" + cohort_id.encode("utf-8")).derive(self._master)
        return FingerprintKey(secret, scheme, params, vocab_size)

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def generate(cls, scheme: str, *, vocab_size: int, cohorts: int | Sequence[str],
                 assign: str | None = None, **params: Any) -> "Keyring":
        """A new keyring with a master from the OS CSPRNG. ``cohorts``: a number of hashed
        buckets (``assign`` defaults to ``"hash"``) or a list of ids (``"exact"``)."""
        ids, rule = _ids_and_rule(cohorts, assign)
        return cls(_secrets.token_bytes(SECRET_BYTES), scheme, params, vocab_size, ids, assign=rule)

    @classmethod
    def from_seed(cls, seed: int | str, scheme: str, *, vocab_size: int, cohorts: int | Sequence[str],
                  assign: str | None = None, **params: Any) -> "Keyring":
        """A reproducible keyring whose master is derived from ``seed`` alone (simulations,
        validity experiments, decoy keyrings): never for serving real users."""
        master = hashlib.blake2b(f"{seed}".encode(), digest_size=SECRET_BYTES, person=b"fingerprint.rng1").digest()
        ids, rule = _ids_and_rule(cohorts, assign)
        return cls(master, scheme, params, vocab_size, ids, assign=rule)

    # ---- keys --------------------------------------------------------------------------
    @property
    def n_cohorts(self) -> int:
        return len(self.cohorts)

    def index_of(self, cohort_id: str) -> int:
        """Position of a cohort id; :class:`ParameterError` naming it when the ring has no such cohort."""
        try:
            return self._index[cohort_id]
        except (KeyError, TypeError):
            raise ParameterError(f"keyring {self.ring_id[:12]} has no cohort {cohort_id!r} "
                                 f"({self.n_cohorts} cohorts, e.g. {self.cohorts[0]!r})") from None

    def cohort_key(self, cohort_id: str) -> FingerprintKey:
        """The fingerprint key of one cohort (derived now, never stored)."""
        self.index_of(cohort_id)
        return self._key_for(cohort_id)

    def cohort_keys(self, cohort_ids: Sequence[str] | None = None) -> list[FingerprintKey]:
        """Keys of ``cohort_ids`` (default: every cohort, in ring order)."""
        return [self.cohort_key(c) for c in (self.cohorts if cohort_ids is None else cohort_ids)]

    def decoy_ids(self, n: int, *, seed: int) -> tuple[str, ...]:
        """Ids of ``n`` decoy cohorts: keys of this master that no real cohort can have (never served)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ParameterError(f"number of decoy cohorts must be an integer >= 0, got {n!r}")
        return tuple(f"{_DECOY_PREFIX}{seed}-{i}" for i in range(n))

    def decoy_cohort_key(self, decoy_id: str) -> FingerprintKey:
        """The key of a decoy cohort id from :meth:`decoy_ids`."""
        if not decoy_id.startswith(_DECOY_PREFIX):
            raise ParameterError(f"{decoy_id!r} is not a decoy cohort id")
        return self._key_for(decoy_id)

    def cohort_for(self, account: str) -> str:
        """The cohort that serves requests of ``account`` (e.g. the OpenAI ``user`` field).

        A cohort id maps to itself. Otherwise an ``"exact"`` ring raises :class:`ParameterError`
        and a ``"hash"`` ring picks a bucket by a keyed hash of the account id (the master keys
        it, so the bucket of an account cannot be predicted without the keyring)."""
        if account in self._index:
            return account
        if self.assign == "exact":
            raise ParameterError(f"account {account[:80]!r} is not a cohort of keyring {self.ring_id[:12]} "
                                 f"(an exact-assignment ring of {self.n_cohorts} cohorts)")
        digest = hashlib.blake2b(account.encode("utf-8"), key=self._master, digest_size=16,
                                 person=b"fingerprint.bkt1").digest()
        return self.cohorts[int.from_bytes(digest, "little") % self.n_cohorts]

    # ---- persistence -------------------------------------------------------------------
    def to_public_dict(self) -> dict[str, Any]:
        """Everything but the master (safe for a report); cohort ids are listed separately."""
        return {"ring_id": self.ring_id, "scheme": self.scheme, "params": dict(self.params),
                "vocab_size": self.vocab_size, "assign": self.assign, "n_cohorts": self.n_cohorts}

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the keyring (mode 0600, atomically, never through a symlink)."""
        path = Path(path)
        data: dict[str, Any] = json.loads(json.dumps({
            "format": _FORMAT, "version": _VERSION, "ring_id": self.ring_id, "scheme": self.scheme,
            "params": dict(self.params), "vocab_size": self.vocab_size, "assign": self.assign,
            "cohorts": list(self.cohorts), "master": self._master.hex()}))
        data["mac"] = file_mac(self._master, data, _MAC_FIELDS)
        write_file_atomic(path, (json.dumps(data, indent=1) + "\n").encode("utf-8"), mode=0o600,
                          overwrite=overwrite, what="keyring file")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, allow_insecure: bool = False) -> "Keyring":
        """Read and validate a keyring file; errors name the file and the bad field."""
        path = Path(path)
        data = read_secret_json(path, what="keyring file", allow_insecure=allow_insecure)
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "keyring") -> "Keyring":
        """Build a keyring from the parsed JSON of a keyring file, validating every field."""
        if not isinstance(data, dict):
            raise KeyFileError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != _FORMAT:
            hint = " (this is a single key: use --key)" if data.get("format") == "fingerprint-key" else ""
            raise KeyFileError(f"{source}: field 'format' must be {_FORMAT!r}, got {data.get('format')!r}{hint}")
        if type(data.get("version")) is not int or data["version"] != _VERSION:
            raise KeyFileError(f"{source}: field 'version' must be {_VERSION}, got {data.get('version')!r}")
        for field in _FIELDS:
            if field not in data:
                raise KeyFileError(f"{source}: field {field!r} missing")
        extra = sorted(set(data) - set(_FIELDS))
        if extra:
            raise KeyFileError(f"{source}: unknown field(s) {extra}")
        master_hex = data["master"]
        if not isinstance(master_hex, str) or len(master_hex) != 2 * SECRET_BYTES:
            raise KeyFileError(f"{source}: field 'master' must be {2 * SECRET_BYTES} hex digits")
        try:
            master = bytes.fromhex(master_hex)
        except ValueError:
            raise KeyFileError(f"{source}: field 'master' is not hexadecimal") from None
        if not isinstance(data["cohorts"], list):
            raise KeyFileError(f"{source}: field 'cohorts' must be a list of ids")
        if not isinstance(data["scheme"], str) or data["scheme"] not in SCHEMES:
            raise KeyFileError(f"{source}: field 'scheme': unknown scheme {data['scheme']!r}")
        if not isinstance(data["params"], dict):
            raise KeyFileError(f"{source}: field 'params' must be an object")
        try:
            expected = file_mac(master, data, _MAC_FIELDS)
        except (TypeError, ValueError):
            raise KeyFileError(f"{source}: a field covered by 'mac' is not plain JSON") from None
        if not isinstance(data["mac"], str) or not hmac.compare_digest(data["mac"], expected):
            raise KeyFileError(f"{source}: field 'mac' does not match the fields it covers "
                               f"({', '.join(_MAC_FIELDS)}): the file was edited or corrupted")
        try:
            ring = cls(master, data["scheme"], data["params"], data["vocab_size"], data["cohorts"],
                       assign=data["assign"])
        except ParameterError as exc:
            raise KeyFileError(f"{source}: {exc}") from None
        if data["ring_id"] != ring.ring_id:
            raise KeyFileError(f"{source}: field 'ring_id' does not match the master (file corrupted or edited)")
        return ring

    # ---- never show the master ------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"Keyring(ring_id={self.ring_id!r}, scheme={self.scheme!r}, params={self.params!r}, "
                f"vocab_size={self.vocab_size}, n_cohorts={self.n_cohorts}, assign={self.assign!r}, "
                f"master=<hidden>)")

    __str__ = __repr__

    def __getstate__(self) -> None:
        raise TypeError("Keyring is not picklable (it would copy the master secret); use save()")


def is_keyring_file(path: str | os.PathLike[str]) -> bool:
    """Whether a readable JSON file declares the keyring format (for error messages that say
    which option a file belongs to); never raises."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(200)
    except OSError:
        return False
    return b'"fingerprint-keyring"' in head
