"""Chain of custody for evidence files: the investigator's Ed25519 key, signed checkpoints, the
manifest next to the evidence, and the checks ``fingerprint verify`` and ``fingerprint evidence
verify`` run before anything is scored.

Who can do what
---------------
* The hash chain (:mod:`.evidence`) shows any edit, deletion, insertion or reordering made by
  someone who does *not* recompute the later hashes. Anyone who can write the file can recompute
  them (the hash function is public), and a cut at a line boundary leaves a valid, shorter chain.
* A signed checkpoint closes both holes: the collector signs ``(records, head hash, time, final)``
  with the investigator's Ed25519 private key every ``every`` records and when it closes, into
  ``<evidence>.manifest.json``. Rewriting history changes the head hash at the next checkpoint;
  truncating (even at a line boundary) leaves a signed checkpoint beyond the end of the file or a
  last signature that is not final; records appended after the last signature are reported as
  unsigned. Forging any of these needs the private key.
* What a signature cannot show is *when* it was made (the time in it is the signer's clock) or
  that a later, longer state never existed (the key holder can roll back to an earlier final
  checkpoint). Both need a third party: anchor the final manifest (see below).

Manifest (``format`` ``fingerprint-evidence-manifest``, ``version`` 1; public, mode 0644)::

    {"format": ..., "version": 1, "evidence": "<file name>", "algorithm": "ed25519",
     "public_key": "<base64 raw 32 bytes>", "public_key_sha256": "<hex>", "checkpoint_every": 1000,
     "checkpoints": [{"records": 1000, "head_sha256": "...", "signed_at": "<UTC ISO 8601>",
                      "final": false, "signature": "<base64>"}, ...],
     "records": <last checkpoint's>, "head_sha256": <last checkpoint's>, "final": <last checkpoint's>,
     "updated_at": "..."}

``records`` counts the chain's records, the header included (= lines of the file). Each signature
is over the canonical JSON (sorted keys, no spaces) of ``{"statement":
"fingerprint-evidence-checkpoint", "version": 1, "records", "head_sha256", "signed_at", "final",
"public_key_sha256"}``.

Anchoring with a third party
----------------------------
The head hash pins every record, so time-stamping the manifest (or the evidence file itself) at
the end of a collection proves the evidence existed, unchanged, at that time. With an RFC 3161
time-stamp authority (``openssl`` needed; copy the manifest first, because resuming a collection
rewrites it)::

    cp evidence.jsonl.manifest.json evidence.anchor.manifest.json
    openssl ts -query -data evidence.anchor.manifest.json -sha256 -cert -out evidence.anchor.tsq
    curl -sS -H 'Content-Type: application/timestamp-query' --data-binary @evidence.anchor.tsq \\
         https://freetsa.org/tsr -o evidence.anchor.tsr
    openssl ts -verify -data evidence.anchor.manifest.json -in evidence.anchor.tsr -CAfile cacert.pem -untrusted tsa.crt

Keep the ``.tsq``/``.tsr`` pair with the evidence. A notary (or an e-mail to opposing counsel, a
court filing) serves too: what matters is that a party the investigator does not control records
``head_sha256`` and ``records`` of the final checkpoint, and the public key's sha256. See
``docs/custody.md``. (A built-in ``--tsa-url`` client is not provided: it could not be tested
here without a network.)
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import InputError, KeyFileError, ParameterError
from ..secretfiles import read_secret_file, write_file_atomic
from .evidence import ChainCheck, canonical_json, check_chain, lock_evidence, manifest_path

__all__ = ["EvidenceSigner", "Checkpoint", "ManifestStatus", "CustodyCheck", "CustodyReport", "generate_signing_key",
           "public_key_path", "load_signing_key", "load_public_key", "public_key_sha256", "check_custody",
           "check_inputs", "sign_evidence", "MANIFEST_FORMAT", "DEFAULT_CHECKPOINT_EVERY"]

MANIFEST_FORMAT = "fingerprint-evidence-manifest"
MANIFEST_VERSION = 1
STATEMENT = "fingerprint-evidence-checkpoint"
#: Records between two signed checkpoints (one more is signed when the writer closes).
DEFAULT_CHECKPOINT_EVERY = 1000
_HEX = set("0123456789abcdef")


# ---- keys ------------------------------------------------------------------------------
def public_key_sha256(key: Ed25519PublicKey) -> str:
    """SHA-256 hex of the raw 32-byte public key: how reports and manifests name a key."""
    return hashlib.sha256(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).hexdigest()


def public_key_path(private_path: str | os.PathLike[str]) -> Path:
    """Where :func:`generate_signing_key` puts the public key: ``investigator.key`` ->
    ``investigator.pub``; a name without a suffix gets ``.pub`` appended."""
    p = Path(private_path)
    if p.suffix == ".pub":
        raise ParameterError(f"{p}: a private key file must not be named *.pub")
    return p.with_suffix(".pub") if p.suffix else p.with_name(p.name + ".pub")


def generate_signing_key(out: str | os.PathLike[str], *, overwrite: bool = False) -> tuple[Path, Path, str]:
    """Create the investigator's Ed25519 key pair: the private key as unencrypted PKCS#8 PEM
    (mode 0600) at ``out`` and the public key as PEM (mode 0644) at :func:`public_key_path`.
    Both are written atomically, never through a symlink; existing files are refused unless
    ``overwrite``. Returns (private path, public path, public key sha256)."""
    priv_path, pub_path = Path(out), public_key_path(out)
    if not overwrite:
        for p in (priv_path, pub_path):
            if os.path.lexists(p):
                raise KeyFileError(f"{p}: already exists; refusing to overwrite a key (pass --force)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    write_file_atomic(priv_path, pem, mode=0o600, overwrite=overwrite, what="signing key")
    write_file_atomic(pub_path, pub, mode=0o644, overwrite=overwrite, what="public key")
    return priv_path, pub_path, public_key_sha256(key.public_key())


def load_signing_key(path: str | os.PathLike[str], *, allow_insecure: bool = False) -> Ed25519PrivateKey:
    """The investigator's private key (PEM), after the permission checks of
    :func:`~fingerprint.secretfiles.read_secret_file`."""
    raw = read_secret_file(path, what="signing key", allow_insecure=allow_insecure)
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key (make one with `fingerprint evidence keygen`)")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (``fingerprint evidence keygen`` writes ``*.pub``)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read public key: {exc.strerror}") from None
    if b"PRIVATE KEY" in raw:
        raise KeyFileError(f"{path}: is a private key; give the public key (the .pub file)")
    try:
        key = serialization.load_pem_public_key(raw)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key")
    return key


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


# ---- the manifest ----------------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoint:
    """One signed checkpoint: after ``records`` records the head hash was ``head_sha256``."""

    records: int
    head_sha256: str
    signed_at: str
    final: bool
    signature: str  # base64

    def statement(self, key_sha256: str) -> bytes:
        """The bytes the signature is over."""
        return canonical_json({"statement": STATEMENT, "version": MANIFEST_VERSION, "records": self.records,
                               "head_sha256": self.head_sha256, "signed_at": self.signed_at, "final": self.final,
                               "public_key_sha256": key_sha256}).encode("utf-8")

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "head_sha256": self.head_sha256, "signed_at": self.signed_at,
                "final": self.final, "signature": self.signature}


class _BadManifest(Exception):
    pass


@dataclass
class _Manifest:
    key: Ed25519PublicKey
    key_sha256: str
    checkpoints: list[Checkpoint]
    raw_sha256: str


def _b64(value: Any, name: str, size: int) -> bytes:
    if not isinstance(value, str):
        raise _BadManifest(f"field {name!r} must be a base64 string")
    try:
        out = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _BadManifest(f"field {name!r} is not base64") from None
    if len(out) != size:
        raise _BadManifest(f"field {name!r} must hold {size} bytes, holds {len(out)}")
    return out


def _parse_manifest(path: Path) -> _Manifest:
    """Parse and check a manifest's own consistency (every signature against its embedded key);
    raises :class:`_BadManifest` naming the field or checkpoint."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _BadManifest(f"cannot read: {exc.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _BadManifest(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _BadManifest("not a JSON object")
    if data.get("format") != MANIFEST_FORMAT:
        raise _BadManifest(f"field 'format' must be {MANIFEST_FORMAT!r}")
    if data.get("version") != MANIFEST_VERSION or isinstance(data.get("version"), bool):
        raise _BadManifest(f"field 'version' must be {MANIFEST_VERSION}, got {data.get('version')!r}")
    if data.get("algorithm") != "ed25519":
        raise _BadManifest(f"field 'algorithm' must be 'ed25519', got {data.get('algorithm')!r}")
    key = Ed25519PublicKey.from_public_bytes(_b64(data.get("public_key"), "public_key", 32))
    key_sha = public_key_sha256(key)
    if data.get("public_key_sha256") != key_sha:
        raise _BadManifest("field 'public_key_sha256' does not match field 'public_key'")
    cps = data.get("checkpoints")
    if not isinstance(cps, list) or not cps:
        raise _BadManifest("field 'checkpoints' must be a non-empty list")
    out: list[Checkpoint] = []
    for i, c in enumerate(cps):
        where = f"checkpoint {i + 1}"
        if not isinstance(c, dict):
            raise _BadManifest(f"{where}: not an object")
        n, head, at, final = c.get("records"), c.get("head_sha256"), c.get("signed_at"), c.get("final")
        if type(n) is not int or n < 1:
            raise _BadManifest(f"{where}: field 'records' must be an integer >= 1")
        if not isinstance(head, str) or len(head) != 64 or not set(head) <= _HEX:
            raise _BadManifest(f"{where}: field 'head_sha256' must be 64 lowercase hex digits")
        if not isinstance(at, str) or not isinstance(final, bool):
            raise _BadManifest(f"{where}: fields 'signed_at' (string) and 'final' (boolean) required")
        sig = _b64(c.get("signature"), f"checkpoints[{i}].signature", 64)
        cp = Checkpoint(n, head, at, final, c["signature"])
        try:
            key.verify(sig, cp.statement(key_sha))
        except InvalidSignature:
            raise _BadManifest(f"{where} (records {n}, signed at {at}): the signature does not verify (the "
                               f"manifest was edited, or signed with another key)") from None
        if out and (n < out[-1].records or (n == out[-1].records and head != out[-1].head_sha256)):
            raise _BadManifest(f"{where}: records {n} after {out[-1].records} (checkpoints out of order)")
        out.append(cp)
    last = out[-1]
    if (data.get("records"), data.get("head_sha256"), data.get("final")) != (last.records, last.head_sha256,
                                                                               last.final):
        raise _BadManifest("fields 'records', 'head_sha256', 'final' differ from the last signed checkpoint")
    return _Manifest(key, key_sha, out, hashlib.sha256(raw).hexdigest())


def _match_chain(m: _Manifest, chain: ChainCheck, *, whole: bool = True) -> list[tuple[int | None, str]]:
    """(line, problem) for each way the chain departs from the signed checkpoints; with
    ``whole``, also records after the last signature and a last signature that is not final."""
    problems: list[tuple[int | None, str]] = []
    matched = 0
    for cp in m.checkpoints:
        if cp.records > chain.records:
            if chain.ok:
                problems.append((chain.records + 1, f"truncated: a checkpoint signed at {cp.signed_at} covers "
                                                    f"{cp.records:,} records, the file holds {chain.records:,}"))
            else:
                problems.append((chain.first_bad_line, f"a checkpoint signed at {cp.signed_at} covers "
                                                       f"{cp.records:,} records; the chain is intact only up to "
                                                       f"{chain.records:,}"))
            return problems
        if chain.heads.get(cp.records) != cp.head_sha256:
            problems.append((matched + 1, f"lines {matched + 1}-{cp.records} differ from what was signed at "
                                          f"{cp.signed_at} (head hash after line {cp.records} is not the signed "
                                          f"one): the history was rewritten"))
            return problems
        matched = cp.records
    last = m.checkpoints[-1]
    if not whole:
        return problems
    if chain.ok and chain.records > last.records:
        problems.append((last.records + 1, f"lines {last.records + 1}-{chain.records} are not signed (added after "
                                           f"the last signature at {last.signed_at}: forged, or a collection killed "
                                           f"before it signed; resuming it with its signing key signs them)"))
    elif not last.final:
        problems.append((None, f"the last signature ({last.signed_at}, {last.records:,} records) is not final: the "
                               f"collection was interrupted, or the file was cut back to a checkpoint (resume the "
                               f"collection with its signing key, or `fingerprint evidence sign`)"))
    return problems


# ---- signing -----------------------------------------------------------------------------
class EvidenceSigner:
    """Signs checkpoints of one evidence file with the investigator's Ed25519 key.

    Give it to :func:`~fingerprint.collect.evidence.open_for_append` (``signer=``): the writer
    calls :meth:`prepare` and :meth:`resume` when opening (an existing manifest must be signed
    with this key and match the chain), :meth:`checkpoint` every ``every`` records and, with
    ``final=True``, at close. Each checkpoint rewrites ``<evidence>.manifest.json`` atomically.
    """

    def __init__(self, private_key: Ed25519PrivateKey, *, every: int = DEFAULT_CHECKPOINT_EVERY,
                 clock: Callable[[], str] = _now) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ParameterError(f"checkpoint interval must be an integer >= 1, got {every!r}")
        self._key = private_key
        self.public_key = private_key.public_key()
        self.public_key_sha256 = public_key_sha256(self.public_key)
        self.every = every
        self._clock = clock
        self._evidence: Path | None = None
        self._checkpoints: list[Checkpoint] = []

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, every: int = DEFAULT_CHECKPOINT_EVERY,
                  allow_insecure: bool = False) -> "EvidenceSigner":
        """A signer with the private key at ``path`` (see :func:`load_signing_key`)."""
        return cls(load_signing_key(path, allow_insecure=allow_insecure), every=every)

    def __repr__(self) -> str:
        return f"EvidenceSigner(public_key_sha256={self.public_key_sha256!r}, every={self.every})"

    def __getstate__(self) -> None:
        raise TypeError("EvidenceSigner is not picklable (it would copy the private key)")

    @property
    def manifest(self) -> Path:
        if self._evidence is None:
            raise ParameterError("the signer is not attached to an evidence file (call prepare)")
        return manifest_path(self._evidence)

    def prepare(self, evidence: Path) -> Collection[int]:
        """Attach to ``evidence``; read and check its manifest if there is one (raises
        :class:`InputError` when it is invalid or signed with another key)."""
        self._evidence = Path(evidence)
        self._checkpoints = []
        mp = manifest_path(self._evidence)
        if not mp.exists():
            return ()
        try:
            m = _parse_manifest(mp)
        except _BadManifest as exc:
            raise InputError(f"{mp}: {exc}; refusing to sign on top of it") from None
        if m.key_sha256 != self.public_key_sha256:
            raise InputError(f"{mp}: signed with key {m.key_sha256[:16]}, not with this signing key "
                             f"({self.public_key_sha256[:16]}); use the original key or another --out file")
        self._checkpoints = list(m.checkpoints)
        return {cp.records for cp in m.checkpoints}

    def resume(self, chain: ChainCheck | None) -> None:
        """Check the existing chain (``None``: a new, empty file) against the manifest read by
        :meth:`prepare`; raise :class:`InputError` if it was rewritten or truncated."""
        if not self._checkpoints:
            return
        if chain is None:
            raise InputError(f"{self.manifest}: signed checkpoints exist but the evidence file {self._evidence} "
                             f"is empty; restore the evidence or move the manifest away")
        m = _Manifest(self.public_key, self.public_key_sha256, self._checkpoints, "")
        intact = ChainCheck(True, chain.records, chain.last_sha256, heads=chain.heads)  # the torn tail is cut
        problems = _match_chain(m, intact, whole=False)
        if problems:
            line, problem = problems[0]
            raise InputError(f"{self._evidence} line {line}: {problem}; refusing to append")

    def due(self, records: int) -> bool:
        return records % self.every == 0

    def checkpoint(self, records: int, head_sha256: str, *, final: bool) -> Checkpoint:
        """Sign ``(records, head_sha256)`` now and rewrite the manifest."""
        if self._evidence is None:
            raise ParameterError("the signer is not attached to an evidence file (call prepare)")
        last = self._checkpoints[-1] if self._checkpoints else None
        if (last is not None and (last.records, last.head_sha256) == (records, head_sha256)
                and (last.final or not final)):
            return last  # nothing new to sign
        unsigned = Checkpoint(records, head_sha256, self._clock(), final, "")
        sig = self._key.sign(unsigned.statement(self.public_key_sha256))
        cp = Checkpoint(records, head_sha256, unsigned.signed_at, final, base64.b64encode(sig).decode("ascii"))
        self._checkpoints.append(cp)
        raw = self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        doc = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "evidence": self._evidence.name,
               "algorithm": "ed25519", "public_key": base64.b64encode(raw).decode("ascii"),
               "public_key_sha256": self.public_key_sha256, "checkpoint_every": self.every,
               "checkpoints": [c.to_dict() for c in self._checkpoints], "records": cp.records,
               "head_sha256": cp.head_sha256, "final": cp.final, "updated_at": cp.signed_at}
        write_file_atomic(self.manifest, (json.dumps(doc, indent=1) + "\n").encode("utf-8"), mode=0o644,
                          overwrite=True, what="evidence manifest", error=InputError)
        return cp


def sign_evidence(path: str | os.PathLike[str], signer: EvidenceSigner) -> Checkpoint:
    """Sign the whole of an existing evidence file now (a final checkpoint), under its lock:
    evidence collected before signing existed, or a collection killed before its final
    signature. The chain must be intact (a torn tail is refused: resume the collection to cut
    it), and an existing manifest must match it and be signed by the same key."""
    path = Path(path)
    with lock_evidence(path, purpose="evidence sign"):
        want = signer.prepare(path)
        chain = check_chain(path, heads_at=want)
        if not chain.ok:
            raise InputError(f"{path} line {chain.first_bad_line}: {chain.problem}; refusing to sign a broken chain")
        signer.resume(chain)
        return signer.checkpoint(chain.records, chain.last_sha256, final=True)


# ---- checking --------------------------------------------------------------------------
@dataclass(frozen=True)
class ManifestStatus:
    """What the manifest of an evidence file says and whether it holds.

    ``trusted``: its key is one of the investigator public keys given; false when none was given
    (then its signatures are checked against its own embedded key only)."""

    path: str
    sha256: str | None
    ok: bool
    problem: str | None
    public_key_sha256: str | None
    trusted: bool
    checkpoints: int
    signed_records: int | None
    signed_head_sha256: str | None
    final: bool | None
    first_signed_at: str | None
    last_signed_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "ok": self.ok, "problem": self.problem,
                "public_key_sha256": self.public_key_sha256, "trusted": self.trusted,
                "checkpoints": self.checkpoints, "signed_records": self.signed_records,
                "signed_head_sha256": self.signed_head_sha256, "final": self.final,
                "first_signed_at": self.first_signed_at, "last_signed_at": self.last_signed_at}


@dataclass(frozen=True)
class CustodyCheck:
    """The chain and signature status of one evidence file.

    ``problems``: ``(line or None, what)`` for each finding, the chain's first; ``ok`` when there
    is none."""

    path: str
    chain: ChainCheck
    manifest: ManifestStatus | None
    problems: list[tuple[int | None, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def chain_status(self) -> str:
        return "intact" if self.chain.ok else "torn tail" if self.chain.torn_tail else "broken"

    def describe(self) -> str:
        """One line for a terminal or a report."""
        if self.problems:
            line, what = self.problems[0]
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            return f"{self.path}{f' line {line}' if line else ''}: BROKEN: {what}{more}"
        m = self.manifest
        sig = ("unsigned (no manifest)" if m is None else
               f"signed, final checkpoint at {m.last_signed_at} by key {m.public_key_sha256}"
               + ("" if m.trusted else " (the manifest's own key: pass --public-key to check it is the "
                                       "investigator's)"))
        return (f"{self.path}: chain intact, {self.chain.records:,} records, head sha256 {self.chain.last_sha256}; "
                f"{sig}")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "chain": self.chain_status, "records": self.chain.records,
                "head_sha256": self.chain.last_sha256,
                "problems": [{"line": line, "problem": what} for line, what in self.problems],
                "manifest": None if self.manifest is None else self.manifest.to_dict()}


def check_custody(path: str | os.PathLike[str], *, public_keys: Sequence[Ed25519PublicKey] = (),
                  require_signature: bool = False) -> CustodyCheck:
    """Check an evidence file's chain and, when ``<evidence>.manifest.json`` exists, every
    signed checkpoint against it. With ``public_keys`` the manifest must be signed by one of
    them; with ``require_signature`` a missing manifest is a problem. Raises
    :class:`InputError` only when the evidence file cannot be read."""
    path = Path(path)
    mp = manifest_path(path)
    trusted_shas = {public_key_sha256(k) for k in public_keys}
    m: _Manifest | None = None
    mstatus: ManifestStatus | None = None
    bad_manifest = None
    if mp.exists():
        try:
            m = _parse_manifest(mp)
        except _BadManifest as exc:
            bad_manifest = str(exc)
    chain = check_chain(path, heads_at={cp.records for cp in m.checkpoints} if m else ())
    problems: list[tuple[int | None, str]] = []
    if not chain.ok:
        problems.append((chain.first_bad_line, chain.problem or "broken"))
    if bad_manifest is not None:
        problems.append((None, f"manifest {mp}: {bad_manifest}"))
        mstatus = ManifestStatus(str(mp), _sha256_or_none(mp), False, bad_manifest, None, False, 0, None, None, None,
                                 None, None)
    elif m is not None:
        trusted = m.key_sha256 in trusted_shas
        found = _match_chain(m, chain)
        if trusted_shas and not trusted:
            found.insert(0, (None, f"manifest {mp} is signed by key {m.key_sha256}, not by the investigator's key "
                                   f"given ({', '.join(sorted(trusted_shas))})"))
        problems += [p for p in found if p not in problems]
        cps = m.checkpoints
        mstatus = ManifestStatus(str(mp), m.raw_sha256, not found, found[0][1] if found else None, m.key_sha256,
                                 trusted, len(cps), cps[-1].records, cps[-1].head_sha256, cps[-1].final,
                                 cps[0].signed_at, cps[-1].signed_at)
    elif require_signature or trusted_shas:
        problems.append((None, f"no manifest ({mp}): the evidence is not signed, so anyone who could write it "
                               f"could have rewritten it"))
    return CustodyCheck(str(path), chain, mstatus, problems)


def _sha256_or_none(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@dataclass
class CustodyReport:
    """The custody of every input of a verification (:func:`check_inputs`)."""

    evidence: list[CustodyCheck]
    unchained: list[dict[str, str]]
    public_keys: list[str]
    accepted_broken_chain: bool
    owner_records: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.evidence) and not (self.public_keys and self.unchained)

    def notes(self) -> list[str]:
        """Warnings for the report, loudest first."""
        out = []
        for c in self.evidence:
            if not c.ok:
                out.append(f"EVIDENCE CHAIN BROKEN: {c.describe()}. Its records were scored anyway "
                           f"(--accept-broken-chain): this result does not rest on intact evidence.")
        if self.public_keys:
            for u in self.unchained:
                out.append(f"INPUT NOT SIGNED EVIDENCE: {u['path']} ({u['reason']}); scored anyway "
                           f"(--accept-broken-chain).")
        unsigned = [c.path for c in self.evidence if c.ok and c.manifest is None]
        if unsigned:
            out.append(f"evidence not signed (no manifest): {', '.join(unsigned)}; its hash chain shows edits only by "
                       f"someone who did not recompute the later hashes (sign with collect --signing-key, check with "
                       f"--public-key)")
        selfsigned = [c.path for c in self.evidence if c.ok and c.manifest is not None and not c.manifest.trusted]
        if selfsigned:
            out.append(f"signatures of {', '.join(selfsigned)} were checked against the manifest's own key only; "
                       f"pass --public-key with the investigator's public key to tie them to the investigator")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "accepted_broken_chain": self.accepted_broken_chain,
                "public_keys": list(self.public_keys), "evidence": [c.to_dict() for c in self.evidence],
                "unchained": list(self.unchained), "owner_records": list(self.owner_records)}


_PARQUET = (".parquet", ".pq")
_NEEDLE = re.compile(rb'"prev_sha256"\s*:')  # the key, not a string value that happens to be its name


def _is_evidence_file(path: Path) -> bool:
    """Whether a local input is (or claims to be) chained evidence: a manifest next to it, or a
    JSONL file with a ``"prev_sha256"`` key anywhere in it (a file whose first line is not an
    evidence header then fails the chain check at line 1)."""
    if manifest_path(path).exists():
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
            if not (path.suffix.lower() in (".jsonl", ".json", ".ndjson") or head.lstrip()[:1] == b"{"):
                return False
            chunk, tail = head, b""
            while chunk:
                if _NEEDLE.search(tail + chunk):
                    return True
                tail = chunk[-256:]
                chunk = fh.read(1 << 20)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    return False


def check_inputs(paths: Sequence[str], *, public_keys: Sequence[Ed25519PublicKey] = (),
                 accept_broken: bool = False, owner_paths: Sequence[str] = ()) -> CustodyReport:
    """Check the custody of every input file of a verification (paths already expanded), before
    anything is read for scoring.

    Every evidence file's chain must be intact with no torn tail, and every manifest must hold;
    with ``public_keys`` every input in ``paths`` must be evidence signed by one of them.
    ``owner_paths`` are the owner's own records (served outputs): an evidence file among them
    must have an intact chain, but the investigator's signature is not asked of them (they are
    the owner's logs, not evidence gathered from the suspect), and plain files are listed in
    ``owner_records``. Otherwise raises :class:`InputError` naming the file and line, unless
    ``accept_broken`` (the report then says so, loudly: :meth:`CustodyReport.notes`)."""
    evidence: list[CustodyCheck] = []
    unchained: list[dict[str, str]] = []
    owner: list[dict[str, str]] = []
    for p in paths:
        path = Path(p)
        if "://" in p and not p.startswith("file://"):
            unchained.append({"path": p, "reason": "remote input: custody not checked"})
        elif path.suffix.lower() in _PARQUET:
            unchained.append({"path": p, "reason": "Parquet: no hash chain"})
        elif _is_evidence_file(path):
            evidence.append(check_custody(path, public_keys=public_keys, require_signature=bool(public_keys)))
        else:
            unchained.append({"path": p, "reason": "not evidence: no hash chain"})
    for p in owner_paths:
        path = Path(p)
        if "://" not in p and path.suffix.lower() not in _PARQUET and _is_evidence_file(path):
            evidence.append(check_custody(path))
        else:
            owner.append({"path": p, "reason": "the owner's served records: custody not checked"})
    report = CustodyReport(evidence, unchained, [public_key_sha256(k) for k in public_keys], accept_broken, owner)
    if not report.ok and not accept_broken:
        bad = [c.describe() for c in evidence if not c.ok]
        if public_keys:
            bad += [f"{u['path']}: not evidence signed by the investigator's key ({u['reason']})" for u in unchained]
        more = f" (and {len(bad) - 1} more input(s))" if len(bad) > 1 else ""
        raise InputError(f"{bad[0]}{more}; refusing to score evidence whose chain of custody does not hold "
                         f"(--accept-broken-chain scores it anyway and says so in the report)")
    return report
