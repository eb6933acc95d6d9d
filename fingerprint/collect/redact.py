"""Keeping secrets (API keys, secret headers) out of everything the collector writes.

:class:`Redactor` replaces every occurrence of a secret in a string, in every encoding a
server or a library is likely to use: raw, JSON-escaped (``\\"``, ``\\uXXXX``), URL-encoded
(``%XX`` either case, ``+`` for spaces), base64 (standard and URL-safe, at every byte
alignment, so ``Basic`` credentials and longer encoded strings are caught), hex, and any
prefix of at least :data:`MIN_PREFIX` characters of one of these (a secret cut by truncation).
Each replaced span becomes :data:`MARKER`. Lists of byte values (a logprob token's ``bytes``)
are scrubbed as the text they spell. Not caught: a secret split over several logprob tokens
(each token too short to match; the response text that joins them is scrubbed).

Which headers are secret: a name matching :data:`SECRET_HEADER_PATTERN` (``Authorization``,
``Api-Key``, ``X-Auth-Token``, ``Cookie``, ``X-Secret``, ``Password``...) or named with
``--secret-header``. Their values are redacted in the evidence header and scrubbed everywhere
else; for ``<scheme> <credential>`` values (``Bearer``, ``Basic``...) and cookies the
credential parts are secrets too (a ``Basic`` credential's decoded ``user:password`` and
password as well).

Secrets shorter than :data:`MIN_SECRET` characters are not scrubbed (replacing every ``"abc"``
would rewrite the suspect's text); :func:`short_secrets` names them so the caller can warn.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Iterable
from urllib.parse import quote, quote_plus

__all__ = ["Redactor", "MARKER", "MIN_PREFIX", "MIN_SECRET", "SECRET_HEADER_PATTERN", "is_secret_header",
           "header_secrets", "short_secrets"]

MARKER = "<redacted>"
#: A prefix of a secret (or of one of its encodings) this long or longer is scrubbed.
MIN_PREFIX = 8
#: Secrets shorter than this are not scrubbed (see the module docstring).
MIN_SECRET = 4
#: Header names whose values are secret (case-insensitive search).
SECRET_HEADER_PATTERN = re.compile(r"auth|api[-_]?key|key|token|secret|cookie|passw|session|credential|signature",
                                   re.IGNORECASE)


def is_secret_header(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether a header's value is secret: by name pattern or listed in ``extra``."""
    return bool(SECRET_HEADER_PATTERN.search(name)) or name.lower() in {e.lower() for e in extra}


def header_secrets(value: str) -> list[str]:
    """The secrets in a secret header's value: the value, the credential of ``<scheme>
    <credential>``, a ``Basic`` credential decoded (``user:password`` and the password) and
    each cookie value."""
    out = [value]
    parts = value.split(None, 1)
    if len(parts) == 2 and re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", parts[0]):
        cred = parts[1].strip()
        out.append(cred)
        if parts[0].lower() == "basic":
            try:
                decoded = base64.b64decode(cred, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                decoded = ""
            if decoded:
                out.append(decoded)
                if ":" in decoded:
                    out.append(decoded.split(":", 1)[1])
    if "=" in value:
        for item in value.split(";"):
            if "=" in item:
                out.append(item.split("=", 1)[1].strip())
    return [s for s in dict.fromkeys(out) if s]


def short_secrets(secrets: Iterable[str]) -> int:
    """How many of ``secrets`` are too short to be scrubbed."""
    return sum(1 for s in secrets if 0 < len(s) < MIN_SECRET)


def _b64_cores(data: bytes) -> list[str]:
    """The base64 characters that depend only on ``data``, at each of the three alignments it
    can have inside a longer encoded string, in both alphabets."""
    cores = []
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + data).decode("ascii")
        # character c holds bits [6c, 6c + 6): keep those lying wholly inside the data's bits
        core = enc[-(-8 * k // 6):8 * (k + len(data)) // 6]
        if len(core) >= MIN_SECRET:
            cores.append(core)
            cores.append(core.replace("+", "-").replace("/", "_"))
    return cores


def _variants(secret: str) -> list[str]:
    raw = secret.encode("utf-8")
    forms = [secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=True)[1:-1],
             "".join(f"\\u{ord(c):04x}" for c in secret), "".join(f"\\u{ord(c):04X}" for c in secret),
             quote(secret, safe=""), quote_plus(secret, safe=""), quote(secret), raw.hex(), raw.hex().upper()]
    forms += [re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), f) for f in forms[5:8]]
    forms += _b64_cores(raw)
    seen: dict[str, None] = {}
    for f in forms:
        if len(f) >= MIN_SECRET:
            seen[f] = None
    return sorted(seen, key=len, reverse=True)


class Redactor:
    """Scrubs a fixed set of secrets from strings and from JSON-like values (see the module docstring)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._variants: list[str] = []
        for s in secrets:
            if s and len(s) >= MIN_SECRET:
                self._variants.extend(_variants(s))
        self._variants = sorted(dict.fromkeys(self._variants), key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._variants)

    def text(self, s: str) -> tuple[str, int]:
        """``s`` with every secret span replaced by :data:`MARKER`; and how many spans were."""
        n = 0
        for v in self._variants:
            need = min(len(v), MIN_PREFIX)
            head = v[:need]
            if head not in s:
                continue
            out = []
            pos = 0
            while True:
                i = s.find(head, pos)
                if i < 0:
                    break
                j = i + need
                while j - i < len(v) and j < len(s) and s[j] == v[j - i]:
                    j += 1
                out.append(s[pos:i])
                out.append(MARKER)
                n += 1
                pos = j
            out.append(s[pos:])
            s = "".join(out)
        return s, n

    def scrub(self, s: str) -> str:
        """:meth:`text` without the count."""
        return self.text(s)[0] if self._variants else s

    def value(self, obj: Any) -> tuple[Any, int]:
        """A copy of a JSON-like value with every string (keys included) scrubbed; and the count."""
        if not self._variants:
            return obj, 0
        total = 0

        def walk(v: Any) -> Any:
            nonlocal total
            if isinstance(v, str):
                t, n = self.text(v)
                total += n
                return t
            if isinstance(v, dict):
                return {walk(k): walk(x) for k, x in v.items()}
            if isinstance(v, list):
                if len(v) >= MIN_SECRET and all(type(x) is int and 0 <= x <= 255 for x in v):
                    # a byte list (a logprob token's "bytes"): scrub it as Latin-1 text
                    t, n = self.text(bytes(v).decode("latin-1"))
                    if n:
                        total += n
                        return list(t.encode("latin-1"))
                    return v
                return [walk(x) for x in v]
            return v

        return walk(obj), total
