"""Collecting a suspect model's responses over an OpenAI-compatible API, as evidence.

``collect()`` sends one request per (prompt, sample) to ``/v1/chat/completions`` or
``/v1/completions`` with httpx (async), under a concurrency limit and an optional request
rate limit, and appends one chained evidence record per exchange (see
:mod:`fingerprint.collect.evidence`).

Retries: connection errors, timeouts, dropped connections, malformed JSON bodies and HTTP
408, 409, 429 and 5xx are retried with exponential backoff and full jitter, honouring
``Retry-After``; other 4xx are recorded as failures at once. Rerunning the same command
resumes: (prompt, sample) pairs that already have a successful record are not asked again.

The API key is read from an environment variable, sent only in the ``Authorization``
header, and never written to the evidence, the progress output or an error message.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import email.utils
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import httpx

from ..errors import InputError, ParameterError
from .evidence import open_for_append

__all__ = ["PromptRecord", "CollectSettings", "ClientLimits", "CollectStats", "read_prompts", "collect",
           "run_collect", "RETRY_STATUSES"]

RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
_SENSITIVE_HEADERS = ("authorization", "api-key", "x-api-key", "cookie", "proxy-authorization")


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


@dataclass(frozen=True)
class CollectSettings:
    """What is asked of the suspect API; recorded in the evidence header (no secrets).

    ``sampling`` holds the request's sampling parameters (``temperature``, ``top_p``,
    ``max_tokens``, ``seed``, ``n``, ``stop``; None ones are not sent). With ``seed`` set,
    sample ``k`` of a prompt is sent with ``seed + k``.
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

    def validate(self) -> None:
        if self.endpoint not in ("chat", "completions"):
            raise ParameterError(f"endpoint must be 'chat' or 'completions', got {self.endpoint!r}")
        if not self.base_url.startswith(("http://", "https://")):
            raise ParameterError(f"base URL must start with http:// or https://, got {self.base_url!r}")
        if self.samples < 1:
            raise ParameterError(f"samples must be >= 1, got {self.samples}")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise ParameterError(f"logprobs must be in [0, 20], got {self.logprobs}")
        if self.echo and self.endpoint != "completions":
            raise ParameterError("echo (prompt logprobs, reading mode) needs --endpoint completions")

    @property
    def url(self) -> str:
        base = self.base_url.rstrip("/")
        if not base.endswith("/v1"):
            base += "/v1"
        return f"{base}/{'chat/completions' if self.endpoint == 'chat' else 'completions'}"

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d["headers"] = {k: ("<redacted>" if k.lower() in _SENSITIVE_HEADERS else v)
                        for k, v in self.headers.items()}
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
    """Concurrency, rate, timeouts (seconds) and retry policy."""

    concurrency: int = 16
    rate: float = 0.0  # requests per second; 0 = unlimited
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 300.0

    def validate(self) -> None:
        if self.concurrency < 1:
            raise ParameterError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.rate < 0:
            raise ParameterError(f"rate must be >= 0, got {self.rate}")
        if self.max_attempts < 1:
            raise ParameterError(f"max attempts must be >= 1, got {self.max_attempts}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ParameterError("timeouts must be > 0")


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

    @property
    def rate(self) -> float:
        return (self.collected + self.failed) / self.elapsed if self.elapsed > 0 else 0.0


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
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


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "<redacted>") if secret else text


async def _exchange(client: httpx.AsyncClient, settings: CollectSettings, limits: ClientLimits,
                    prompt: PromptRecord, sample: int, sem: asyncio.Semaphore, limiter: _RateLimiter,
                    stats: CollectStats, api_key: str | None) -> dict[str, Any]:
    body = settings.body(prompt, sample)
    attempts: list[dict[str, Any]] = []
    started = _now()
    status: int | None = None
    response: Any = None
    error: str | None = None
    for attempt in range(1, limits.max_attempts + 1):
        await limiter.wait()
        t_start = _now()
        retry_after = None
        retryable = False
        async with sem:
            try:
                r = await client.post(settings.url, json=body)
                status = r.status_code
                if status == 200:
                    try:
                        response = r.json()
                        if not isinstance(response, dict) or not isinstance(response.get("choices"), list):
                            raise ValueError("no choices list")
                        error = None
                    except ValueError as exc:
                        response = None
                        error = f"malformed response body: {exc}"
                        retryable = True
                else:
                    response = None
                    error = f"HTTP {status}: {r.text[:300]}"
                    retryable = status in RETRY_STATUSES
                    retry_after = _retry_after(r.headers.get("retry-after"))
            except httpx.TransportError as exc:
                status, response = None, None
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                retryable = True
        error = _scrub(error, api_key) if error else None
        attempts.append({"attempt": attempt, "started_at": t_start, "status": status, "error": error})
        if not retryable:
            break
        if attempt < limits.max_attempts:
            stats.retries += 1
            backoff = min(limits.backoff_max, limits.backoff_base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
            wait = min(limits.retry_after_max, retry_after) if retry_after is not None else backoff
            await asyncio.sleep(wait)
    ok = status == 200 and response is not None
    if ok:
        stats.collected += 1
    else:
        stats.failed += 1
    return {"type": "exchange", "prompt_id": prompt.id, "sample": sample, "endpoint": settings.endpoint,
            "url": settings.url, "request": body, "status": status,
            "response": response, "error": None if ok else error, "attempts": len(attempts),
            "attempt_log": attempts, "started_at": started, "finished_at": _now()}


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


async def collect(prompts: Sequence[PromptRecord], settings: CollectSettings, out: str | os.PathLike[str], *,
                  limits: ClientLimits = ClientLimits(), api_key: str | None = None,
                  progress: Callable[[str], None] | None = None,
                  transport: httpx.AsyncBaseTransport | None = None,
                  monitor: StopMonitor | None = None, max_requests: int | None = None) -> CollectStats:
    """Collect every (prompt, sample) not yet in the evidence file ``out``; append records.

    ``monitor`` (optional) stops the collection early (``collect --until-detected``);
    ``max_requests`` caps the (prompt, sample) pairs asked in all, those already in the file
    included."""
    settings.validate()
    limits.validate()
    if max_requests is not None and max_requests < 1:
        raise ParameterError(f"max requests must be >= 1, got {max_requests}")
    header: dict[str, Any] = {"created_at": _now(), "settings": settings.public()}
    if monitor is not None:
        header["stopping_rule"] = monitor.rule
    writer, existing = open_for_append(out, header)
    done = {(r.get("prompt_id"), r.get("sample")) for r in existing
            if r.get("type") == "exchange" and r.get("status") == 200 and r.get("response") is not None}
    jobs = [(p, s) for p in prompts for s in range(settings.samples) if (p.id, s) not in done]
    if max_requests is not None:
        jobs = jobs[:max(0, max_requests - len(done))]
    stats = CollectStats(planned=len(prompts) * settings.samples if max_requests is None
                         else min(max_requests, len(prompts) * settings.samples), already_done=len(done))
    stop = asyncio.Event()
    if monitor is not None:
        for r in existing:
            if r.get("type") == "exchange" and monitor.observe(r):
                stop.set()
                stats.stopped_early = True
    headers = {"User-Agent": "fingerprint-collect", **settings.headers}
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

    async def report_progress() -> None:
        while not stop_progress.is_set():
            try:
                await asyncio.wait_for(stop_progress.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
            writer.sync()
            if progress:
                progress(_progress_line(stats, len(jobs), t0))

    async def worker(queue: asyncio.Queue, client: httpx.AsyncClient) -> None:
        while True:
            if stop.is_set():
                return
            try:
                p, s = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            rec = await _exchange(client, settings, limits, p, s, sem, limiter, stats, api_key)
            writer.append(rec)
            if monitor is not None and not stop.is_set() and monitor.observe(rec):
                stop.set()
                stats.stopped_early = True

    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    clients = [httpx.AsyncClient(headers=headers, timeout=timeout, limits=pool, transport=transport)
               for _ in range(n_pools)]
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
    return stats


def run_collect(prompts_path: str, settings: CollectSettings, out: str, *, limits: ClientLimits,
                quiet: bool = False, monitor: StopMonitor | None = None,
                max_requests: int | None = None) -> CollectStats:
    """Synchronous entry point for the CLI: reads the prompts and the API key, runs collect."""
    prompts = read_prompts(prompts_path)
    api_key = None
    if settings.api_key_env:
        api_key = os.environ.get(settings.api_key_env)
        if not api_key:
            raise InputError(f"environment variable {settings.api_key_env} (--api-key-env) is not set or empty")
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
                                monitor=monitor, max_requests=max_requests))
    if tty and not quiet:
        print(file=sys.stderr)
    return stats
