"""Reading and validating inputs: suspect exchanges, served outputs, plain text.

Accepted inputs (detected per file, and per line inside JSONL files):

* **Exchanges JSONL**: one object per line, ``{"id", "prompt", "response"}``; ``prompt`` is a
  string or an OpenAI-style messages list (``[{"role", "content"}]``, where ``content`` is a
  string or a list of ``{"type": "text", "text"}`` parts).
* **Evidence JSONL** written by ``fingerprint collect``: records carrying ``request``,
  ``response``, ``status`` and ``prev_sha256``; read unchanged. Each choice of a successful
  response is one exchange; failed requests are counted, not read. Every response body is
  validated as untrusted data by :func:`fingerprint.apiformat.read_choices` (the same check the
  collector makes before recording a success), so a malformed body in an old file (bad logprobs,
  ``choices: []``, ``content: null``, wrong types) is a bad record naming its field, never a
  traceback. Records of other types (not ``exchange``) are not exchanges and are passed over.
* **Plain text**: any other file is one response with an empty prompt.

Every problem names the file, the line and the field, e.g.
``responses.jsonl line 12: field "response" missing``. With ``skip_invalid`` the record is
skipped and counted instead; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .apiformat import ResponseError, TokenLogprobs, content_text, record_choices, request_prompt
from .errors import InputError

__all__ = ["Exchange", "TokenLogprobs", "InputFile", "SkippedRecord", "ExchangeSet", "read_exchanges", "sha256_file",
           "messages_text", "evidence_record_exchanges", "MAX_TEXT_CHARS",
           "RecordError"]


#: (id, prompt, response, logprobs, prompt logprobs) of one exchange read from a record.
_Record = tuple[str | None, str, str, TokenLogprobs | None, TokenLogprobs | None]


@dataclass(frozen=True)
class Exchange:
    """One prompt and one response. ``source`` is ``file:line`` (or the file for plain text).

    From evidence collected with ``--logprobs``: ``logprobs`` holds the response tokens with
    their top-k alternatives; with ``--echo`` (completions), ``prompt_logprobs`` holds the
    prompt's tokens with the suspect's top-k predictions for each (None for the first).
    """

    id: str
    prompt: str
    response: str
    source: str
    logprobs: TokenLogprobs | None = None
    prompt_logprobs: TokenLogprobs | None = None


@dataclass(frozen=True)
class InputFile:
    """An input file, its SHA-256 and what was read from it."""

    path: str
    sha256: str
    format: str  # "exchanges", "evidence", "text"
    records: int


@dataclass(frozen=True)
class SkippedRecord:
    file: str
    line: int
    reason: str


@dataclass
class ExchangeSet:
    """Exchanges read from one or more files, with what was skipped and why."""

    exchanges: list[Exchange] = field(default_factory=list)
    files: list[InputFile] = field(default_factory=list)
    skipped: list[SkippedRecord] = field(default_factory=list)
    failed_requests: int = 0
    #: Stopping rules recorded in evidence headers (``collect --until-detected``), with their file.
    stopping_rules: list[dict[str, Any]] = field(default_factory=list)

    @property
    def prompts(self) -> list[str]:
        return [e.prompt for e in self.exchanges]

    @property
    def responses(self) -> list[str]:
        return [e.response for e in self.exchanges]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: A bad record; the reader adds file and line (one class with the response validator's error).
_RecordError = ResponseError

#: The longest prompt or response read (characters): a model's answer is at most a few hundred
#: thousand characters, and one 50 MB line would take gigabytes to tokenize.
MAX_TEXT_CHARS = 2_000_000

#: Raised by :func:`messages_text` for a malformed messages list (callers add file and line).
RecordError = _RecordError


_content_text = content_text


def messages_text(messages: Any, where: str = "prompt") -> str:
    """The text of an OpenAI-style messages list (all contents joined by newlines)."""
    if not isinstance(messages, list):
        raise _RecordError(f'field "{where}" must be a string or a messages list')
    texts = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _RecordError(f'field "{where}[{i}]" must be an object with "role" and "content"')
        if "content" not in msg:
            raise _RecordError(f'field "{where}[{i}].content" missing')
        texts.append(_content_text(msg["content"], f"{where}[{i}].content"))
    return "\n".join(texts)


def _prompt_text(value: Any, where: str = "prompt") -> str:
    if isinstance(value, str):
        return value
    return messages_text(value, where)


def _require(obj: dict[str, Any], name: str) -> Any:
    if name not in obj:
        raise _RecordError(f'field "{name}" missing')
    return obj[name]


def _is_evidence(obj: dict[str, Any]) -> bool:
    return "prev_sha256" in obj


def _exchange_records(obj: dict[str, Any], *, require_prompt: bool) -> list[_Record]:
    """(id, prompt, response) of a plain exchange record."""
    response = _require(obj, "response")
    if not isinstance(response, str):
        raise _RecordError(f'field "response" must be a string, got {type(response).__name__}')
    if not response.strip():
        raise _RecordError('field "response" is empty')
    if require_prompt:
        prompt = _prompt_text(_require(obj, "prompt"))
    else:
        prompt = _prompt_text(obj["prompt"]) if "prompt" in obj else ""
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, (str, int)):
        raise _RecordError(f'field "id" must be a string or an integer, got {type(rid).__name__}')
    return [(None if rid is None else str(rid), prompt, response, None, None)]


def _evidence_records(obj: dict[str, Any]) -> list[_Record] | None:
    """(id, prompt, response, logprobs, prompt logprobs) per choice of an evidence record; None
    for a failed request, ``[]`` for the header and other non-exchange records."""
    if obj.get("type") not in (None, "exchange"):
        return []
    choices = record_choices(obj)  # validates the whole body; raises ResponseError naming the field
    if choices is None:
        return None
    request = obj["request"]
    prompt = (messages_text(request["messages"], "request.messages") if "messages" in request
              else request_prompt(request))
    base = f"{obj.get('prompt_id', '?')}#{obj.get('sample', 0)}"
    return [(f"{base}.{c.index}", prompt, c.text, c.logprobs, c.prompt_logprobs) for c in choices]


def evidence_record_exchanges(record: dict[str, Any], *, source: str = "") -> list[Exchange] | None:
    """The exchanges (one per choice) of one evidence record, as :func:`read_exchanges` reads
    them; ``[]`` for the header, ``None`` for a failed request. Raises :class:`InputError` for a
    malformed record."""
    try:
        records = _evidence_records(record)
    except _RecordError as exc:
        raise InputError(f"{source or 'evidence record'}: {exc}") from None
    if records is None:
        return None
    return [Exchange(rid if rid is not None else source, prompt, response, source, lp, plp)
            for rid, prompt, response, lp, plp in records]


def _looks_like_jsonl(path: Path, head: bytes) -> bool:
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return True
    return head.lstrip()[:1] == b"{"


def read_exchanges(paths: Sequence[str | os.PathLike[str]], *, skip_invalid: bool = False,
                   require_prompt: bool = True) -> ExchangeSet:
    """Read suspect exchanges (or served outputs, with ``require_prompt=False``) from files.

    Raises :class:`InputError` naming the file, line and field of the first bad record,
    unless ``skip_invalid``, in which case bad records are listed in ``skipped``.
    """
    result = ExchangeSet()
    for p in paths:
        path = Path(p)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror}") from None
        digest = hashlib.sha256(raw).hexdigest()
        if not _looks_like_jsonl(path, raw[:4096]):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problem = f"{path}: not valid UTF-8 (byte {exc.start})"
                if not skip_invalid:
                    raise InputError(problem) from None
                result.skipped.append(SkippedRecord(str(path), 0, "not valid UTF-8"))
                result.files.append(InputFile(str(path), digest, "text", 0))
                continue
            if not text.strip():
                if not skip_invalid:
                    raise InputError(f"{path}: text file is empty")
                result.skipped.append(SkippedRecord(str(path), 0, "empty text file"))
                result.files.append(InputFile(str(path), digest, "text", 0))
                continue
            if len(text) > MAX_TEXT_CHARS:
                problem = f"{path}: a text of {len(text):,} characters exceeds the limit of {MAX_TEXT_CHARS:,}"
                if not skip_invalid:
                    raise InputError(problem)
                result.skipped.append(SkippedRecord(str(path), 0, problem))
                result.files.append(InputFile(str(path), digest, "text", 0))
                continue
            result.exchanges.append(Exchange(path.name, "", text, str(path)))
            result.files.append(InputFile(str(path), digest, "text", 1))
            continue
        n_records = 0
        formats = set()
        lines = raw.split(b"\n")
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if lineno == len(lines) and (b'"prev_sha256"' in line or "evidence" in formats):
                # an unterminated last line of evidence is a torn (or forged) write: never scored
                result.skipped.append(SkippedRecord(str(path), lineno, "torn tail: no terminating newline "
                                                                       "(not part of the evidence chain; not scored)"))
                continue
            try:
                try:
                    decoded = line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _RecordError(f"not valid UTF-8 (byte {exc.start} of the line)") from None
                try:
                    obj = json.loads(decoded)
                except json.JSONDecodeError as exc:
                    raise _RecordError(f"not valid JSON (column {exc.colno}: {exc.msg})") from None
                except RecursionError:
                    raise _RecordError("JSON nested too deeply to read") from None
                if not isinstance(obj, dict):
                    raise _RecordError(f"expected a JSON object, got {type(obj).__name__}")
                if _is_evidence(obj):
                    formats.add("evidence")
                    if obj.get("type") == "header" and isinstance(obj.get("stopping_rule"), dict):
                        result.stopping_rules.append({"file": str(path), **obj["stopping_rule"]})
                    records = _evidence_records(obj)
                    if records is None:
                        result.failed_requests += 1
                        continue
                else:
                    formats.add("exchanges")
                    records = _exchange_records(obj, require_prompt=require_prompt)
                for _rid, prompt_text, response_text, _lp, _plp in records:
                    longest = max(len(prompt_text), len(response_text))
                    if longest > MAX_TEXT_CHARS:
                        raise _RecordError(f"a text of {longest:,} characters exceeds the limit of "
                                           f"{MAX_TEXT_CHARS:,} (tokenizing it would take gigabytes; no model "
                                           f"answers at that length)")
            except _RecordError as exc:
                if not skip_invalid:
                    raise InputError(f"{path} line {lineno}: {exc}") from None
                result.skipped.append(SkippedRecord(str(path), lineno, str(exc)))
                continue
            for rid, prompt, response, lp, plp in records:
                result.exchanges.append(Exchange(rid if rid is not None else f"{path.name}:{lineno}",
                                                 prompt, response, f"{path}:{lineno}", lp, plp))
                n_records += 1
        fmt = "evidence" if formats == {"evidence"} else "exchanges" if formats <= {"exchanges"} else "mixed"
        result.files.append(InputFile(str(path), digest, fmt, n_records))
    return result
