"""Collecting evidence over real HTTP on 127.0.0.1 from the local OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fingerprint.collect.client import _retry_after, read_prompts
from fingerprint.collect.evidence import check_chain, read_records
from fingerprint.errors import InputError
from fingerprint.keys import FingerprintKey
from fingerprint.sim.server import Faults, ServedModel, serve


@pytest.fixture(scope="module")
def served(teacher):
    return ServedModel(teacher.model, teacher.tokenizer)


@pytest.fixture(scope="module")
def clean_server(served):
    with serve(served) as srv:
        yield srv


def write_prompts(path: Path, teacher, n: int, *, messages: bool = False) -> Path:
    with open(path, "w") as fh:
        for i in range(n):
            text = teacher.paragraphs[(i * 7) % len(teacher.paragraphs)][:120]
            row = {"id": f"p{i}", "messages": [{"role": "user", "content": text}]} if messages else \
                {"id": f"p{i}", "prompt": text}
            fh.write(json.dumps(row) + "\n")
    return path


def collect_cmd(prompts, url, out, *extra):
    return [sys.executable, "-m", "fingerprint.cli", "collect", str(prompts), "--base-url", url,
            "--model", "suspect", "--out", str(out), *map(str, extra)]


def successes(path):
    counts: dict = {}
    for _, rec in read_records(path):
        if rec.get("type") == "exchange" and rec.get("status") == 200:
            key = (rec["prompt_id"], rec["sample"])
            counts[key] = counts.get(key, 0) + 1
    return counts


def test_openai_client_parses_chat_completions_and_logprobs(clean_server):
    openai = pytest.importorskip("openai")  # installed by the test extra; a hard dependency of this test
    client = openai.OpenAI(base_url=clean_server.url, api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["local-ngram"]
    chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "In the beginning"}],
                                          max_tokens=12, logprobs=True, top_logprobs=3, seed=1, temperature=0.8)
    choice = chat.choices[0]
    assert choice.message.content and choice.finish_reason == "length"
    assert len(choice.logprobs.content) == 12
    first = choice.logprobs.content[0]
    assert len(first.top_logprobs) == 3 and first.logprob <= 0
    assert first.top_logprobs[0].logprob >= first.top_logprobs[-1].logprob
    assert "".join(bytes(t.bytes).decode("utf-8", "replace") for t in choice.logprobs.content) == choice.message.content
    again = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "In the beginning"}],
                                           max_tokens=12, seed=1, temperature=0.8)
    assert again.choices[0].message.content == choice.message.content  # seed reproduces
    comp = client.completions.create(model="m", prompt="And God said", max_tokens=6, logprobs=2, echo=True, n=2)
    assert len(comp.choices) == 2
    lp = comp.choices[0].logprobs
    assert comp.choices[0].text.startswith("And God said")
    assert lp.token_logprobs[0] is None and all(x <= 0 for x in lp.token_logprobs[1:])
    assert len(lp.tokens) == len(lp.top_logprobs) > 6
    stop = client.completions.create(model="m", prompt="And God said", max_tokens=40, stop=["."])
    assert "." not in stop.choices[0].text


def test_read_prompts_errors(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n')
    with pytest.raises(InputError, match='line 2: id "1" already used on line 1'):
        read_prompts(p)
    p.write_text('{"id": 1}\n')
    with pytest.raises(InputError, match='line 1: field "prompt" .or "messages". missing'):
        read_prompts(p)
    p.write_text('{"prompt": "x"}\n')
    with pytest.raises(InputError, match='line 1: field "id" missing'):
        read_prompts(p)
    p.write_bytes(b'{"id": 1, "prompt": "\xff"}\n')
    with pytest.raises(InputError, match="line 1: not valid UTF-8"):
        read_prompts(p)


def test_retry_after_parsing():
    assert _retry_after("2.5") == 2.5
    assert _retry_after(None) is None and _retry_after("soon") is None
    assert 0 <= _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_1000_prompts_concurrency_32_with_10_percent_faults(served, teacher, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", teacher, 1000)
    out = tmp_path / "evidence.jsonl"
    faults = Faults.mixed(0.10, slow_seconds=1.5, retry_after=0.05, seed=3)
    with serve(served, faults=faults) as srv:
        res = subprocess.run(collect_cmd(prompts, srv.url, out, "--max-tokens", 6, "--concurrency", 32,
                                         "--read-timeout", 0.8, "--max-attempts", 8), capture_output=True,
                             text=True, timeout=600)
        injected = srv.faults_injected
    assert res.returncode == 0, res.stderr
    assert all(v > 5 for v in injected.values()), injected
    counts = successes(out)
    assert sorted(counts) == sorted((f"p{i}", 0) for i in range(1000))
    assert set(counts.values()) == {1}
    records = [r for _, r in read_records(out) if r["type"] == "exchange"]
    assert len(records) == 1000  # no failure records either
    assert sum(r["attempts"] > 1 for r in records) > 50
    check = check_chain(out)
    assert check.ok and check.records == 1001
    ok = subprocess.run([sys.executable, "-m", "fingerprint.cli", "evidence", "verify", str(out)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "chain intact, 1,001 records" in ok.stdout


def test_sigkill_then_resume(served, teacher, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", teacher, 300)
    out = tmp_path / "evidence.jsonl"
    with serve(served) as srv:
        cmd = collect_cmd(prompts, srv.url, out, "--max-tokens", 4, "--concurrency", 8, "--rate", 60,
                          "--samples", 2)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") > 100:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        before = successes(out)
        assert 90 < len(before) < 600
        with open(out, "ab") as fh:  # a torn last line, as a kill in mid-write leaves
            fh.write(b'{"type": "exchange", "seq": 99999, "prompt_')
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"already in the evidence {len(before):,} of 600" in res.stdout
    counts = successes(out)
    assert sorted(counts) == sorted((f"p{i}", s) for i in range(300) for s in range(2))
    assert set(counts.values()) == {1}
    assert check_chain(out).ok


def tamper_check(path: Path) -> tuple[int, str]:
    res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "evidence", "verify", str(path)],
                         capture_output=True, text=True)
    return res.returncode, res.stdout


def test_tampering_is_detected_with_its_line(clean_server, teacher, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", teacher, 12, messages=True)
    out = tmp_path / "evidence.jsonl"
    res = subprocess.run(collect_cmd(prompts, clean_server.url, out, "--max-tokens", 5), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = out.read_bytes().splitlines(keepends=True)
    assert tamper_check(out)[0] == 0

    edited = tmp_path / "edited.jsonl"
    rec = json.loads(lines[5])
    rec["response"]["choices"][0]["message"]["content"] = "a more convenient answer"
    edited.write_bytes(b"".join(lines[:5] + [json.dumps(rec).encode() + b"\n"] + lines[6:]))
    code, msg = tamper_check(edited)
    assert code == 1 and "line 6: BROKEN" in msg and "edited" in msg

    deleted = tmp_path / "deleted.jsonl"
    deleted.write_bytes(b"".join(lines[:7] + lines[8:]))
    code, msg = tamper_check(deleted)
    assert code == 1 and "line 8: BROKEN" in msg

    swapped = tmp_path / "swapped.jsonl"
    swapped.write_bytes(b"".join(lines[:3] + [lines[4], lines[3]] + lines[5:]))
    code, msg = tamper_check(swapped)
    assert code == 1 and "line 4: BROKEN" in msg

    # appending to a broken chain is refused
    res = subprocess.run(collect_cmd(prompts, clean_server.url, deleted, "--max-tokens", 5),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "line 8" in res.stderr and "refusing to append" in res.stderr


def test_api_key_never_written(served, teacher, tmp_path):
    secret = "sk-test-" + os.urandom(12).hex()
    prompts = write_prompts(tmp_path / "p.jsonl", teacher, 20)
    out = tmp_path / "evidence.jsonl"
    env = {**os.environ, "SUSPECT_KEY": secret}
    with serve(served, api_key=secret, faults=Faults.mixed(0.3, slow_seconds=1.0, retry_after=0.01)) as srv:
        ok = subprocess.run(collect_cmd(prompts, srv.url, out, "--api-key-env", "SUSPECT_KEY", "--max-tokens", 4,
                                        "--header", f"X-Api-Key: {secret}", "--read-timeout", 0.5),
                            capture_output=True, text=True, env=env, timeout=120)
        assert ok.returncode == 0, ok.stderr
        assert len(successes(out)) == 20
        wrong_env = {**os.environ, "SUSPECT_KEY": secret + "-wrong"}
        bad_out = tmp_path / "bad.jsonl"
        bad = subprocess.run(collect_cmd(prompts, srv.url, bad_out, "--api-key-env", "SUSPECT_KEY",
                                         "--max-tokens", 4), capture_output=True, text=True, env=wrong_env,
                             timeout=120)
    records = [r for _, r in read_records(bad_out) if r["type"] == "exchange"]
    assert all(r["status"] == 401 and r["attempts"] == 1 for r in records if r["status"] is not None)
    for text in (out.read_text(), ok.stdout, ok.stderr, bad_out.read_text(), bad.stdout, bad.stderr):
        assert secret not in text
    missing = subprocess.run(collect_cmd(prompts, "http://127.0.0.1:9", tmp_path / "x.jsonl",
                                         "--api-key-env", "NOT_SET_ANYWHERE"), capture_output=True, text=True)
    assert missing.returncode == 2 and "NOT_SET_ANYWHERE" in missing.stderr


def test_other_4xx_is_a_failure_without_retry(clean_server, teacher, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", teacher, 3)
    out = tmp_path / "evidence.jsonl"
    res = subprocess.run(collect_cmd(prompts, clean_server.url, out, "--max-tokens", 99999), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "failed 3" in res.stdout
    recs = [r for _, r in read_records(out) if r["type"] == "exchange"]
    assert [(r["status"], r["attempts"]) for r in recs] == [(400, 1)] * 3


def test_retry_after_is_honoured(served, teacher, tmp_path):
    import datetime as dt

    prompts = write_prompts(tmp_path / "p.jsonl", teacher, 10)
    out = tmp_path / "evidence.jsonl"
    with serve(served, faults=Faults(rate_limited=0.5, retry_after=0.4, seed=1)) as srv:
        res = subprocess.run(collect_cmd(prompts, srv.url, out, "--max-tokens", 3, "--max-attempts", 12),
                             capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    gaps = []
    for _, r in read_records(out):
        log = r.get("attempt_log") or []
        for a, b in zip(log, log[1:]):
            if a["status"] == 429:
                t = [dt.datetime.fromisoformat(x["started_at"]) for x in (a, b)]
                gaps.append((t[1] - t[0]).total_seconds())
    assert gaps and min(gaps) >= 0.4


def test_collected_evidence_feeds_verify(teacher, tmp_path):
    key = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size, delta=2.0)
    key_path = key.save(tmp_path / "k.json")
    fingerprinted = ServedModel(teacher.model, teacher.tokenizer, scheme=key.scheme_object())
    prompts = write_prompts(tmp_path / "p.jsonl", teacher, 40)
    out = tmp_path / "evidence.jsonl"
    with serve(fingerprinted) as srv:
        res = subprocess.run(collect_cmd(prompts, srv.url, out, "--max-tokens", 40, "--logprobs", 5),
                             capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    ver = subprocess.run([sys.executable, "-m", "fingerprint.cli", "verify", str(out), "--key", str(key_path),
                          "--tokenizer", teacher.tokenizer.source, "--decoys", "20", "--json",
                          str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300)
    assert ver.returncode == 0, ver.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["verdict"] == "detected" and doc["inputs"]["suspect"][0]["format"] == "evidence"
