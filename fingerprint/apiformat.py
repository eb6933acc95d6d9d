"""OpenAI-compatible response bodies as untrusted data: parsing, validation, storage.

A suspect's server can send anything. This module is the one place that decides what a
response body must hold to count as an answer; the collector (before recording a success)
and the reader (:mod:`fingerprint.corpus`, on every evidence record) both call it, so a body
the collector accepts is a body the verifier can read, and a malformed one is rejected with
the field that is wrong, e.g. ``response.choices[0].logprobs.content[3].top_logprobs[1].logprob
is NaN, not a log-probability``.

What a successful body must hold:

* a JSON object with a non-empty ``choices`` list of objects, each with a distinct
  non-negative integer ``index`` (or none);
* chat: ``message.content`` a string (or a list of text parts), never null; completions:
  ``text`` a string; the text is not empty (after the echoed prompt is removed), unless the
  choice carries prompt logprobs (reading mode);
* ``logprobs`` null/absent, or well formed. Chat: ``{"content": null | [entry, ...]}`` where an
  entry has ``token`` (string), ``logprob`` (number or null), ``bytes`` (null or a list of
  integers 0..255) and ``top_logprobs`` (null or a list of such entries whose ``logprob`` is a
  number). Completions: ``tokens`` (strings) with optional ``token_logprobs`` (numbers or
  nulls), ``top_logprobs`` (nulls or ``{token: number}`` objects), ``text_offset`` (non-negative
  integers) and ``token_bytes`` (nulls or byte lists), all of the same length. A log-probability
  is a number <= 1e-3 (rounding) or -Infinity; NaN and +Infinity are refused.

**Non-finite numbers.** Python servers emit ``NaN``, ``Infinity`` and ``-Infinity`` (JSON has
none of them); :func:`parse_body` accepts them as numbers. Evidence is strict JSON, so
:func:`storable` writes each non-finite number as the string ``"NaN"``, ``"Infinity"`` or
``"-Infinity"`` (wherever it sits in the body), and the reader (``stored=True``) reads a
log-probability given as one of those three strings as the number. A live response whose
log-probability is a string is refused, so in evidence written by the collector such a string
always stands for a non-finite number.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["ResponseError", "TokenLogprobs", "Choice", "parse_body", "storable", "read_choices", "record_choices",
           "request_prompt", "content_text", "MAX_DEPTH", "NONFINITE"]

#: Per token: (the token's bytes, [(candidate bytes, log-probability), ...] best first).
TokenLogprobs = tuple[tuple[bytes, tuple[tuple[bytes, float], ...]], ...]

#: The strings that stand for non-finite numbers in stored evidence.
NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

#: Deepest nesting of a body (a real response is about 6 levels deep).
MAX_DEPTH = 64

#: Largest log-probability accepted (float rounding of log(1) in float32 servers).
_LOGPROB_MAX = 1e-3


class ResponseError(Exception):
    """A response body (or record) that is not a valid answer; the message names the field.

    Internal: the collector records it as a failed attempt, the reader adds file and line and
    raises :class:`fingerprint.errors.InputError` (or skips the record)."""


@dataclass(frozen=True)
class Choice:
    """One validated choice: its index, text (echoed prompt removed) and logprobs."""

    index: int
    text: str
    logprobs: TokenLogprobs | None
    prompt_logprobs: TokenLogprobs | None


def _type(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def parse_body(data: bytes) -> Any:
    """The JSON value of a response body; NaN and +/-Infinity read as floats.

    Raises :class:`ResponseError` for invalid JSON or UTF-8, nesting deeper than
    :data:`MAX_DEPTH`, and strings that cannot be stored (lone surrogates)."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise ResponseError(f"body nested deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError as exc:
        raise ResponseError(f"body is not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ResponseError(f"body is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    except ValueError as exc:  # e.g. an integer literal over Python's digit limit
        raise ResponseError(f"body is not valid JSON ({str(exc)[:100]})") from None
    _inspect(value)
    return value


def _inspect(value: Any) -> None:
    """Depth and storable strings, iteratively (a hostile body must not exhaust the stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            _check_str(v)
        elif isinstance(v, (dict, list)):
            if depth > MAX_DEPTH:
                raise ResponseError(f"body nested deeper than {MAX_DEPTH} levels")
            if isinstance(v, dict):
                for k, x in v.items():
                    _check_str(k)
                    stack.append((x, depth + 1))
            else:
                stack.extend((x, depth + 1) for x in v)


def _check_str(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ResponseError(f"body holds a string that is not valid Unicode (lone surrogate "
                            f"U+{ord(s[exc.start]):04X})") from None


def storable(value: Any) -> Any:
    """A copy of ``value`` with every non-finite float written as ``"NaN"``, ``"Infinity"`` or
    ``"-Infinity"`` (strict JSON; see the module docstring). Depth is bounded by
    :func:`parse_body` for bodies, and small for the collector's own records."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {k: storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def content_text(content: Any, where: str) -> str:
    """The text of a message ``content``: a string or a list of parts (text parts joined by
    newlines; images and audio carry no text). ``None`` reads as ``""``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, dict) and part.get("type") not in (None, "text"):
                continue  # images, audio: carry no text to score or exclude
            else:
                raise ResponseError(f'field "{where}[{j}]" must be a string or a text part')
        return "\n".join(parts)
    if content is None:
        return ""
    raise ResponseError(f'field "{where}" must be a string or a list of parts, got {_type(content)}')


def _logprob(v: Any, where: str, *, stored: bool, nullable: bool) -> float | None:
    if stored and isinstance(v, str) and v in NONFINITE:
        v = NONFINITE[v]
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ResponseError(f'field "{where}" must be a number, got {_type(v)}')
    x = float(v)
    if math.isnan(x):
        raise ResponseError(f'field "{where}" is NaN, not a log-probability')
    if x > _LOGPROB_MAX:
        raise ResponseError(f'field "{where}" is {x:g} > 0, not a log-probability')
    return x


def _byte_list(v: Any, where: str) -> bytes | None:
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255
                                          for b in v):
        raise ResponseError(f'field "{where}" must be null or a list of integers 0..255')
    return bytes(v)


def _token_of(entry: dict[str, Any], where: str) -> bytes:
    """A chat logprob entry's bytes (``bytes`` when given, else the UTF-8 of ``token``)."""
    token = entry.get("token")
    if token is not None and not isinstance(token, str):
        raise ResponseError(f'field "{where}.token" must be a string, got {_type(token)}')
    b = _byte_list(entry.get("bytes"), f"{where}.bytes")
    if b is not None:
        return b
    if token is None:
        raise ResponseError(f'field "{where}.token" missing (and no "bytes")')
    return token.encode("utf-8")


def _chat_logprobs(lp: Any, where: str, *, stored: bool) -> TokenLogprobs | None:
    if lp is None:
        return None
    if not isinstance(lp, dict):
        raise ResponseError(f'field "{where}" must be an object or null, got {_type(lp)}')
    content = lp.get("content")
    if content is None:
        return None
    if not isinstance(content, list):
        raise ResponseError(f'field "{where}.content" must be a list or null, got {_type(content)}')
    out = []
    for i, e in enumerate(content):
        w = f"{where}.content[{i}]"
        if not isinstance(e, dict):
            raise ResponseError(f'field "{w}" must be an object, got {_type(e)}')
        tb = _token_of(e, w)
        _logprob(e.get("logprob"), f"{w}.logprob", stored=stored, nullable=True)
        tops = e.get("top_logprobs")
        if tops is None:
            tops = []
        if not isinstance(tops, list):
            raise ResponseError(f'field "{w}.top_logprobs" must be a list or null, got {_type(tops)}')
        top = []
        for j, c in enumerate(tops):
            wc = f"{w}.top_logprobs[{j}]"
            if not isinstance(c, dict):
                raise ResponseError(f'field "{wc}" must be an object, got {_type(c)}')
            x = _logprob(c.get("logprob"), f"{wc}.logprob", stored=stored, nullable=False)
            assert x is not None
            top.append((_token_of(c, wc), x))
        out.append((tb, tuple(top)))
    return tuple(out)


def _same_length(lp: dict[str, Any], name: str, n: int, where: str) -> list[Any] | None:
    v = lp.get(name)
    if v is None or v == []:  # an empty list reads as absent (as the reader always did)
        return None
    if not isinstance(v, list):
        raise ResponseError(f'field "{where}.{name}" must be a list or null, got {_type(v)}')
    if len(v) != n:
        raise ResponseError(f'field "{where}.{name}" has {len(v)} entries for {n} tokens')
    return v


def _completion_logprobs(lp: Any, where: str, prompt: str, echo: bool, *,
                         stored: bool) -> tuple[TokenLogprobs | None, TokenLogprobs | None]:
    """(response part, prompt part) of a legacy completions ``logprobs`` object."""
    if lp is None:
        return None, None
    if not isinstance(lp, dict):
        raise ResponseError(f'field "{where}" must be an object or null, got {_type(lp)}')
    tokens = lp.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ResponseError(f'field "{where}.tokens" must be a list of strings')
    n = len(tokens)
    token_logprobs = _same_length(lp, "token_logprobs", n, where)
    tops = _same_length(lp, "top_logprobs", n, where)
    offsets = _same_length(lp, "text_offset", n, where)
    tbytes = _same_length(lp, "token_bytes", n, where)
    for i, x in enumerate(token_logprobs or ()):
        _logprob(x, f"{where}.token_logprobs[{i}]", stored=stored, nullable=True)
    for i, o in enumerate(offsets or ()):
        if isinstance(o, bool) or not isinstance(o, int) or o < 0:
            raise ResponseError(f'field "{where}.text_offset[{i}]" must be a non-negative integer')
    entries = []
    for i, tok in enumerate(tokens):
        b = _byte_list(tbytes[i], f"{where}.token_bytes[{i}]") if tbytes is not None else None
        top = tops[i] if tops is not None else None
        if top is not None and not isinstance(top, dict):
            raise ResponseError(f'field "{where}.top_logprobs[{i}]" must be an object or null, got {_type(top)}')
        cands = []
        for k, v in (top or {}).items():
            x = _logprob(v, f"{where}.top_logprobs[{i}][{json.dumps(k)[:40]}]", stored=stored, nullable=False)
            assert x is not None
            cands.append((k.encode("utf-8"), x))
        cands.sort(key=lambda kv: -kv[1])
        entries.append((b if b is not None else tok.encode("utf-8"), tuple(cands)))
    if not echo:
        return tuple(entries), None
    n_prompt = sum(1 for o in offsets if o < len(prompt)) if offsets else 0
    return tuple(entries[n_prompt:]), tuple(entries[:n_prompt])


def read_choices(body: Any, *, kind: str | None = None, prompt: str = "", echo: bool = False,
                 stored: bool = False, where: str = "response") -> list[Choice]:
    """Validate a response body and return its choices (see the module docstring).

    ``kind``: ``"chat"`` (every choice needs ``message``), ``"completions"`` (``text``) or None
    (either, per choice). ``prompt`` and ``echo``: the request's prompt and echo flag (an echoed
    prompt is removed from the text). ``stored``: the body comes from an evidence file
    (non-finite log-probabilities written as strings). Raises :class:`ResponseError`."""
    if not isinstance(body, dict):
        raise ResponseError(f'field "{where}" must be an object, got {_type(body)}')
    choices = body.get("choices")
    if not isinstance(choices, list):
        raise ResponseError(f'field "{where}.choices" missing or not a list')
    if not choices:
        raise ResponseError(f'field "{where}.choices" is empty')
    out: list[Choice] = []
    seen: set[int] = set()
    for i, choice in enumerate(choices):
        w = f"{where}.choices[{i}]"
        if not isinstance(choice, dict):
            raise ResponseError(f'field "{w}" must be an object, got {_type(choice)}')
        index = choice.get("index", i)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ResponseError(f'field "{w}.index" must be a non-negative integer')
        if index in seen:
            raise ResponseError(f'field "{w}.index" {index} repeats an earlier choice')
        seen.add(index)
        is_chat = "message" in choice if kind is None else kind == "chat"
        if is_chat:
            message = choice.get("message")
            if not isinstance(message, dict):
                raise ResponseError(f'field "{w}.message" missing or not an object')
            if message.get("content") is None:
                raise ResponseError(f'field "{w}.message.content" is null or missing')
            text = content_text(message["content"], f"{w}.message.content")
            lp, plp = _chat_logprobs(choice.get("logprobs"), f"{w}.logprobs", stored=stored), None
        else:
            raw = choice.get("text")
            if not isinstance(raw, str):
                raise ResponseError(f'field "{w}.text" must be a string, got {_type(raw)}')
            text = raw
            if echo and text.startswith(prompt):
                text = text[len(prompt):]
            lp, plp = _completion_logprobs(choice.get("logprobs"), f"{w}.logprobs", prompt, echo, stored=stored)
        if not text.strip() and plp is None:
            raise ResponseError(f'field "{w}" is empty (no text)')
        out.append(Choice(index, text, lp, plp))
    return out


def request_prompt(request: dict[str, Any]) -> str:
    """The prompt text of a completions request (``""`` for chat; used for echo removal)."""
    raw = request.get("prompt", "")
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        return "\n".join(str(x) for x in raw)
    return ""


def record_choices(record: dict[str, Any]) -> list[Choice] | None:
    """The validated choices of a stored exchange record; None for a failed request (no 200,
    or no body). Raises :class:`ResponseError` for a malformed record or body."""
    if record.get("status") != 200 or record.get("response") is None:
        return None
    request = record.get("request")
    if not isinstance(request, dict):
        raise ResponseError('field "request" missing or not an object')
    endpoint = record.get("endpoint")
    kind = str(endpoint) if endpoint in ("chat", "completions") else None
    return read_choices(record["response"], kind=kind, prompt=request_prompt(request),
                        echo=bool(request.get("echo")), stored=True)
