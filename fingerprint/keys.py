"""Fingerprint keys: a 256-bit secret, a scheme with its parameters, and a vocabulary size.

A key file is JSON written atomically with mode 0600 (never through a symlink)::

    {"format": "fingerprint-key", "version": 2, "key_id": "...", "scheme": "greenlist",
     "params": {"context_width": 2, "gamma": 0.25, "delta": 3.0}, "vocab_size": 8192,
     "secret": "<64 hex digits>", "mac": "<64 hex digits>"}

The key id is a keyed-hash fingerprint of the secret (BLAKE2b with its own personalisation),
so it identifies a key in reports without revealing anything about the secret.
``mac`` is an HMAC-SHA256, keyed by a key derived from the secret, over the canonical JSON of
every other public field (format, version, key id, scheme, params, vocabulary size): editing
gamma, h, delta or the vocabulary size without the secret is detected on load. Version-1 files
(no ``mac``) still load, with an :class:`~fingerprint.errors.InsecureFileWarning`; re-save them
(``FingerprintKey.load(old).save(new)``) to add one. Loading checks the file's permissions
(:func:`~fingerprint.secretfiles.read_secret_file`): readable by others warns, writable by
others is refused unless ``allow_insecure``.
``repr()``/``str()`` never show the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets as _secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, InsecureFileWarning, KeyFileError, ParameterError
from .schemes import SCHEMES, Scheme, make_scheme, scheme_class
from .secretfiles import read_secret_json, write_file_atomic

__all__ = ["FingerprintKey", "SECRET_BYTES", "decoy_key", "file_mac", "WorkerKey"]

SECRET_BYTES = 32
_FORMAT = "fingerprint-key"
_VERSION = 2
_FIELDS_V1 = ("format", "version", "key_id", "scheme", "params", "vocab_size", "secret")
_FIELDS = (*_FIELDS_V1, "mac")
#: The fields the MAC covers (all but the secret, which the key id covers, and the MAC itself).
_MAC_FIELDS = ("format", "version", "key_id", "scheme", "params", "vocab_size")


def _key_id(secret: bytes) -> str:
    return hashlib.blake2b(secret, digest_size=16, person=b"fingerprint.kid1").hexdigest()


def file_mac(secret: bytes, data: dict[str, Any], fields: tuple[str, ...] = _MAC_FIELDS) -> str:
    """HMAC-SHA256 over the canonical JSON of the ``fields`` of ``data`` (as stored in the file),
    keyed by a BLAKE2b derivation of the secret."""
    mac_key = hashlib.blake2b(secret, digest_size=32, person=b"fingerprint.mac1").digest()
    body = json.dumps({f: data[f] for f in fields}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=False)
    return hmac.new(mac_key, body.encode("ascii"), hashlib.sha256).hexdigest()


class FingerprintKey:
    """A secret fingerprint key.

    Parameters
    ----------
    secret:
        32 bytes; use :meth:`generate` to draw one from the OS CSPRNG.
    scheme:
        A scheme name (``greenlist``, ``gumbel``, ``tournament``).
    params:
        Scheme parameters; missing ones take the scheme's defaults.
    vocab_size:
        Width of the model's logits ``V`` (token ids are in ``[0, V)``).
    """

    __slots__ = ("_secret", "scheme", "params", "vocab_size", "key_id")

    def __init__(self, secret: bytes, scheme: str, params: dict[str, Any] | None, vocab_size: int) -> None:
        cls = scheme_class(scheme)
        merged = {**cls.defaults, **(params or {})}
        unknown = set(merged) - set(cls.defaults)
        if unknown:
            raise ParameterError(f"scheme {scheme!r}: unknown parameter(s) {sorted(unknown)}; "
                                 f"known: {sorted(cls.defaults)}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ParameterError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
        validated = cls.validate_params(merged)
        size = cls.secret_bytes(validated)
        if not isinstance(secret, (bytes, bytearray)) or len(secret) != size:
            raise ParameterError(f"secret must be {size} bytes for scheme {scheme!r}")
        self._secret = bytes(secret)
        self.scheme: str = scheme
        self.params: dict[str, Any] = validated
        self.vocab_size: int = vocab_size
        self.key_id: str = _key_id(self._secret)

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def generate(cls, scheme: str, *, vocab_size: int, **params: Any) -> "FingerprintKey":
        """A new key with a secret from the operating system's CSPRNG."""
        cls_ = scheme_class(scheme)
        size = cls_.secret_bytes(cls_.validate_params({**cls_.defaults, **params}))
        return cls(_secrets.token_bytes(size), scheme, params, vocab_size)

    def decoys(self, n: int, *, seed: int) -> list["FingerprintKey"]:
        """``n`` decoy keys: same scheme, parameters and vocabulary, independent secrets.

        Decoy secrets are derived from ``seed`` alone (never from this key's secret), so the
        same seed gives the same decoys and publishing them reveals nothing.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ParameterError(f"number of decoys must be an integer >= 0, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ParameterError(f"decoy seed must be an integer, got {seed!r}")
        return [decoy_key(self.decoy_spec(), seed, i) for i in range(n)]

    def decoy_spec(self) -> tuple[str, dict[str, Any], int, int]:
        """What decoy keys are made from (scheme, parameters, vocabulary, secret length): public,
        so workers of a cluster can rebuild any decoy with :func:`decoy_key`."""
        return self.scheme, dict(self.params), self.vocab_size, len(self._secret)

    def scheme_object(self) -> Scheme:
        """The keyed scheme (embed and score sides) for this key."""
        return make_scheme(self.scheme, self._secret, self.vocab_size, **self.params)

    def pairwise_scheme_for(self, tokenizer, feature: str) -> Scheme:
        """The keyed scheme, for a ``feature`` that needs independent scores per distinct
        (window, token) pair (:attr:`Scheme.independent_pairs`), after checking the key covers
        the tokenizer's ids. Raises :class:`InputError` or :class:`ParameterError` naming the
        problem."""
        if self.vocab_size < tokenizer.vocab_size:
            raise InputError(f"key {self.key_id} has vocab_size {self.vocab_size}, smaller than the tokenizer's "
                             f"{tokenizer.vocab_size}")
        scheme = self.scheme_object()
        if not scheme.independent_pairs:
            able = ", ".join(sorted(n for n, cls in SCHEMES.items() if cls.independent_pairs))
            raise ParameterError(f"{feature} needs a scheme whose distinct (window, token) pairs are scored "
                                 f"independently ({able}); key {self.key_id} is {self.scheme}: verify its text "
                                 f"with --mode text")
        return scheme

    # ---- persistence -------------------------------------------------------------------
    def to_public_dict(self) -> dict[str, Any]:
        """Everything but the secret: safe to put in a report."""
        return {"key_id": self.key_id, "scheme": self.scheme, "params": dict(self.params),
                "vocab_size": self.vocab_size}

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the key as JSON with file mode 0600, atomically, never through a symlink
        (:func:`~fingerprint.secretfiles.write_file_atomic`). Refuses to overwrite unless asked,
        and refuses a symlink at ``path`` even then."""
        path = Path(path)
        data: dict[str, Any] = json.loads(json.dumps({"format": _FORMAT, "version": _VERSION,
                                                      **self.to_public_dict(), "secret": self._secret.hex()}))
        data["mac"] = file_mac(self._secret, data)
        text = json.dumps(data, indent=2) + "\n"
        write_file_atomic(path, text.encode("utf-8"), mode=0o600, overwrite=overwrite, what="key file")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, allow_insecure: bool = False) -> "FingerprintKey":
        """Read and validate a key file; errors name the file and the bad field.

        A file writable by group or others is refused unless ``allow_insecure``; one readable by
        them loads with an :class:`~fingerprint.errors.InsecureFileWarning`."""
        path = Path(path)
        data = read_secret_json(path, what="key file", allow_insecure=allow_insecure)
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "key") -> "FingerprintKey":
        """Build a key from the parsed JSON of a key file, validating every field."""
        if not isinstance(data, dict):
            raise KeyFileError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != _FORMAT:
            hint = " (this is a keyring: use --keyring)" if data.get("format") == "fingerprint-keyring" else ""
            raise KeyFileError(f"{source}: field 'format' must be {_FORMAT!r}, got {data.get('format')!r}{hint}")
        version = data.get("version")
        if type(version) is not int or version not in (1, _VERSION):
            raise KeyFileError(f"{source}: field 'version' must be 1 or {_VERSION}, got {version!r}")
        fields = _FIELDS_V1 if version == 1 else _FIELDS
        for field in fields:
            if field not in data:
                raise KeyFileError(f"{source}: field {field!r} missing")
        extra = sorted(set(data) - set(fields))
        if extra:
            raise KeyFileError(f"{source}: unknown field(s) {extra} for a version-{version} key file")
        if not isinstance(data["params"], dict):
            raise KeyFileError(f"{source}: field 'params' must be an object, got "
                               f"{type(data['params']).__name__}")
        size = SECRET_BYTES
        if isinstance(data["scheme"], str) and data["scheme"] in SCHEMES:
            scheme_cls = SCHEMES[data["scheme"]]
            try:
                size = scheme_cls.secret_bytes(scheme_cls.validate_params({**scheme_cls.defaults, **data["params"]}))
            except ParameterError as exc:
                raise KeyFileError(f"{source}: field 'params': {exc}") from None
        secret_hex = data["secret"]
        if not isinstance(secret_hex, str) or len(secret_hex) != 2 * size:
            raise KeyFileError(f"{source}: field 'secret' must be {2 * size} hex digits")
        try:
            secret = bytes.fromhex(secret_hex)
        except ValueError:
            raise KeyFileError(f"{source}: field 'secret' is not hexadecimal") from None
        vocab = data["vocab_size"]
        if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 2:
            raise KeyFileError(f"{source}: field 'vocab_size' must be an integer >= 2, got {vocab!r}")
        if not isinstance(data["scheme"], str):
            raise KeyFileError(f"{source}: field 'scheme' must be a string, got {data['scheme']!r}")
        try:
            key = cls(secret, data["scheme"], data["params"], vocab)
        except ParameterError as exc:
            field = "scheme" if "unknown scheme" in str(exc) else "params"
            raise KeyFileError(f"{source}: field {field!r}: {exc}") from None
        if data["key_id"] != key.key_id:
            raise KeyFileError(f"{source}: field 'key_id' does not match the secret "
                               f"(file corrupted or edited)")
        if version == 1:
            warnings.warn(f"{source}: version-1 key file without a MAC: an edit of its scheme, params or "
                          f"vocab_size cannot be detected; re-save it to add one "
                          f"(FingerprintKey.load(old).save(new))", InsecureFileWarning, stacklevel=3)
            return key
        try:
            expected = file_mac(secret, data)
        except (TypeError, ValueError):
            raise KeyFileError(f"{source}: a field covered by 'mac' is not plain JSON") from None
        if not isinstance(data["mac"], str) or not hmac.compare_digest(data["mac"], expected):
            raise KeyFileError(f"{source}: field 'mac' does not match the fields it covers "
                               f"({', '.join(_MAC_FIELDS)}): the file was edited or corrupted")
        return key

    # ---- never show the secret ----------------------------------------------------------
    def __repr__(self) -> str:
        return (f"FingerprintKey(key_id={self.key_id!r}, scheme={self.scheme!r}, "
                f"params={self.params!r}, vocab_size={self.vocab_size}, secret=<hidden>)")

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FingerprintKey):
            return NotImplemented
        return (self.key_id == other.key_id and self.scheme == other.scheme
                and self.params == other.params and self.vocab_size == other.vocab_size)

    def __hash__(self) -> int:
        return hash((self.key_id, self.scheme, self.vocab_size))

    def __getstate__(self) -> None:
        raise TypeError("FingerprintKey is not picklable (it would copy the secret); use save()")

    def for_workers(self) -> "WorkerKey":
        """This key as a picklable object for worker processes that score with it (a Dask
        cluster's workers on this machine, or reached over TLS): an explicit copy of the secret,
        made only where the caller decides the channel is safe."""
        return WorkerKey(self._secret, self.scheme, dict(self.params), self.vocab_size)


@dataclass(frozen=True)
class WorkerKey:
    """A :class:`FingerprintKey` on its way to a worker process (:meth:`FingerprintKey.for_workers`);
    :meth:`key` rebuilds it there."""

    secret: bytes = field(repr=False)
    scheme: str
    params: dict[str, Any]
    vocab_size: int

    def key(self) -> FingerprintKey:
        return FingerprintKey(self.secret, self.scheme, self.params, self.vocab_size)


def decoy_key(spec: tuple[str, dict[str, Any], int, int], seed: int, i: int) -> FingerprintKey:
    """Decoy ``i`` of seed ``seed`` for a key with :meth:`FingerprintKey.decoy_spec` ``spec``
    (its secret derived from the seed and ``i`` alone)."""
    scheme, params, vocab_size, size = spec
    if size == SECRET_BYTES:
        secret = hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=SECRET_BYTES, person=b"fingerprint.dcy1").digest()
    else:
        secret = hashlib.shake_256(f"fingerprint.dcy1:{seed}:{i}".encode()).digest(size)
    return FingerprintKey(secret, scheme, params, vocab_size)
