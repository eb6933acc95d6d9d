"""A collector that trusts nothing the suspect sends (issue 14), against a hostile server on 127.0.0.1.

The server below is real HTTP (the standard library's threading server): it answers each request
with the behaviour named in the prompt (``b:<name>#<n>``): malformed bodies of every kind, NaN and
+/-Infinity, bodies too large on the wire or after gzip (a 2 GiB gzip bomb), bodies trickled byte by
byte, endless ``Retry-After``, dropped connections, and answers that echo the request's headers
(the API key and secret headers) back in several encodings. Caps and deadlines are small here so
the whole file runs in about half a minute.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import random
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fingerprint.apiformat import ResponseError, read_choices, record_choices, storable
from fingerprint.cli import main
from fingerprint.collect.client import ClientLimits, CollectSettings, PromptRecord, collect
from fingerprint.collect.evidence import EvidenceWriter, GENESIS, canonical_json, check_chain, read_records, record_hash
from fingerprint.collect.redact import Redactor, header_secrets
from fingerprint.corpus import read_exchanges
from fingerprint.errors import InputError

MAX_BODY = 256 * 1024
LIMITS = ClientLimits(concurrency=8, connect_timeout=2.0, read_timeout=0.5, max_attempts=2, backoff_base=0.01,
                      backoff_max=0.05, retry_after_max=0.3, request_deadline=1.0, max_body_bytes=MAX_BODY)
GIB = 1 << 30


# ---- the hostile server -------------------------------------------------------------------------

def _gzip_bomb(gib: int) -> bytes:
    """A gzip stream of ``gib`` GiB of zeros in about ``gib`` MB, built in 0.2 s: after a full
    flush the compressor's output for 16 MiB of zeros repeats, so the middle is one block
    repeated (the trailer's CRC is wrong, but no reader that stops at its cap gets there)."""
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    zeros = bytes(16 << 20)
    head = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    return head + block * (gib * 64 - 2) + c.flush()


def chat_body(text: str = "A plain answer from the suspect model.", *, logprobs: Any = None,
              **extra: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                              "finish_reason": "stop", "logprobs": logprobs}
    return {"id": "chatcmpl-x", "object": "chat.completion", "model": "hostile", "choices": [choice], **extra}


def lp_entry(token: str, logprob: Any, tops: list[tuple[str, Any]]) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()),
            "top_logprobs": [{"token": t, "logprob": x, "bytes": list(t.encode())} for t, x in tops]}


GOOD_LP = {"content": [lp_entry("A", -0.1, [("A", -0.1), ("The", -2.5)]),
                       lp_entry(" plain", -0.5, [(" plain", -0.5), (" simple", -1.0)])]}


def _with(body: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    node = body
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return body


#: name -> (raw body bytes, the reason the collector must give). Each is a 200 answer that is not one.
MALFORMED: dict[str, tuple[bytes, str]] = {
    "empty_choices": (json.dumps({"choices": []}).encode(), '"response.choices" is empty'),
    "no_choices": (json.dumps({"id": "x"}).encode(), "missing or not a list"),
    "null_content": (json.dumps(chat_body(None)).encode(), "message.content\" is null"),
    "choice_not_object": (json.dumps({"choices": [7]}).encode(), "must be an object, got int"),
    "content_number": (json.dumps(chat_body(3)).encode(), "must be a string or a list of parts"),
    "empty_text": (json.dumps(chat_body("  ")).encode(), "is empty"),
    "logprobs_string": (json.dumps(chat_body(logprobs="abc")).encode(), "logprobs\" must be an object or null"),
    "logprobs_content_string": (json.dumps(chat_body(logprobs={"content": "abc"})).encode(),
                                "content\" must be a list or null"),
    "logprob_entry_number": (json.dumps(chat_body(logprobs={"content": [5]})).encode(),
                             "content[0]\" must be an object"),
    "logprob_token_number": (json.dumps(_with(chat_body(logprobs=GOOD_LP), ["choices", 0, "logprobs", "content", 0],
                                              {"token": 5, "logprob": -1})).encode(), "token\" must be a string"),
    "logprob_top_string": (json.dumps(_with(chat_body(logprobs=GOOD_LP), ["choices", 0, "logprobs", "content", 1,
                                                                           "top_logprobs", 0, "logprob"], "high")
                                      ).encode(), "must be a number, got str"),
    "logprob_nan": (json.dumps(_with(chat_body(logprobs=GOOD_LP), ["choices", 0, "logprobs", "content", 1,
                                                                    "top_logprobs", 1, "logprob"], float("nan"))
                               ).encode(), "is NaN, not a log-probability"),
    "logprob_plus_inf": (json.dumps(_with(chat_body(logprobs=GOOD_LP), ["choices", 0, "logprobs", "content", 0,
                                                                         "top_logprobs", 0, "logprob"], float("inf"))
                                    ).encode(), "not a log-probability"),
    "logprob_bytes": (json.dumps(_with(chat_body(logprobs=GOOD_LP), ["choices", 0, "logprobs", "content", 0,
                                                                      "bytes"], [300])).encode(), "0..255"),
    "top_logprobs_dict": (json.dumps(_with(chat_body(logprobs=GOOD_LP), ["choices", 0, "logprobs", "content", 0,
                                                                          "top_logprobs"], {"A": -1})).encode(),
                          "top_logprobs\" must be a list or null"),
    "duplicate_index": (json.dumps({"choices": chat_body()["choices"] * 2}).encode(), "repeats an earlier choice"),
    "array_body": (b"[1, 2, 3]", '"response" must be an object, got list'),
    "not_json": (b"<html>502 Bad Gateway</html>", "not valid JSON"),
    "truncated": (b'{"id": "cmpl-broken", "choices": [', "not valid JSON"),
    "bad_utf8": (b'{"choices": "\xff\xfe"}', "not valid UTF-8"),
    "deep": (b"[" * 50_000 + b"]" * 50_000, "nested deeper than"),
    "deep_64": (("{\"a\":" * 70 + "1" + "}" * 70).encode(), "nested deeper than 64"),
    "lone_surrogate": (b'{"choices": [{"index": 0, "message": {"content": "x\\ud800y"}}]}', "lone surrogate"),
    "huge_int": (b'{"choices": ' + b"1" * 5000 + b"}", "not valid JSON"),
}


class _Hostile(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        self.requests = 0
        self.seen_headers: list[dict[str, str]] = []
        self.bomb = _gzip_bomb(2)
        self.rng = random.Random(7)

    def handle_error(self, request: Any, client_address: Any) -> None:  # a client that hung up: expected
        pass

    def count(self, key: str) -> int:
        with self.lock:
            self.requests += 1
            self.attempts[key] = self.attempts.get(key, 0) + 1
            return self.attempts[key]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Hostile

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        try:
            self._answer()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _answer(self) -> None:
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        prompt = req["messages"][0]["content"] if "messages" in req else req["prompt"]
        name = prompt.split("#")[0].removeprefix("b:")
        n = self.server.count(prompt)
        with self.server.lock:
            self.server.seen_headers.append(dict(self.headers))
        if name == "random":
            name = self.server.rng.choice(FUZZ_KINDS)
        if name in MALFORMED:
            self._send(200, MALFORMED[name][0])
        elif name == "ok":
            self._send(200, json.dumps(chat_body(logprobs=GOOD_LP)).encode())
        elif name == "mutant":
            with self.server.lock:
                body = _mutate(chat_body(logprobs=GOOD_LP), self.server.rng)
            self._send(200, json.dumps(body).encode())
        elif name == "nonfinite":  # a Python server's -Infinity logprobs, NaN elsewhere
            lp = {"content": [lp_entry("A", float("-inf"), [("A", -0.01), ("B", float("-inf"))])]}
            self._send(200, json.dumps(chat_body(logprobs=lp, usage={"x": float("nan"), "y": float("inf")})).encode())
        elif name == "flaky":  # malformed once, then an answer
            self._send(200, b'{"choices": [' if n == 1 else json.dumps(chat_body()).encode())
        elif name == "retry_after":
            if n == 1:
                self._send(429, b'{"error": "slow down"}', {"Retry-After": "3600"})
            else:
                self._send(200, json.dumps(chat_body()).encode())
        elif name == "gzip_ok":
            self._send(200, gzip.compress(json.dumps(chat_body()).encode()), {"Content-Encoding": "gzip"})
        elif name == "deflate_raw_ok":
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            self._send(200, c.compress(json.dumps(chat_body()).encode()) + c.flush(), {"Content-Encoding": "deflate"})
        elif name == "gzip_bomb":  # chunked, so only the decompressed size can stop it early
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            bomb = self.server.bomb
            for i in range(0, len(bomb), 65536):
                piece = bomb[i:i + 65536]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif name == "unsupported_encoding":
            self._send(200, b"\x00\x01\x02", {"Content-Encoding": "br"})
        elif name == "huge_length":  # announces 100 MB, sends a little
            self._send(200, b"{" * 1000, {"Content-Length": str(100 << 20)})
            self.close_connection = True
        elif name == "huge_chunked":  # 8 MiB in chunks, no length
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            piece = b" " * 65536
            for _ in range(128):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif name == "trickle":  # one byte every 20 ms: never a read timeout, only the deadline
            body = json.dumps(chat_body()).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for b in body:
                self.wfile.write(bytes([b]))
                self.wfile.flush()
                time.sleep(0.02)
        elif name == "stall":
            time.sleep(2.0)
            self._send(200, json.dumps(chat_body()).encode())
        elif name == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
        elif name == "echo":
            self._send(200, _echo_body(dict(self.headers)))
        elif name == "echo_error":  # the server puts the key in its error message, cut at 15 characters too
            auth = self.headers.get("Authorization", "")
            key = auth.split(" ", 1)[-1]
            msg = (f"invalid key {key[:15]}... (got header {auth!r}); escaped: "
                   + "".join(f"\\u{ord(c):04x}" for c in key))
            self._send(401, json.dumps({"error": {"message": msg, "headers": dict(self.headers)}}).encode())
        else:
            self._send(400, b'{"error": "unknown behaviour"}')


def _echo_body(headers: dict[str, str]) -> bytes:
    auth = headers.get("Authorization", "")
    key = auth.split(" ", 1)[-1]
    secrets = [key, headers.get("X-Custom-Thing", ""), headers.get("X-Api-Token", "")]
    parts = [f"headers: {headers}", f"json: {json.dumps(auth)}", f"b64: {base64.b64encode(auth.encode()).decode()}",
             f"basic: {base64.b64encode(('user:' + key).encode()).decode()}",
             f"urlsafe: {base64.urlsafe_b64encode(b'xy' + key.encode()).decode()}"]
    for s in secrets:
        parts += [f"url: {quote(s, safe='')}", f"plus: {quote_plus(s)}", f"prefix: {s[:11]}",
                  f"hex: {s.encode().hex()}"]
    body = chat_body(" | ".join(parts), logprobs={"content": [lp_entry(key, -0.5, [(key, -0.5)])]},
                     echo=headers, **{key: "the key as a field name"})
    # the key once more as \\u escapes inside the JSON text
    text = json.dumps(body)
    return text.replace('"id": "chatcmpl-x"', '"id": "' + "".join(f"\\u{ord(c):04x}" for c in key) + '"').encode()


def _mutate(body: dict[str, Any], rng: random.Random) -> Any:
    """A valid body with one random node replaced, deleted or wrapped (a fuzzing step)."""
    paths: list[list[Any]] = []

    def walk(node: Any, path: list[Any]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + [k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + [i])

    walk(body, [])
    path = rng.choice(paths)
    junk = rng.choice([None, "", "x", 0, -1, 1.5, True, [], {}, [[[]]], {"a": None}, float("nan"),
                       float("inf"), float("-inf"), 10 ** 30, "\u0000", "é" * 100])
    if not path:
        return junk
    parent = body
    for p in path[:-1]:
        parent = parent[p]
    if isinstance(parent, dict) and rng.random() < 0.3:
        del parent[path[-1]]
    else:
        parent[path[-1]] = junk
    return body


FUZZ_KINDS = [*MALFORMED, "ok", "ok", "mutant", "mutant", "mutant", "nonfinite", "gzip_ok", "deflate_raw_ok",
              "gzip_bomb", "huge_length", "huge_chunked", "unsupported_encoding", "trickle", "echo", "drop",
              "retry_after"]


@pytest.fixture(scope="module")
def hostile():
    srv = _Hostile()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: _Hostile) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/v1"


def _prompts(names: list[str], tag: str) -> list[PromptRecord]:
    return [PromptRecord(f"{name}-{i}", prompt=f"b:{name}#{tag}{i}") for i, name in enumerate(names)]


class RssPeak:
    """The largest resident set (bytes) seen while running, sampled every 10 ms from /proc."""

    def __init__(self) -> None:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> "RssPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def run(srv: _Hostile, prompts: list[PromptRecord], out: Path, *, api_key: str | None = None,
        headers: dict[str, str] | None = None, secret_headers: tuple[str, ...] = (),
        limits: ClientLimits = LIMITS, lines: list[str] | None = None):
    settings_ = CollectSettings(base_url=_url(srv), model="m", headers=headers or {}, secret_headers=secret_headers,
                                sampling={"max_tokens": 8})
    return asyncio.run(collect(prompts, settings_, out, limits=limits, api_key=api_key,
                               progress=(lines.append if lines is not None else None)))


def exchanges(path: Path) -> list[dict[str, Any]]:
    return [r for _, r in read_records(path) if r["type"] == "exchange"]


def forbidden_forms(secret: str) -> list[str]:
    """How a secret could appear: raw, JSON-escaped, URL-encoded, hex, base64 at every
    alignment, and (the prefix rule) its first 8 characters."""
    raw = secret.encode()
    forms = [secret, secret[:8], json.dumps(secret)[1:-1], quote(secret, safe=""), quote_plus(secret), raw.hex(),
             "".join(f"\\u{ord(c):04x}" for c in secret)]
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + raw).decode()
        core = enc[-(-8 * k // 6):8 * (k + len(raw)) // 6]
        forms += [core[:12], core.replace("+", "-").replace("/", "_")[:12]]
    return forms


def assert_no_secret(texts: list[str], secrets: list[str]) -> None:
    for secret in secrets:
        for form in forbidden_forms(secret):
            for text in texts:
                assert form not in text, (secret, form, text[max(0, text.find(form) - 80):text.find(form) + 80])


# ---- validation as data: the collector and the reader agree ------------------------------------

_json = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) |
                     st.sampled_from(["", "x", "-Infinity", "NaN", "A plain answer"]),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
                         st.sampled_from(["choices", "index", "message", "content", "text", "logprobs", "token",
                                          "logprob", "bytes", "top_logprobs", "tokens", "token_logprobs",
                                          "text_offset", "x"]), kids, max_size=4), max_leaves=25)


def _near_valid() -> st.SearchStrategy[Any]:
    entry = st.fixed_dictionaries({"token": st.sampled_from(["a", "b"]) | _json,
                                   "logprob": st.floats(max_value=0.0) | _json,
                                   "top_logprobs": st.lists(st.fixed_dictionaries(
                                       {"token": st.sampled_from(["a", "b"]),
                                        "logprob": st.floats(allow_nan=True) | _json}), max_size=3) | _json})
    choice = st.fixed_dictionaries({"index": st.integers(0, 2) | _json,
                                    "message": st.fixed_dictionaries({"content": st.sampled_from(["hi", ""]) | _json}),
                                    "logprobs": st.none() | st.fixed_dictionaries(
                                        {"content": st.lists(entry, max_size=3)}) | _json})
    return st.fixed_dictionaries({"choices": st.lists(choice, max_size=3) | _json}) | _json


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_near_valid())
def test_validator_never_crashes_and_stored_bodies_read_back_the_same(body):
    """Any JSON value: read_choices returns or raises ResponseError (nothing else); a body it
    accepts, stored as the collector stores it (non-finite numbers as strings, canonical JSON),
    reads back as the same choices, and the record's hash is the hash of the written line."""
    try:
        live = read_choices(body, kind="chat")
    except ResponseError as exc:
        assert str(exc).startswith("field ") or "body" in str(exc)
        return
    record = {"type": "exchange", "prompt_id": "p", "sample": 0, "endpoint": "chat", "request": {"messages": []},
              "status": 200, "response": storable(body), "seq": 1, "prev_sha256": GENESIS}
    line = canonical_json(record)  # raises on NaN/Infinity: storable must have removed them
    again = json.loads(line)
    assert record_hash(again) == record_hash(record)
    stored = record_choices(again)
    assert stored is not None and len(stored) == len(live)
    for a, b in zip(live, stored):
        assert (a.index, a.text, a.prompt_logprobs) == (b.index, b.text, b.prompt_logprobs)
        assert repr(a.logprobs) == repr(b.logprobs)  # -inf == -inf; repr also tells 0.0 from -0.0


# ---- findings 1 and 2: malformed bodies, NaN and Infinity ---------------------------------------

def test_malformed_answers_are_failed_attempts_with_their_reason(hostile, tmp_path):
    names = list(MALFORMED) + ["ok", "nonfinite", "flaky", "gzip_ok", "deflate_raw_ok"]
    out = tmp_path / "ev.jsonl"
    stats = run(hostile, _prompts(names, "m"), out)
    recs = {r["prompt_id"].rsplit("-", 1)[0]: r for r in exchanges(out)}
    assert sorted(recs) == sorted(names) and len(exchanges(out)) == len(names)
    for name, (_, reason) in MALFORMED.items():
        r = recs[name]
        assert r["status"] == 200 and r["response"] is None and r["attempts"] == LIMITS.max_attempts, name
        assert r["error"].startswith("malformed response") and reason in r["error"], (name, r["error"])
    for name in ("ok", "nonfinite", "flaky", "gzip_ok", "deflate_raw_ok"):
        assert recs[name]["response"] is not None and recs[name]["error"] is None, (name, recs[name]["error"])
    assert recs["flaky"]["attempts"] == 2
    assert (stats.collected, stats.failed) == (5, len(MALFORMED))
    # NaN/Infinity are stored as strings: strict JSON, the chain hashes what is written
    assert recs["nonfinite"]["response"]["usage"] == {"x": "NaN", "y": "Infinity"}
    assert check_chain(out).ok

    def strict(constant: str) -> None:
        raise AssertionError(f"bare {constant} in the evidence")

    for line in out.read_text().splitlines():
        json.loads(line, parse_constant=strict)
    # the reader takes every success and counts every failure: nothing malformed was recorded as an answer
    got = read_exchanges([out])
    assert not got.skipped and got.failed_requests == len(MALFORMED) and len(got.exchanges) == 5
    lp = next(e for e in got.exchanges if e.id.startswith("nonfinite")).logprobs
    assert lp == ((b"A", ((b"A", -0.01), (b"B", float("-inf")))),)
    # a resume asks nothing that succeeded again, and retries the failures
    again = run(hostile, _prompts(names, "m"), out)
    assert again.already_done == 5 and again.collected + again.failed == len(MALFORMED)


def _old_evidence(path: Path, bodies: list[Any]) -> None:
    """An evidence file as the old collector wrote it: 200 records whose bodies it never checked."""
    w = EvidenceWriter(path, 0, GENESIS)
    w.append({"type": "header", "format": "fingerprint-evidence", "version": 1, "settings": {}})
    for i, body in enumerate(bodies):
        w.append({"type": "exchange", "prompt_id": f"p{i}", "sample": 0, "endpoint": "chat",
                  "request": {"messages": [{"role": "user", "content": f"question {i}"}]}, "status": 200,
                  "response": body, "error": None})
    w.close()


def test_old_files_with_malformed_answers_are_skipped_records_not_crashes(tmp_path, teacher, capsys):
    from fingerprint.keys import FingerprintKey

    bad = [chat_body(logprobs={"content": [{"token": "a", "top_logprobs": [{"token": "b", "logprob": "x"}]}]}),
           {"choices": []}, chat_body(None), chat_body(logprobs={"content": [7]}),
           chat_body(logprobs={"content": [{"token": "a", "top_logprobs": [{"token": "b"}]}]})]
    from fingerprint.tokenize import token_bytes_table

    table = token_bytes_table(teacher.tokenizer)
    good = []
    for i in range(40):
        text = teacher.paragraphs[i][:300]
        ids = teacher.tokenizer.encode_batch([text])[0]
        entries = [{"token": table[t].decode("utf-8", "replace"), "logprob": -0.5, "bytes": list(table[t]),
                    "top_logprobs": [{"token": "", "logprob": -0.5 - j, "bytes": list(table[(t + j) % len(table)])}
                                     for j in range(3)]} for t in ids.tolist()]
        good.append(chat_body(text, logprobs={"content": entries}))
    ev = tmp_path / "old.jsonl"
    _old_evidence(ev, good[:20] + bad + good[20:])
    with pytest.raises(InputError, match=r'old.jsonl line 22: field "response.choices\[0\].logprobs.content\[0\]'
                                         r'.top_logprobs\[0\].logprob" must be a number'):
        read_exchanges([ev])
    got = read_exchanges([ev], skip_invalid=True)
    assert [s.line for s in got.skipped] == [22, 23, 24, 25, 26] and len(got.exchanges) == 40
    assert "is empty" in got.skipped[1].reason and "is null" in got.skipped[2].reason
    key = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size).save(tmp_path / "k.json")
    common = ["verify", str(ev), "--key", str(key), "--tokenizer", teacher.tokenizer.source, "--decoys", "0", "-q"]
    for mode in ("text", "logprobs"):
        assert main([*common, "--mode", mode, "--skip-invalid"]) in (0, 1), capsys.readouterr().err
        assert main([*common, "--mode", mode]) == 2
        err = capsys.readouterr().err
        assert "old.jsonl line 22" in err and "Traceback" not in err


# ---- finding 3: deadline, Retry-After, body and decompression caps; bounded memory --------------

def test_slow_huge_and_bombed_answers_stop_at_their_caps(hostile, tmp_path):
    names = ["trickle", "stall", "gzip_bomb", "huge_length", "huge_chunked", "unsupported_encoding", "retry_after",
             "drop", "ok"]
    out = tmp_path / "ev.jsonl"
    t0 = time.monotonic()
    with RssPeak() as rss:
        run(hostile, _prompts(names, "c"), out)
    elapsed = time.monotonic() - t0
    recs = {r["prompt_id"].rsplit("-", 1)[0]: r for r in exchanges(out)}
    assert rss.growth < GIB // 4, f"resident set grew by {rss.growth / 2**20:.0f} MiB"
    assert elapsed < 15
    reasons = {"trickle": "no complete response within 1 s (--request-deadline)", "stall": "ReadTimeout",
               "gzip_bomb": "over 262,144 bytes decompressed", "huge_length": "(Content-Length) over 262,144",
               "huge_chunked": "over 262,144 bytes (--max-body)",
               "unsupported_encoding": "unsupported Content-Encoding",
               "drop": "RemoteProtocolError"}
    for name, reason in reasons.items():
        r = recs[name]
        assert r["response"] is None and r["attempts"] == 2 and reason in r["error"], (name, r["error"])
        for a in r["attempt_log"]:
            assert a["seconds"] <= LIMITS.request_deadline + 0.5, (name, a)
    assert recs["retry_after"]["response"] is not None and recs["ok"]["response"] is not None
    log = recs["retry_after"]["attempt_log"]
    assert log[0]["status"] == 429
    import datetime as dt
    gap = (dt.datetime.fromisoformat(log[1]["started_at"]) - dt.datetime.fromisoformat(log[0]["started_at"]))
    assert gap.total_seconds() < LIMITS.retry_after_max + 0.5  # asked for an hour


# ---- finding 4: secrets -------------------------------------------------------------------------

def test_secrets_are_scrubbed_everywhere_in_every_encoding(hostile, tmp_path):
    """The API key (given with a trailing newline, as `echo $KEY` leaves it), a header secret by
    name and one by --secret-header: sent, echoed back by the server in many encodings (and as a
    15-character prefix, and \\u-escaped, and as a JSON key), and found in none of the evidence
    file, stdout or stderr."""
    key = "Kq" + base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
    custom, token = "cv-" + os.urandom(12).hex(), "tk-" + os.urandom(12).hex()
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"{n}-{i}", "prompt": f"b:{n}#s{i}"}) + "\n"
                               for i, n in enumerate(["echo", "echo", "echo_error", "ok"])))
    out = tmp_path / "ev.jsonl"
    before = len(hostile.seen_headers)
    res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "collect", str(prompts), "--base-url",
                          _url(hostile), "--model", "m", "--out", str(out), "--api-key-env", "HOSTILE_KEY",
                          "--header", f"X-Custom-Thing: {custom}", "--header", f"X-Api-Token: {token}",
                          "--secret-header", "x-custom-thing", "--max-attempts", "2", "--read-timeout", "2"],
                         capture_output=True, text=True, env={**os.environ, "HOSTILE_KEY": key + "\n"}, timeout=60)
    assert res.returncode == 0, res.stderr
    sent = hostile.seen_headers[before:]
    assert all(h["Authorization"] == f"Bearer {key}" and h["X-Custom-Thing"] == custom for h in sent)
    text = out.read_text()
    recs = {r["prompt_id"].rsplit("-", 1)[0]: r for r in exchanges(out)}
    assert recs["echo"]["response"] is not None and recs["echo"]["redacted"] > 10
    assert recs["echo_error"]["status"] == 401 and "<redacted>" in recs["echo_error"]["error"]
    header = next(read_records(out))[1]
    assert header["settings"]["headers"] == {"X-Custom-Thing": "<redacted>", "X-Api-Token": "<redacted>"}
    assert check_chain(out).ok and "scrubbed from 3 records" in res.stdout
    assert_no_secret([text, res.stdout, res.stderr], [key, custom, token])
    assert read_exchanges([out]).exchanges  # the scrubbed answers still read as answers


def test_redactor_catches_prefixes_and_encodings():
    secret = "sk-" + os.urandom(16).hex()
    basic = "Basic " + base64.b64encode(b"user:pa55word!").decode()
    r = Redactor([secret, *header_secrets(basic)])
    samples = [secret, secret[:15] + "... (truncated)", json.dumps({"k": secret}), quote(secret, safe=""),
               base64.b64encode(b"Bearer " + secret.encode()).decode(), secret.encode().hex(), basic,
               "pa55word", quote("user:pa55word!", safe="").lower(),
               "\\u" + "\\u".join(f"{ord(c):04x}" for c in secret)]
    for s in samples:
        clean, n = r.text(f"before {s} after")
        assert n >= 1 and clean.startswith("before ") and clean.endswith(" after"), (s, clean)
        assert_no_secret([clean], [secret])
    assert r.text("nothing secret here, sk- and all")[1] == 0


# ---- finding 5: bad input exits 2 before any request --------------------------------------------

def test_bad_input_exits_2_before_any_request(hostile, tmp_path, capsys, monkeypatch):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": 1, "prompt": "b:ok#x"}\n')
    url = _url(hostile)
    base = ["collect", str(prompts), "--model", "m", "-q"]
    ok_out = str(tmp_path / "ev.jsonl")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    cases = {
        "malformed URL": (["--base-url", "http://", "--out", ok_out], "no valid host name"),
        "bad port": (["--base-url", "http://127.0.0.1:99999/v1", "--out", ok_out], "not a valid URL"),
        "space in URL": (["--base-url", "http://exa mple.com/v1", "--out", ok_out], "space or control"),
        "not http": (["--base-url", "ftp://example.com", "--out", ok_out], "http:// or https://"),
        "URL credentials": (["--base-url", url.replace("http://", "http://user:hunter2hunter2@"), "--out", ok_out],
                            "carries credentials"),
        "query key": (["--base-url", url + "?api_key=abc123abc123", "--out", ok_out], "looks like a credential"),
        "read-timeout nan": (["--base-url", url, "--out", ok_out, "--read-timeout", "nan"], "finite number"),
        "rate inf": (["--base-url", url, "--out", ok_out, "--rate", "inf"], "finite number"),
        "temperature nan": (["--base-url", url, "--out", ok_out, "--temperature", "nan"], "finite number"),
        "deadline 0": (["--base-url", url, "--out", ok_out, "--request-deadline", "0"], "must be > 0"),
        "tiny max-body": (["--base-url", url, "--out", ok_out, "--max-body", "10"], ">= 1024"),
        "header no colon": (["--base-url", url, "--out", ok_out, "--header", "Bearer s3cr3t-value"],
                            "expected 'Name: value'"),
        "header control": (["--base-url", url, "--out", ok_out, "--header", "X-A: va\x01lue"], "control character"),
        "missing dir": (["--base-url", url, "--out", str(tmp_path / "nope" / "ev.jsonl")], "does not exist"),
        "dir is a file": (["--base-url", url, "--out", str(a_file / "ev.jsonl")], "is not a directory"),
        "out is a dir": (["--base-url", url, "--out", str(tmp_path)], "is a directory"),
    }
    if os.geteuid() != 0:  # root writes anywhere
        cases["read-only dir"] = (["--base-url", url, "--out", str(ro / "ev.jsonl")], "not writable")
    before = hostile.requests
    for label, (args, message) in cases.items():
        assert main([*base, *args]) == 2, label
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (label, err)
        assert "hunter2hunter2" not in err and "s3cr3t" not in err
    for label, value, message in (("non-ASCII key", "sk-abcdé1234567", "non-ASCII character at position 8"),
                                  ("control key", "sk-abc\x1b1234567", "control character at position 7"),
                                  ("inner space", "sk-abc 1234567", "space or control character"),
                                  ("empty key", "  \n", "is not set or empty")):
        monkeypatch.setenv("HOSTILE_KEY", value)
        assert main([*base, "--base-url", url, "--out", ok_out, "--api-key-env", "HOSTILE_KEY"]) == 2, label
        err = capsys.readouterr().err
        assert message in err and (value.strip() not in err or not value.strip()), (label, err)
    assert hostile.requests == before  # nothing was asked
    assert not Path(ok_out).exists()
    ro.chmod(0o755)


def test_collect_help_states_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["collect", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    d = ClientLimits()
    assert f"ends there (default {d.request_deadline:g})" in text
    assert f"before a retry (default {d.retry_after_max:g})" in text
    assert f"(default {d.max_body_bytes} = {d.max_body_bytes >> 20} MiB)" in text
    assert "--secret-header NAME" in text


# ---- a crash never loses the records in flight ---------------------------------------------------

def test_a_failing_write_stops_new_requests_but_keeps_those_in_flight(hostile, tmp_path, monkeypatch):
    import fingerprint.collect.evidence as evidence

    real = evidence.EvidenceWriter.append
    calls = {"n": 0}

    def flaky_append(self, record):
        calls["n"] += 1
        if calls["n"] == 6:  # the header is call 1
            raise OSError(28, "No space left on device")
        return real(self, record)

    monkeypatch.setattr(evidence.EvidenceWriter, "append", flaky_append)
    out = tmp_path / "ev.jsonl"
    with pytest.raises(OSError, match="No space left"):
        run(hostile, _prompts(["ok"] * 40, "w"), out, limits=ClientLimits(concurrency=8, max_attempts=1))
    monkeypatch.setattr(evidence.EvidenceWriter, "append", real)
    written = exchanges(out)
    # everything answered before the failure and everything in flight at that moment is written; nothing new started
    assert 4 + 7 <= len(written) + 1 <= 4 + 8 + 1 and check_chain(out).ok
    assert len({r["prompt_id"] for r in written}) == len(written)


def test_an_internal_error_on_one_answer_is_a_recorded_failure(hostile, tmp_path, monkeypatch):
    import fingerprint.collect.client as client

    real = client.read_choices

    def buggy(body, **kw):
        if "boom" in json.dumps(body):
            raise TypeError("a bug")
        return real(body, **kw)

    monkeypatch.setattr(client, "read_choices", buggy)
    monkeypatch.setitem(MALFORMED, "boom", (json.dumps(chat_body("boom")).encode(), ""))
    out = tmp_path / "ev.jsonl"
    stats = run(hostile, _prompts(["ok", "boom", "ok"], "i"), out)
    recs = exchanges(out)
    assert stats.internal_errors == 1 and stats.collected == 2 and len(recs) == 3
    bad = next(r for r in recs if r["prompt_id"].startswith("boom"))
    assert bad["attempts"] == 1 and bad["error"] == "internal error in the collector: TypeError: a bug"


# ---- finding 6: the fuzz ------------------------------------------------------------------------

def test_fuzz_a_hostile_server(hostile, tmp_path):
    """80 exchanges, each answered by a behaviour drawn at random per attempt (malformed, mutated,
    NaN, huge, slow, bombs, echoes, drops): no crash, every pair recorded once (a success, or a
    failure after its retries), every recorded answer valid for the reader, each attempt within its
    deadline, memory bounded, no secret anywhere."""
    key = "fz" + os.urandom(18).hex()
    secret = "hd" + os.urandom(18).hex()
    out = tmp_path / "ev.jsonl"
    lines: list[str] = []
    prompts = _prompts(["random"] * 80, "f")
    t0 = time.monotonic()
    with RssPeak() as rss:
        stats = run(hostile, prompts, out, api_key=key, headers={"X-Custom-Thing": secret},
                    secret_headers=("X-Custom-Thing",), lines=lines)
    elapsed = time.monotonic() - t0
    recs = exchanges(out)
    assert sorted(r["prompt_id"] for r in recs) == sorted(p.id for p in prompts)  # once each
    assert stats.collected + stats.failed == 80 and stats.internal_errors == 0
    for r in recs:
        ok = r["response"] is not None
        assert ok == (r["error"] is None), r
        assert ok or r["attempts"] == LIMITS.max_attempts or r["status"] in (400, 401), r
        assert all(a["seconds"] <= LIMITS.request_deadline + 0.5 for a in r["attempt_log"]), r
    got = read_exchanges([out])  # no --skip-invalid: every recorded answer is a valid one
    assert not got.skipped and len(got.exchanges) == stats.collected and got.failed_requests == stats.failed
    assert check_chain(out).ok
    assert rss.growth < GIB, f"resident set grew by {rss.growth / 2**20:.0f} MiB"
    assert elapsed < 30
    assert_no_secret([out.read_text(), *lines], [key, secret])
