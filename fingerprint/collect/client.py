"""Collecting a suspect model's responses over an OpenAI-compatible API, as evidence.

``collect()`` sends one request per (prompt, sample) to ``/v1/chat/completions`` or
``/v1/completions`` with httpx (async), under a concurrency limit and an optional request
rate limit, and appends one chained evidence record per exchange (see
:mod:`fingerprint.collect.evidence`).

**The suspect is untrusted.** Every attempt has a total deadline (connect to last byte,
``request_deadline``), on top of httpx's per-read timeout, so a body trickled a byte at a time
ends. The body is streamed and read at most ``max_body_bytes`` on the wire and after gzip or
deflate decoding (decompressed in bounded steps, so a gzip bomb stops at the cap). A 200 body
counts as an answer only when it passes :func:`fingerprint.apiformat.read_choices` (every field
the verifier reads is checked as data: choices, text, logprobs); anything else is a failed
attempt with the reason. NaN and +/-Infinity are read as numbers and stored as the strings
``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (:func:`fingerprint.apiformat.storable`), so every
record is strict JSON and its hash is the hash of what is written.

Retries: connection errors, timeouts, missed deadlines, oversized or malformed bodies and HTTP
408, 409, 429 and 5xx are retried with exponential backoff and full jitter, honouring
``Retry-After`` up to ``retry_after_max`` seconds; other 4xx are recorded as failures at once.
When the attempts run out the exchange is recorded as a failure (``status``, ``error`` and
``attempt_log`` say why). Rerunning the same command resumes: (prompt, sample) pairs that
already have a valid successful record are not asked again (an old record whose body fails
validation does not count). An unexpected error while handling one response is recorded as a
failure of that exchange; an error while writing stops new requests, lets those in flight
finish and be written, then propagates: no finished exchange is lost.

**Secrets.** The API key is read from an environment variable, stripped, and refused if it
holds control or non-ASCII characters; it is sent only in the ``Authorization`` header. It and
the values of secret headers (:func:`fingerprint.collect.redact.is_secret_header`, plus
``secret_headers``) are scrubbed from every record (response bodies, error messages and
headers included) and from the progress output, in every encoding
(:class:`fingerprint.collect.redact.Redactor`); a record where something was scrubbed carries
``"redacted": <count>``. Base URLs carrying credentials (``user:password@``) or query
parameters named like credentials (``key``, ``token``, ``secret``...) are refused.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import email.utils
import json
import math
import os
import random
import re
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence
from urllib.parse import parse_qsl, urlsplit

import httpx

from ..apiformat import ResponseError, parse_body, read_choices, record_choices, request_prompt, storable
from ..errors import InputError, ParameterError
from .evidence import open_for_append
from .redact import MIN_SECRET, Redactor, header_secrets, is_secret_header, short_secrets

__all__ = ["PromptRecord", "CollectSettings", "ClientLimits", "CollectStats", "read_prompts", "collect",
           "run_collect", "clean_api_key", "RETRY_STATUSES", "DEFAULT_MAX_BODY", "DEFAULT_DEADLINE",
           "DEFAULT_RETRY_AFTER_MAX", "StopMonitor"]

RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
#: Largest response body read, on the wire and decompressed (bytes).
DEFAULT_MAX_BODY = 16 * 1024 * 1024
#: Total seconds one attempt may take, connect to last byte.
DEFAULT_DEADLINE = 120.0
#: Longest ``Retry-After`` honoured (seconds).
DEFAULT_RETRY_AFTER_MAX = 60.0
#: Characters of a failed body kept in the error message (after scrubbing).
_EXCERPT = 300
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Query parameter names that carry credentials (refused in a base URL).
_SECRET_PARAM = re.compile(r"key|token|secret|passw|auth|sig|session|credential|code", re.IGNORECASE)


@dataclass(frozen=True)
class PromptRecord:
    """A prompt to send: ``prompt`` (a string) or ``messages`` (an OpenAI messages list)."""

    id: str
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None


def read_prompts(path: str | os.PathLike[str]) -> list[PromptRecord]:
    """Read prompts JSONL: ``{"id", "prompt"}`` or ``{"id", "messages"}`` per line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read prompts: {exc.strerror}") from None
    out: list[PromptRecord] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path} line {lineno}"
        try:
            obj = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InputError(f"{where}: not valid UTF-8 (byte {exc.start} of the line)") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON (column {exc.colno}: {exc.msg})") from None
        except (RecursionError, ValueError):
            raise InputError(f"{where}: not valid JSON (nested too deeply or a number too long)") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object")
        if "id" not in obj:
            raise InputError(f'{where}: field "id" missing')
        pid = obj["id"]
        if not isinstance(pid, (str, int)) or isinstance(pid, bool):
            raise InputError(f'{where}: field "id" must be a string or an integer')
        pid = str(pid)
        if pid in seen:
            raise InputError(f'{where}: id "{pid}" already used on line {seen[pid]}')
        seen[pid] = lineno
        if "messages" in obj:
            msgs = obj["messages"]
            if not isinstance(msgs, list) or not msgs or not all(
                    isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
                raise InputError(f'{where}: field "messages" must be a non-empty list of '
                                 f'{{"role", "content"}} objects')
            out.append(PromptRecord(pid, messages=msgs))
        elif "prompt" in obj:
            if not isinstance(obj["prompt"], str):
                raise InputError(f'{where}: field "prompt" must be a string')
            out.append(PromptRecord(pid, prompt=obj["prompt"]))
        else:
            raise InputError(f'{where}: field "prompt" (or "messages") missing')
    if not out:
        raise InputError(f"{path}: no prompts")
    return out


def clean_api_key(value: str, source: str) -> str:
    """The API key with surrounding whitespace stripped; refuses an empty key and one holding
    control, space or non-ASCII characters (the message gives the position, never the key).
    ``source`` names where it came from, e.g. ``environment variable SUSPECT_KEY (--api-key-env)``."""
    key = value.strip()
    if not key:
        raise InputError(f"{source} is empty")
    for i, ch in enumerate(key, start=1):
        if not 0x21 <= ord(ch) <= 0x7E:
            kind = "non-ASCII" if ord(ch) > 0x7E else "space or control"
            raise InputError(f"{source}: the API key holds a {kind} character at position {i} of {len(key)}; "
                             f"an API key is printable ASCII (the key is not shown)")
    return key


def _check_base_url(text: str) -> None:
    """Refuse a base URL that is malformed or carries credentials (see the module docstring)."""
    shown = repr(text) if "@" not in text else "(not shown: it holds '@')"
    for i, ch in enumerate(text, start=1):
        if ord(ch) <= 0x20 or ord(ch) == 0x7F:
            raise ParameterError(f"--base-url {shown}: a space or control character at position {i}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ParameterError(f"--base-url {shown}: not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ParameterError(f"base URL must start with http:// or https://, got {shown}")
    if "@" in parts.netloc:
        raise ParameterError("--base-url carries credentials (user:password@host): they would be sent in the clear "
                             "in every log; pass the API key with --api-key-env, or a header with "
                             "--header 'Name: value' (secret header names are scrubbed, see --secret-header)")
    host = parts.hostname or ""
    if not host or not all(c.isalnum() or c in ".-_~:%" for c in host):
        raise ParameterError(f"--base-url {shown}: no valid host name")
    if port == 0:
        raise ParameterError(f"--base-url {shown}: port 0")
    if parts.fragment or text.endswith("#"):
        raise ParameterError(f"--base-url {shown}: a URL fragment ('#...') has no meaning here")
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_PARAM.search(name):
            raise ParameterError(f"--base-url query parameter {name!r} looks like a credential and would be "
                                 f"written to the evidence; send it as a header instead (--header 'Name: value', "
                                 f"scrubbed when the name looks secret or is given to --secret-header)")


def _finite(name: str, value: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParameterError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ParameterError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if high is not None and value > high:
        raise ParameterError(f"{name} must be <= {high:g}, got {value!r}")


@dataclass(frozen=True)
class CollectSettings:
    """What is asked of the suspect API; recorded in the evidence header (no secrets).

    ``sampling`` holds the request's sampling parameters (``temperature``, ``top_p``,
    ``max_tokens``, ``seed``, ``n``, ``stop``; None ones are not sent). With ``seed`` set,
    sample ``k`` of a prompt is sent with ``seed + k``. ``secret_headers``: header names whose
    values are secret besides those matched by name (redacted in the header, scrubbed
    everywhere; not recorded).
    """

    base_url: str
    model: str
    endpoint: str = "chat"
    sampling: dict[str, Any] = field(default_factory=dict)
    logprobs: int | None = None
    echo: bool = False
    samples: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    api_key_env: str | None = None
    secret_headers: tuple[str, ...] = ()

    def validate(self) -> None:
        """Raise :class:`ParameterError` naming the first bad setting (before any request)."""
        if self.endpoint not in ("chat", "completions"):
            raise ParameterError(f"endpoint must be 'chat' or 'completions', got {self.endpoint!r}")
        _check_base_url(self.base_url)
        if not isinstance(self.model, str) or not self.model:
            raise ParameterError("model must be a non-empty string")
        if self.samples < 1:
            raise ParameterError(f"samples must be >= 1, got {self.samples}")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise ParameterError(f"logprobs must be in [0, 20], got {self.logprobs}")
        if self.echo and self.endpoint != "completions":
            raise ParameterError("echo (prompt logprobs, reading mode) needs --endpoint completions")
        s = self.sampling
        _finite("temperature", s.get("temperature"), low=0.0)
        _finite("top_p", s.get("top_p"), low=0.0, high=1.0, low_open=True)
        for name, low in (("max_tokens", 0), ("n", 1)):
            v = s.get(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
                raise ParameterError(f"{name} must be an integer >= {low}, got {v!r}")
        seed = s.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ParameterError(f"seed must be an integer, got {seed!r}")
        stop = s.get("stop")
        if stop is not None and not (isinstance(stop, list) and all(isinstance(x, str) for x in stop)):
            raise ParameterError("stop must be a list of strings")
        for name in self.secret_headers:
            if not _HEADER_NAME.fullmatch(name):
                raise ParameterError(f"--secret-header {name!r}: not a valid header name")
        for name, value in self.headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ParameterError(f"--header {name!r}: not a valid header name")
            if not isinstance(value, str):
                raise ParameterError(f"--header {name}: the value must be a string")
            for i, ch in enumerate(value, start=1):
                if (ord(ch) < 0x20 and ch != "\t") or ord(ch) >= 0x7F:
                    kind = "non-ASCII" if ord(ch) > 0x7F else "control"
                    raise ParameterError(f"--header {name}: the value holds a {kind} character at position {i} "
                                         f"(the value is not shown)")

    def is_secret(self, header: str) -> bool:
        """Whether ``header``'s value is secret (by name pattern or ``secret_headers``)."""
        return is_secret_header(header, self.secret_headers)

    def secrets(self) -> list[str]:
        """The secret header values (and their credential parts) to scrub."""
        out: list[str] = []
        for name, value in self.headers.items():
            if self.is_secret(name):
                out.extend(header_secrets(value.strip()))
        return out

    @property
    def url(self) -> str:
        text, _, query = self.base_url.partition("?")
        base = text.rstrip("/")
        if not base.endswith("/v1"):
            base += "/v1"
        url = f"{base}/{'chat/completions' if self.endpoint == 'chat' else 'completions'}"
        return f"{url}?{query}" if query else url

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        del d["secret_headers"]  # not recorded: the redacted values below show which were secret
        d["headers"] = {k: ("<redacted>" if self.is_secret(k) else v) for k, v in self.headers.items()}
        d["url"] = self.url
        return d

    def body(self, prompt: PromptRecord, sample: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model}
        if self.endpoint == "chat":
            body["messages"] = prompt.messages if prompt.messages is not None else [
                {"role": "user", "content": prompt.prompt}]
            if self.logprobs is not None:
                body["logprobs"] = True
                body["top_logprobs"] = self.logprobs
        else:
            if prompt.prompt is None:
                raise InputError(f"prompt {prompt.id}: the completions endpoint needs a string prompt, "
                                 f"not messages")
            body["prompt"] = prompt.prompt
            if self.logprobs is not None:
                body["logprobs"] = self.logprobs
            if self.echo:
                body["echo"] = True
        for name, value in self.sampling.items():
            if value is not None:
                body[name] = value
        if self.sampling.get("seed") is not None:
            body["seed"] = int(self.sampling["seed"]) + sample
        return body


@dataclass(frozen=True)
class ClientLimits:
    """Concurrency, rate, timeouts (seconds), caps and retry policy.

    ``read_timeout`` bounds each wait for bytes; ``request_deadline`` bounds a whole attempt
    (connect to last byte); ``max_body_bytes`` caps a response body on the wire and after
    decompression; ``retry_after_max`` caps the ``Retry-After`` honoured."""

    concurrency: int = 16
    rate: float = 0.0  # requests per second; 0 = unlimited
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = DEFAULT_RETRY_AFTER_MAX
    request_deadline: float = DEFAULT_DEADLINE
    max_body_bytes: int = DEFAULT_MAX_BODY

    def validate(self) -> None:
        """Raise :class:`ParameterError` naming the first bad limit."""
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ParameterError(f"concurrency must be an integer >= 1, got {self.concurrency!r}")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ParameterError(f"max attempts must be an integer >= 1, got {self.max_attempts!r}")
        if isinstance(self.max_body_bytes, bool) or not isinstance(self.max_body_bytes, int) or \
                self.max_body_bytes < 1024:
            raise ParameterError(f"max body must be an integer >= 1024 bytes, got {self.max_body_bytes!r}")
        _finite("rate", self.rate, low=0.0)
        for name in ("connect_timeout", "read_timeout", "request_deadline"):
            _finite(name.replace("_", " "), getattr(self, name), low=0.0, low_open=True)
        for name in ("backoff_base", "backoff_max", "retry_after_max"):
            _finite(name.replace("_", " "), getattr(self, name), low=0.0)


@dataclass
class CollectStats:
    """What a collection run did."""

    planned: int = 0
    already_done: int = 0
    collected: int = 0
    failed: int = 0
    retries: int = 0
    elapsed: float = 0.0
    last_sha256: str = ""
    #: A stopping rule ended the collection before its budget.
    stopped_early: bool = False
    #: Earlier successful records whose body fails validation (their pairs are asked again).
    invalid_existing: int = 0
    #: Exchanges that met an unexpected error in the collector (recorded as failures).
    internal_errors: int = 0
    #: Records in which a secret was scrubbed.
    redacted_records: int = 0

    @property
    def rate(self) -> float:
        return (self.collected + self.failed) / self.elapsed if self.elapsed > 0 else 0.0


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _retry_after(value: str | None) -> float | None:
    """Seconds asked by a ``Retry-After`` header (delta seconds or an HTTP date); None when
    absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return max(0.0, (when - _dt.datetime.now(_dt.timezone.utc)).total_seconds())


class _RateLimiter:
    """Spaces request starts at least ``1 / rate`` seconds apart (0 = no limit)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self._interval:
            return
        async with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self._interval
        if delay > 0:
            await asyncio.sleep(delay)


class _BodyError(Exception):
    """A body that could not be read within the caps (the message is the reason)."""


class _BoundedBody:
    """Accumulates a response body, decoding gzip/deflate in bounded steps; raises
    :class:`_BodyError` as soon as the wire or decoded size passes ``cap``."""

    def __init__(self, encoding: str, cap: int) -> None:
        self.cap = cap
        self.wire = 0
        self._parts: list[bytes] = []
        self._size = 0
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if len(codings) > 1:
            raise _BodyError(f"unsupported Content-Encoding {encoding[:40]!r} (more than one coding)")
        self._coding = codings[0] if codings else ""
        self._d: Any = None
        if codings:
            if codings[0] in ("gzip", "x-gzip"):
                self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            elif codings[0] == "deflate":
                self._d = zlib.decompressobj()
            else:
                raise _BodyError(f"unsupported Content-Encoding {codings[0][:40]!r}")

    def _add(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self.cap:
            raise _BodyError(f"response body over {self.cap:,} bytes decompressed (--max-body)")
        self._parts.append(data)

    def _inflate(self, data: bytes) -> None:
        while data:
            try:
                out = self._d.decompress(data, self.cap - self._size + 1)
            except zlib.error as exc:
                if self._coding == "deflate" and self._size == 0 and self.wire == len(data):
                    # "deflate" sent as raw deflate (no zlib header), as some servers do
                    self._coding = "raw deflate"
                    self._d = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise _BodyError(f"body does not decompress ({exc})") from None
            self._add(out)
            data = self._d.unconsumed_tail

    def feed(self, chunk: bytes) -> None:
        self.wire += len(chunk)
        if self.wire > self.cap:
            raise _BodyError(f"response body over {self.cap:,} bytes (--max-body)")
        if self._d is None:
            self._add(chunk)
        else:
            self._inflate(chunk)

    def finish(self) -> bytes:
        if self._d is not None:
            while True:
                out = self._d.decompress(b"", self.cap - self._size + 1)
                if not out:
                    break
                self._add(out)
            try:
                self._add(self._d.flush())
            except zlib.error as exc:
                raise _BodyError(f"body does not decompress ({exc})") from None
        return b"".join(self._parts)


@dataclass
class _Attempt:
    status: int | None = None
    response: Any = None
    error: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    internal: bool = False
    #: Secret spans scrubbed from this attempt's error message.
    redacted: int = 0


def _excerpt(data: bytes, redactor: Redactor) -> tuple[str, int]:
    """The start of a failed body, for the error message: JSON re-written with its escapes
    decoded (so an escaped secret is scrubbed), scrubbed *before* it is cut."""
    text = data[:65536].decode("utf-8", errors="replace")
    if len(data) <= 65536:
        try:
            text = json.dumps(json.loads(data), ensure_ascii=False)
        except (ValueError, RecursionError):
            pass
    text, n = redactor.text(text[:4096])
    return text[:_EXCERPT] + ("..." if len(text) > _EXCERPT else ""), n


async def _attempt(client: httpx.AsyncClient, settings: CollectSettings, limits: ClientLimits,
                   body: dict[str, Any], redactor: Redactor) -> _Attempt:
    """One request, within the deadline and caps; never raises (except cancellation)."""
    out = _Attempt()
    try:
        async with asyncio.timeout(limits.request_deadline):
            async with client.stream("POST", settings.url, json=body) as r:
                out.status = r.status_code
                length = r.headers.get("content-length", "")
                if length.strip().isdigit() and int(length) > limits.max_body_bytes:
                    raise _BodyError(f"response body of {int(length):,} bytes (Content-Length) over "
                                     f"{limits.max_body_bytes:,} (--max-body)")
                reader = _BoundedBody(r.headers.get("content-encoding", ""), limits.max_body_bytes)
                async for chunk in r.aiter_raw():
                    reader.feed(chunk)
                data = reader.finish()
                if out.status != 200:
                    out.retry_after = _retry_after(r.headers.get("retry-after"))
        if out.status == 200:
            try:
                parsed = _parse_answer(data, settings, body)
            except ResponseError as exc:
                out.error = f"malformed response: {exc}"
                out.retryable = True
            else:
                out.response = parsed
        else:
            excerpt, out.redacted = _excerpt(data, redactor)
            out.error = f"HTTP {out.status}: {excerpt}"
            out.retryable = out.status in RETRY_STATUSES
    except TimeoutError:
        out.error = f"no complete response within {limits.request_deadline:g} s (--request-deadline)"
        out.retryable = True
    except _BodyError as exc:
        out.response = None
        out.error = str(exc)
        out.retryable = True
    except httpx.TransportError as exc:
        out.status, out.response = None, None
        out.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        out.retryable = True
    except Exception as exc:  # a bug, or a library surprise: this exchange fails, the run goes on
        out.response = None
        out.error = f"internal error in the collector: {type(exc).__name__}: {exc}"
        out.internal = True
    if out.error:
        out.error, n = redactor.text(out.error)
        out.redacted += n
    return out


def _parse_answer(data: bytes, settings: CollectSettings, body: dict[str, Any]) -> Any:
    """Parse and validate a 200 body (:mod:`fingerprint.apiformat`); returns the parsed body."""
    parsed = parse_body(data)
    read_choices(parsed, kind=settings.endpoint, prompt=request_prompt(body), echo=bool(body.get("echo")))
    return parsed


async def _exchange(client: httpx.AsyncClient, settings: CollectSettings, limits: ClientLimits,
                    prompt: PromptRecord, sample: int, sem: asyncio.Semaphore, limiter: _RateLimiter,
                    stats: CollectStats, redactor: Redactor) -> dict[str, Any]:
    body = settings.body(prompt, sample)
    attempts: list[dict[str, Any]] = []
    started = _now()
    result = _Attempt()
    redacted = 0
    for attempt in range(1, limits.max_attempts + 1):
        await limiter.wait()
        t_start = _now()
        t0 = time.monotonic()
        async with sem:
            result = await _attempt(client, settings, limits, body, redactor)
        redacted += result.redacted
        attempts.append({"attempt": attempt, "started_at": t_start, "status": result.status, "error": result.error,
                         "seconds": round(time.monotonic() - t0, 3)})
        if not result.retryable:
            break
        if attempt < limits.max_attempts:
            stats.retries += 1
            backoff = min(limits.backoff_max, limits.backoff_base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
            wait = min(limits.retry_after_max, result.retry_after) if result.retry_after is not None else backoff
            await asyncio.sleep(wait)
    ok = result.status == 200 and result.response is not None and result.error is None
    if ok:
        stats.collected += 1
    else:
        stats.failed += 1
        stats.internal_errors += result.internal
    record = {"type": "exchange", "prompt_id": prompt.id, "sample": sample, "endpoint": settings.endpoint,
              "url": settings.url, "request": body, "status": result.status,
              "response": result.response if ok else None, "error": None if ok else result.error,
              "attempts": len(attempts), "attempt_log": attempts, "started_at": started, "finished_at": _now()}
    if redacted:
        record["redacted"] = redacted
    return record


def _progress_line(stats: CollectStats, todo: int, t0: float) -> str:
    done = stats.collected + stats.failed
    elapsed = time.monotonic() - t0
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (todo - done) / rate if rate > 0 else float("inf")
    width = 24
    filled = int(width * done / todo) if todo else width
    eta_s = f"{eta:5.0f}s" if eta != float("inf") else "    ?"
    return (f"[{'#' * filled}{'.' * (width - filled)}] {done:,}/{todo:,}  {rate:6.1f} req/s  "
            f"ETA {eta_s}  failures {stats.failed}  retries {stats.retries}")


class StopMonitor(Protocol):
    """Decides, record by record, whether the collection has gathered enough (a stopping rule).

    ``rule`` is written into the evidence header (so a verifier knows the evidence was gathered
    with optional stopping); ``observe`` sees every record in the order it is appended (the
    records already in the file first, on a resume) and returns True to stop: requests in flight
    finish and are recorded, no new ones start."""

    rule: dict[str, Any]

    def observe(self, record: dict[str, Any]) -> bool: ...


def _existing_state(record: dict[str, Any]) -> str:
    """``"ok"`` (a valid success), ``"failed"`` or ``"invalid"`` (a success whose body fails
    validation) for an exchange record already in the file."""
    try:
        return "failed" if record_choices(record) is None else "ok"
    except ResponseError:
        return "invalid"


def _check_out_path(out: Path) -> None:
    """Refuse, before any request, an evidence path the collector could not write."""
    if out.is_dir():
        raise InputError(f"--out {out}: is a directory, not an evidence file")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise InputError(f"--out {out}: {parent} is not a directory")
    if not parent.is_dir():
        raise InputError(f"--out {out}: directory {parent} does not exist")
    if out.exists():
        if not os.access(out, os.R_OK | os.W_OK):
            raise InputError(f"--out {out}: the evidence file is not readable and writable")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: directory {parent} is not writable")


async def collect(prompts: Sequence[PromptRecord], settings: CollectSettings, out: str | os.PathLike[str], *,
                  limits: ClientLimits = ClientLimits(), api_key: str | None = None,
                  progress: Callable[[str], None] | None = None,
                  transport: httpx.AsyncBaseTransport | None = None,
                  monitor: StopMonitor | None = None, max_requests: int | None = None,
                  signer: Any = None) -> CollectStats:
    """Collect every (prompt, sample) not yet in the evidence file ``out``; append records.

    ``api_key`` is cleaned with :func:`clean_api_key`. ``monitor`` (optional) stops the
    collection early (``collect --until-detected``); ``max_requests`` caps the (prompt, sample)
    pairs asked in all, those already in the file included; ``signer`` (optional) is passed to
    :func:`fingerprint.collect.evidence.open_for_append` to sign checkpoints. Raises
    :class:`ParameterError` / :class:`InputError` for bad settings, limits or output path before
    any request."""
    settings.validate()
    limits.validate()
    if max_requests is not None and max_requests < 1:
        raise ParameterError(f"max requests must be >= 1, got {max_requests}")
    if api_key is not None:
        api_key = clean_api_key(api_key, "the API key")
    redactor = Redactor([*([api_key] if api_key else []), *settings.secrets()])
    out = Path(out)
    _check_out_path(out)
    header: dict[str, Any] = {"created_at": _now(), "settings": redactor.value(settings.public())[0]}
    if monitor is not None:
        header["stopping_rule"] = monitor.rule
    try:
        writer, existing = (open_for_append(out, header) if signer is None
                            else open_for_append(out, header, signer=signer))
    except OSError as exc:
        raise InputError(f"--out {out}: cannot open the evidence file for appending: "
                         f"{exc.strerror or exc}") from None
    states = [_existing_state(r) if r.get("type") == "exchange" else "other" for r in existing]
    done = {(r.get("prompt_id"), r.get("sample")) for r, st in zip(existing, states) if st == "ok"}
    jobs = [(p, s) for p in prompts for s in range(settings.samples) if (p.id, s) not in done]
    if max_requests is not None:
        jobs = jobs[:max(0, max_requests - len(done))]
    stats = CollectStats(planned=len(prompts) * settings.samples if max_requests is None
                         else min(max_requests, len(prompts) * settings.samples), already_done=len(done),
                         invalid_existing=states.count("invalid"))
    stop = asyncio.Event()
    if monitor is not None:
        for r, st in zip(existing, states):
            if st in ("ok", "failed") and monitor.observe(r):
                stop.set()
                stats.stopped_early = True
    headers = {"User-Agent": "fingerprint-collect", "Accept-Encoding": "gzip, deflate", **settings.headers}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    timeout = httpx.Timeout(connect=limits.connect_timeout, read=limits.read_timeout,
                            write=limits.read_timeout, pool=None)
    # httpcore's pool scans every connection on each request (quadratic in pool size), so large
    # concurrency is spread over several small pools: one per 8 workers
    n_pools = max(1, -(-limits.concurrency // 8))
    per_pool = -(-limits.concurrency // n_pools)
    pool = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
    sem = asyncio.Semaphore(limits.concurrency)
    limiter = _RateLimiter(limits.rate)
    t0 = time.monotonic()
    stop_progress = asyncio.Event()
    fatal: list[BaseException] = []

    def show(line: str) -> None:
        if progress:
            progress(redactor.scrub(line))

    async def report_progress() -> None:
        while not stop_progress.is_set():
            try:
                await asyncio.wait_for(stop_progress.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
            if not fatal:
                writer.sync()
            show(_progress_line(stats, len(jobs), t0))

    def write(rec: dict[str, Any]) -> dict[str, Any]:
        clean, n = redactor.value(storable(rec))
        n += clean.get("redacted", 0)
        if n:
            clean["redacted"] = n
            stats.redacted_records += 1
        return writer.append(clean)

    async def worker(queue: asyncio.Queue, client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            try:
                p, s = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            rec = await _exchange(client, settings, limits, p, s, sem, limiter, stats, redactor)
            try:
                written = write(rec)
                if monitor is not None and not stop.is_set() and monitor.observe(written):
                    stop.set()
                    stats.stopped_early = True
            except Exception as exc:  # a full disk, a bug: stop asking, let the others finish writing
                fatal.append(exc)
                stop.set()
                return

    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    clients = [httpx.AsyncClient(headers=headers, timeout=timeout, limits=pool, transport=transport,
                                 follow_redirects=False) for _ in range(n_pools)]
    try:
        reporter = asyncio.create_task(report_progress())
        try:
            n_workers = min(limits.concurrency, max(1, len(jobs)))
            await asyncio.gather(*(worker(queue, clients[i % n_pools]) for i in range(n_workers)))
        finally:
            stop_progress.set()
            await reporter
    finally:
        for c in clients:
            await c.aclose()
        writer.close()
    stats.elapsed = time.monotonic() - t0
    stats.last_sha256 = writer.last_sha256
    if fatal:
        raise fatal[0]
    return stats


def run_collect(prompts_path: str, settings: CollectSettings, out: str, *, limits: ClientLimits,
                quiet: bool = False, monitor: StopMonitor | None = None,
                max_requests: int | None = None, signer: Any = None) -> CollectStats:
    """Synchronous entry point for the CLI: reads the prompts and the API key, runs collect."""
    settings.validate()
    limits.validate()
    prompts = read_prompts(prompts_path)
    api_key = None
    if settings.api_key_env:
        source = f"environment variable {settings.api_key_env} (--api-key-env)"
        raw = os.environ.get(settings.api_key_env)
        if raw is None or not raw.strip():
            raise InputError(f"{source} is not set or empty")
        api_key = clean_api_key(raw, source)
    short = short_secrets([*([api_key] if api_key else []), *settings.secrets()])
    if short:
        print(f"fingerprint: warning: {short} secret(s) (API key or secret header values) shorter than {MIN_SECRET} "
              f"characters cannot be scrubbed from the evidence without rewriting the suspect's text; they are "
              f"not scrubbed", file=sys.stderr)
    tty = sys.stderr.isatty()
    last = [0.0]

    def show(line: str) -> None:
        if quiet:
            return
        if tty:
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
        elif time.monotonic() - last[0] >= 5.0:
            last[0] = time.monotonic()
            print(line, file=sys.stderr, flush=True)

    stats = asyncio.run(collect(prompts, settings, out, limits=limits, api_key=api_key, progress=show,
                                monitor=monitor, max_requests=max_requests, signer=signer))
    if tty and not quiet:
        print(file=sys.stderr)
    return stats
