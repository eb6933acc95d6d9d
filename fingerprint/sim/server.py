"""A local OpenAI-compatible server for any small language model, with fault injection.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``.
Sampling honours ``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``n`` and ``stop``.
Logprobs: chat ``logprobs`` + ``top_logprobs``; completions ``logprobs`` (top-k) and ``echo``
(prompt logprobs: each prompt token's log-probability given the tokens before it, the way
OpenAI's legacy API and vLLM return them). With a fingerprint scheme the server samples
through the scheme's embed side, as a lab's server would.

With a :class:`~fingerprint.keyring.Keyring` the key is chosen per request: the cohort named
by the header ``X-Fingerprint-Cohort`` (a cohort id of the ring), else the cohort of the body's
``user`` field (:meth:`Keyring.cohort_for`), else the server's ``default_cohort``; a request
with none of them (or whose account an exact ring does not know, without a default) is
answered 400. The cohort is never echoed in a response (on a hash ring that would tell an
account its bucket). In front of real users, the gateway must set or strip the header: a
client that can send it chooses its key.

It is the standard library's threading HTTP server (HTTP/1.1, keep-alive): no extra
dependency, real sockets on 127.0.0.1. :class:`Faults` injects errors for tests: 429 with
``Retry-After``, 500, responses slower than a client's timeout, dropped connections and
malformed JSON.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import random
import socket
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from ..errors import ParameterError
from ..keyring import Keyring
from ..schemes import Scheme
from ..tokenize import token_bytes_table
from ..schemes.base import apply_temperature_top_p, sample_from_logp
from .generate import LanguageModel, context_tail

__all__ = ["Faults", "ServedModel", "LocalServer", "serve", "serve_in_process", "COHORT_HEADER"]

#: The request header that names the cohort (a cohort id of the server's keyring) serving a request.
COHORT_HEADER = "X-Fingerprint-Cohort"
#: Cohort schemes kept derived at once (least recently used dropped first).
_SCHEME_CACHE = 64


@dataclass(frozen=True)
class Faults:
    """Probabilities (per request) of each injected fault; they must sum to <= 1."""

    rate_limited: float = 0.0    # 429 with Retry-After: retry_after
    server_error: float = 0.0    # 500
    slow: float = 0.0            # answer after slow_seconds
    drop: float = 0.0            # close the connection without answering
    malformed: float = 0.0       # 200 with a body that is not JSON
    retry_after: float = 0.05
    slow_seconds: float = 3.0
    seed: int = 0

    @property
    def total(self) -> float:
        return self.rate_limited + self.server_error + self.slow + self.drop + self.malformed

    @classmethod
    def mixed(cls, rate: float, **kw: Any) -> "Faults":
        """``rate`` split evenly over the five kinds of fault."""
        return cls(rate / 5, rate / 5, rate / 5, rate / 5, rate / 5, **kw)


class ServedModel:
    """A language model with its tokenizer, as the server runs it.

    ``model`` has ``context_size`` and ``next_logprobs(contexts (b, c)) -> (b, V)``;
    ``tokenizer`` has ``encode_batch``, ``decode`` and (for byte-level BPE) ``backend``.
    ``scheme`` (optional) fingerprints every sampled token with one key. ``keyring`` (instead of
    ``scheme``) fingerprints each request with the key of its cohort (:meth:`resolve_cohort`);
    ``default_cohort`` (a cohort id of the ring) serves requests that name no cohort.
    """

    def __init__(self, model: LanguageModel, tokenizer: Any, *, name: str = "local-ngram",
                 scheme: Scheme | None = None, keyring: Keyring | None = None,
                 default_cohort: str | None = None) -> None:
        if keyring is not None and scheme is not None:
            raise ParameterError("give a ServedModel a scheme (one key) or a keyring (a key per cohort), not both")
        if default_cohort is not None:
            if keyring is None:
                raise ParameterError(f"default cohort {default_cohort!r} needs a keyring")
            keyring.index_of(default_cohort)
        if keyring is not None:
            width = getattr(model, "vocab_size", None)
            if isinstance(width, int) and width != keyring.vocab_size:
                raise ParameterError(f"keyring {keyring.ring_id[:12]} has vocab_size {keyring.vocab_size} but the "
                                     f"model's logits have width {width}: make the keyring with --vocab-size {width}")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.scheme = scheme
        self.keyring = keyring
        self.default_cohort = default_cohort
        self._schemes: OrderedDict[str, Scheme] = OrderedDict()
        self._schemes_lock = threading.Lock()
        self.token_bytes = self._token_bytes()

    def resolve_cohort(self, header: str | None, user: object) -> str | None:
        """The cohort that serves a request: ``header`` (the value of :data:`COHORT_HEADER`; it
        must be a cohort id of the ring), else ``user`` (the body's ``user`` field, an account
        id mapped by :meth:`Keyring.cohort_for`), else the default cohort. ``None`` without a
        keyring (one key serves everyone). Raises :class:`ParameterError` saying what is wrong."""
        ring = self.keyring
        if ring is None:
            return None
        if header is not None:
            try:
                ring.index_of(header)
            except ParameterError:
                raise ParameterError(f"header {COHORT_HEADER}: {header[:80]!r} is not a cohort of keyring "
                                     f"{ring.ring_id[:12]} ({ring.n_cohorts} cohorts)") from None
            return header
        if user is not None and not isinstance(user, str):
            raise ParameterError(f"field 'user' must be a string (the account id), got {type(user).__name__}")
        if user:
            try:
                return ring.cohort_for(user)
            except ParameterError as exc:
                if self.default_cohort is None:
                    raise ParameterError(f"field 'user': {exc}") from None
                return self.default_cohort
        if self.default_cohort is None:
            raise ParameterError(f"this server fingerprints per cohort: name the cohort in the header "
                                 f"{COHORT_HEADER} or the account in the body's 'user' field")
        return self.default_cohort

    def scheme_for(self, cohort: str | None) -> Scheme | None:
        """The scheme that samples for ``cohort``: the single scheme without a keyring, else the
        cohort's key (derived once, then kept among the last few used)."""
        if self.keyring is None:
            return self.scheme
        if cohort is None:
            if self.default_cohort is None:
                raise ParameterError("a keyring-served model needs the cohort of each request")
            cohort = self.default_cohort
        with self._schemes_lock:
            scheme = self._schemes.get(cohort)
            if scheme is not None:
                self._schemes.move_to_end(cohort)
                return scheme
        scheme = self.keyring.cohort_key(cohort).scheme_object()
        with self._schemes_lock:
            self._schemes[cohort] = scheme
            self._schemes.move_to_end(cohort)
            while len(self._schemes) > _SCHEME_CACHE:
                self._schemes.popitem(last=False)
        return scheme

    def _token_bytes(self) -> list[bytes]:
        return token_bytes_table(self.tokenizer)

    def encode(self, text: str) -> np.ndarray:
        tokens, _ = self.tokenizer.encode_batch([text])
        return tokens

    def token_entry(self, token: int, logprob: float | None) -> dict[str, Any]:
        b = self.token_bytes[token]
        return {"token": b.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(b)}

    def generate(self, prompt_tokens: np.ndarray, *, max_tokens: int, temperature: float, top_p: float,
                 n: int, seed: int | None, stop: list[str], top_logprobs: int | None,
                 cohort: str | None = None) -> list[dict[str, Any]]:
        """``n`` continuations: text, token ids, finish reason and (optionally) logprobs.

        With a ``seed`` the draws come from that seed and the prompt's tokens: the same request
        gets the same answer, different prompts get independent streams (not the same draws).
        With a keyring, ``cohort`` (default: the default cohort) picks the key."""
        scheme = self.scheme_for(cohort)
        if seed is None:
            rng = np.random.default_rng()
        else:
            digest = hashlib.sha256(np.ascontiguousarray(prompt_tokens, dtype="<i8").tobytes()).digest()
            rng = np.random.default_rng([seed % 2**64, int.from_bytes(digest[:8], "little")])
        c = self.model.context_size
        h = scheme.context_width if scheme is not None else 0
        hist = np.zeros((n, prompt_tokens.size + max_tokens), dtype=np.int64)
        hist[:, :prompt_tokens.size] = prompt_tokens
        lengths = np.full(n, prompt_tokens.size, dtype=np.int64)
        lps: list[np.ndarray] = []
        for _ in range(max_tokens):
            logp = self.model.next_logprobs(context_tail(hist, lengths, c))
            dist = apply_temperature_top_p(logp, max(temperature, 1e-4), top_p)
            if scheme is not None:
                nxt = scheme.sample(logp, context_tail(hist, lengths, h), rng,
                                         temperature=max(temperature, 1e-4), top_p=top_p)
            else:
                nxt = sample_from_logp(dist, rng)
            hist[np.arange(n), lengths] = nxt
            lengths += 1
            lps.append(dist)
        choices = []
        for i in range(n):
            ids = hist[i, prompt_tokens.size:]
            text = self.tokenizer.decode(ids)
            finish = "length"
            cut = len(ids)
            for s in stop:
                j = text.find(s) if s else -1
                if j >= 0:
                    text, finish = text[:j], "stop"
            if finish == "stop":
                # keep the tokens whose text lies before the stop string
                acc = b""
                cut = 0
                target = text.encode("utf-8")
                while cut < len(ids) and len(acc + self.token_bytes[ids[cut]]) <= len(target):
                    acc += self.token_bytes[ids[cut]]
                    cut += 1
            info = []
            if top_logprobs is not None:
                for t in range(cut):
                    row = lps[t][i]
                    entry = self.token_entry(int(ids[t]), float(row[ids[t]]))
                    top = np.argsort(-row)[:top_logprobs]
                    entry["top_logprobs"] = [self.token_entry(int(v), float(row[v])) for v in top]
                    info.append(entry)
            choices.append({"text": text, "ids": ids[:cut], "finish_reason": finish, "logprobs": info})
        return choices

    def prompt_logprobs(self, prompt_tokens: np.ndarray, top_logprobs: int) -> list[dict[str, Any]]:
        """Teacher-forced log-probability of every prompt token given the ones before it."""
        c = self.model.context_size
        n = prompt_tokens.size
        if n == 0:
            return []
        idx = np.arange(n)[:, None] + np.arange(-c, 0)
        ctx = np.where(idx >= 0, prompt_tokens[np.maximum(idx, 0)], -1)
        logp = self.model.next_logprobs(ctx)
        out = []
        for t in range(n):
            entry = self.token_entry(int(prompt_tokens[t]), float(logp[t, prompt_tokens[t]]) if t else None)
            top = np.argsort(-logp[t])[:top_logprobs]
            entry["top_logprobs"] = [self.token_entry(int(v), float(logp[t, v])) for v in top] if t else None
            out.append(entry)
        return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, etype: str = "invalid_request_error",
               param: str | None = None, code: str | None = None) -> None:
        error: dict[str, Any] = {"message": message, "type": etype}
        if param is not None or code is not None:  # OpenAI's fields, where the server knows them
            error.update(param=param, code=code)
        self._send(status, {"error": error})

    def _fault(self) -> bool:
        """Inject a fault for this request; True when the request has been dealt with."""
        f = self.server.faults
        if f.total <= 0:
            return False
        u = self.server.draw()
        edges = np.cumsum([f.rate_limited, f.server_error, f.slow, f.drop, f.malformed])
        kind = int(np.searchsorted(edges, u, side="right"))
        self.server.count(kind)
        if kind == 0:
            self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                       {"Retry-After": f"{f.retry_after:g}"})
            return True
        if kind == 1:
            self._error(500, "injected server error", "server_error")
            return True
        if kind == 2:
            time.sleep(f.slow_seconds)
            return False
        if kind == 3:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if kind == 4:
            self._send(200, None, raw=b'{"id": "cmpl-broken", "choices": [')
            return True
        return False

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [{"id": self.server.served.name, "object": "model",
                                                         "owned_by": "fingerprint-sim"}]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        self.server.count_request()
        if self.server.api_key and self.headers.get("Authorization") != f"Bearer {self.server.api_key}":
            self._error(401, "invalid API key", "authentication_error")
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            self._error(400, "request body is not a JSON object")
            return
        path = self.path.rstrip("/")
        if path not in ("/v1/chat/completions", "/v1/completions"):
            self._error(404, f"no route {self.path}")
            return
        if self._fault():
            return
        try:
            if path == "/v1/chat/completions":
                payload = self._chat(body)
            else:
                payload = self._completions(body)
        except _BadRequest as exc:
            self._error(400, str(exc), param=exc.param, code=exc.code)
            return
        self._send(200, payload)

    # ---- endpoints --------------------------------------------------------------------
    def _params(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
            temperature = float(body.get("temperature", 1.0))
            top_p = float(body.get("top_p", 1.0))
            n = int(body.get("n", 1))
            seed = body.get("seed")
            seed = None if seed is None else int(seed)
        except (TypeError, ValueError) as exc:
            raise _BadRequest(f"bad sampling parameter: {exc}") from None
        if not 1 <= max_tokens <= 4096 or not 1 <= n <= 16 or not 0 <= temperature <= 5 or not 0 < top_p <= 1:
            raise _BadRequest("sampling parameter out of range")
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        return {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "n": n, "seed": seed,
                "stop": stop}

    def _cohort(self, body: dict[str, Any]) -> str | None:
        """The cohort serving this request (None without a keyring); 400 when there is none."""
        served = self.server.served
        if served.keyring is None:
            return None
        header = self.headers.get(COHORT_HEADER)
        try:
            cohort = served.resolve_cohort(header, body.get("user"))
        except ParameterError as exc:
            raise _BadRequest(str(exc), param=None if header is not None else "user",
                              code="invalid_cohort" if header is not None or body.get("user") else
                              "missing_cohort") from None
        if cohort is not None:
            self.server.count_cohort(cohort)
        return cohort

    def _generate(self, prompt_text: str, params: dict[str, Any], top: int | None,
                  cohort: str | None = None) -> tuple[np.ndarray, list]:
        served = self.server.served
        tokens = served.encode(prompt_text)
        if self.server.instant:
            text = "The quick brown fox jumps over the lazy dog."
            return tokens, [{"text": text, "ids": served.encode(text), "finish_reason": "stop", "logprobs": []}
                            for _ in range(params["n"])]
        return tokens, served.generate(tokens, top_logprobs=top, cohort=cohort, **params)

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise _BadRequest("messages must be a non-empty list")
        parts = []
        for m in msgs:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):
                content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
            if not isinstance(content, str):
                raise _BadRequest("each message needs a string content")
            parts.append(content)
        params = self._params(body)
        top = int(body.get("top_logprobs", 0) or 0) if body.get("logprobs") else None
        cohort = self._cohort(body)
        prompt_tokens, choices = self._generate("\n".join(parts), params, top, cohort)
        out = []
        for i, ch in enumerate(choices):
            c: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": ch["text"]},
                                 "finish_reason": ch["finish_reason"], "logprobs": None}
            if top is not None:
                c["logprobs"] = {"content": ch["logprobs"]}
            out.append(c)
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": self.server.served.name, "choices": out,
                "usage": {"prompt_tokens": int(prompt_tokens.size),
                          "completion_tokens": int(sum(len(c["ids"]) for c in choices)),
                          "total_tokens": int(prompt_tokens.size + sum(len(c["ids"]) for c in choices))}}

    def _completions(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise _BadRequest("prompt must be a string")
        params = self._params(body)
        top = body.get("logprobs")
        top = None if top is None else int(top)
        echo = bool(body.get("echo", False))
        if echo and params["max_tokens"] == 0:
            params["max_tokens"] = 1
        cohort = self._cohort(body)
        prompt_tokens, choices = self._generate(prompt, params, top, cohort)
        served = self.server.served
        out = []
        for i, ch in enumerate(choices):
            text = (prompt + ch["text"]) if echo else ch["text"]
            c: dict[str, Any] = {"index": i, "text": text, "finish_reason": ch["finish_reason"], "logprobs": None}
            if top is not None:
                entries = (served.prompt_logprobs(prompt_tokens, top) if echo else []) + ch["logprobs"]
                offsets, pos = [], 0
                for e in entries:
                    offsets.append(pos)
                    pos += len(bytes(e["bytes"]).decode("utf-8", errors="replace"))
                c["logprobs"] = {
                    "tokens": [e["token"] for e in entries],
                    "token_logprobs": [e["logprob"] for e in entries],
                    "top_logprobs": [None if e["top_logprobs"] is None else
                                     {t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
                    "text_offset": offsets,
                    "token_bytes": [e["bytes"] for e in entries],
                }
            out.append(c)
        return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": served.name, "choices": out,
                "usage": {"prompt_tokens": int(prompt_tokens.size),
                          "completion_tokens": int(sum(len(c["ids"]) for c in choices)),
                          "total_tokens": int(prompt_tokens.size + sum(len(c["ids"]) for c in choices))}}


class _BadRequest(Exception):
    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, addr: tuple[str, int], served: ServedModel, faults: Faults, instant: bool,
                 api_key: str | None) -> None:
        super().__init__(addr, _Handler)
        self.served = served
        self.faults = faults
        self.instant = instant
        self.api_key = api_key
        self._rng = random.Random(faults.seed)
        self._lock = threading.Lock()
        self.requests = 0
        self.faults_injected = [0, 0, 0, 0, 0]
        self.cohorts_served: dict[str, int] = {}

    def draw(self) -> float:
        with self._lock:
            return self._rng.random()

    def count(self, kind: int) -> None:
        if kind < 5:
            with self._lock:
                self.faults_injected[kind] += 1

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def count_cohort(self, cohort: str) -> None:
        with self._lock:
            self.cohorts_served[cohort] = self.cohorts_served.get(cohort, 0) + 1

    def cohort_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.cohorts_served)


class LocalServer:
    """A running server (background thread). ``url`` is its base URL (``.../v1``)."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> int:
        return self._server.requests

    @property
    def cohorts_served(self) -> dict[str, int]:
        """With a keyring: the requests each cohort's key answered (in this process's server)."""
        return self._server.cohort_counts()

    @property
    def faults_injected(self) -> dict[str, int]:
        names = ["rate_limited", "server_error", "slow", "drop", "malformed"]
        return dict(zip(names, self._server.faults_injected))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(served: ServedModel, *, host: str = "127.0.0.1", port: int = 0, faults: Faults = Faults(),
          instant: bool = False, api_key: str | None = None) -> LocalServer:
    """Start serving ``served`` on ``host:port`` (0 = a free port) in a background thread.

    ``instant`` answers every request at once with a fixed text (for client benchmarks);
    ``api_key`` makes the server demand ``Authorization: Bearer <api_key>``.
    """
    return LocalServer(_Server((host, port), served, faults, instant, api_key))


def _serve_child(served: ServedModel, conn: Any) -> None:
    with serve(served) as srv:
        conn.send(srv.url)
        conn.recv()  # blocks until the parent says stop (or exits: EOFError)


@contextmanager
def serve_in_process(served: ServedModel) -> Iterator[str]:
    """Serve ``served`` on 127.0.0.1 from a forked child process; yields the base URL.

    A server per process lets several models answer at once on several cores (the threaded
    server shares one interpreter lock with its caller). Where the platform cannot fork, the
    server runs in a thread of this process instead."""
    if "fork" not in multiprocessing.get_all_start_methods():
        with serve(served) as srv:
            yield srv.url
        return
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve_child, args=(served, child), daemon=True)
    proc.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("the model server process did not start within 60 s")
        yield str(parent.recv())
    finally:
        try:
            parent.send("stop")
        except (BrokenPipeError, OSError):
            pass
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join()
