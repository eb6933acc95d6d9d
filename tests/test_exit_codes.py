"""Exit codes, output paths, report files and Markdown written safely, bounded reports, and the
tokenizer fit check (issue: evidence that holds up)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import fingerprint.cli as cli
from fingerprint.cli import EXIT_BAD_INPUT, EXIT_INTERNAL, main
from fingerprint.keys import FingerprintKey
from fingerprint.report import MAX_RESPONSES, render_markdown, write_text


@pytest.fixture(scope="module")
def case(teacher, tmp_path_factory):
    d = tmp_path_factory.mktemp("exits")
    key = FingerprintKey(bytes(range(1, 33)), "greenlist", {"delta": 3.0}, teacher.vocab_size)
    key.save(d / "key.json")
    texts = [p for p in teacher.paragraphs[500:520] if len(p) > 80]
    rows = [{"id": f"r{i}", "prompt": "", "response": t} for i, t in enumerate(texts)]
    rows[0]["id"] = "evil\n# DETECTED | <b>x</b> [link](http://a)"
    (d / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d, key


def _verify(d, teacher, *extra: str) -> list[str]:
    return ["verify", str(d / "in.jsonl"), "--key", str(d / "key.json"), "--tokenizer", teacher.tokenizer.source,
            "--decoys", "0", *extra]


def test_internal_error_exits_3_with_one_line_and_debug_shows_the_traceback(case, teacher, monkeypatch, capsys):
    d, _ = case

    def broken(_args):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "_cmd_verify", broken)
    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _rebind(parser(), broken))
    assert main(_verify(d, teacher)) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: boom" in err and "--debug" in err and "Traceback" not in err
    assert main(["--debug", *_verify(d, teacher)]) == EXIT_INTERNAL
    assert "Traceback" in capsys.readouterr().err


def _rebind(parser, func):
    for action in parser._subparsers._actions:  # the verify subcommand calls the broken function
        if getattr(action, "choices", None) and "verify" in action.choices:
            action.choices["verify"].set_defaults(func=func)
    return parser


@pytest.mark.parametrize("where", ["missing", "directory"])
def test_bad_output_paths_exit_2_before_any_work(case, teacher, tmp_path, capsys, where):
    d, _ = case
    if where == "missing":
        out = tmp_path / "no" / "such" / "r.json"
    else:
        out = tmp_path
    assert main(_verify(d, teacher, "--html", str(out))) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "--html" in err and "scoring" not in err  # refused before reading or scoring anything


def test_report_writes_never_follow_a_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "report.md"
    target.symlink_to(victim)
    for pid in range(os.getpid() - 2, os.getpid() + 3):  # the old predictable temp names
        (tmp_path / f".report.md.{pid}.tmp").symlink_to(victim)
    write_text("the report\n", target)
    assert victim.read_text() == "keep me"
    assert not target.is_symlink() and target.read_text() == "the report\n"
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_markdown_cannot_be_injected_by_a_response_id(case, teacher, tmp_path):
    d, _ = case
    assert main(_verify(d, teacher, "--markdown", str(tmp_path / "r.md"), "--json", str(tmp_path / "r.json"),
                        "--quiet")) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    evil = [r for r in doc["responses"] if r["id"].startswith("evil")]
    assert evil  # the id is in the report; make it the most fingerprinted response, shown in the table
    evil[0]["log10_pvalue"] = -99.0
    doc["results"][0]["verdict"] = "detected"  # the table of strongest responses is shown only then
    md = render_markdown(doc) + (tmp_path / "r.md").read_text()
    assert not any(line.startswith("# DETECTED") for line in md.splitlines())  # ...as inert text
    assert "<b>" not in md and "](http" not in md
    assert "evil \\# DETECTED \\| \\<b\\>x\\</b\\> \\[link\\]\\(http://a\\)" in md


def test_reports_hold_the_most_fingerprinted_responses_and_the_full_list_on_request(teacher, tmp_path):
    key = FingerprintKey(bytes(range(2, 34)), "greenlist", {"delta": 3.0}, teacher.vocab_size)
    key.save(tmp_path / "key.json")
    rng = np.random.default_rng(0)
    words = np.array(" ".join(teacher.paragraphs[600:700]).split())
    n = MAX_RESPONSES + 700
    (tmp_path / "many.jsonl").write_text("".join(
        json.dumps({"id": f"t{i}", "prompt": "", "response": " ".join(rng.choice(words, 12))}) + "\n"
        for i in range(n)))
    assert main(["verify", str(tmp_path / "many.jsonl"), "--key", str(tmp_path / "key.json"), "--tokenizer",
                 teacher.tokenizer.source, "--decoys", "0", "--quiet", "--json", str(tmp_path / "r.json"),
                 "--responses-out", str(tmp_path / "all.jsonl")]) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert len(doc["responses"]) == MAX_RESPONSES and doc["responses_total"] == n
    rows = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert len(rows) == n and {r["key_id"] for r in rows} == {key.key_id}
    kept = {r["id"] for r in doc["responses"]}
    worst_kept = max(r["log10_pvalue"] for r in rows if r["id"] in kept)
    assert all(r["log10_pvalue"] >= worst_kept for r in rows if r["id"] not in kept and r["n_scored"])
    ids = [r["id"] for r in doc["responses"]]
    assert ids == sorted(ids, key=lambda x: int(x[1:]))  # corpus order


def test_a_tokenizer_that_does_not_fit_makes_the_verdict_inconclusive(case, teacher, tmp_path):
    """One token per response (a tokenizer that is not the model's) cannot show a fingerprint:
    the verdict says so instead of a 'not detected' a reader would take as a clearance."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    d, _ = case
    tok = Tokenizer(WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))  # no pre-tokenizer: a text is one word
    tok.save(str(tmp_path / "whole.json"))
    key = FingerprintKey(bytes(range(5, 37)), "greenlist", {"context_width": 0}, 2)
    key.save(tmp_path / "k.json")
    assert main(["verify", str(d / "in.jsonl"), "--key", str(tmp_path / "k.json"), "--tokenizer",
                 str(tmp_path / "whole.json"), "--decoys", "0", "--quiet", "--json", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert r["verdict"] == "inconclusive" and "tokenizer does not fit" in r["reason"]


def test_inputs_that_used_to_crash_exit_2_naming_the_problem(case, teacher, tmp_path, capsys):
    """The audit's crashing inputs: each now exits 2 with a message naming the file or option."""
    d, _ = case
    (tmp_path / "nested.jsonl").write_text('{"id": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    (tmp_path / "long.jsonl").write_text(json.dumps({"id": "x", "prompt": "", "response": "word " * 500_000}) + "\n")
    (tmp_path / "nobase.tiktoken").write_text("YQ== 0\nYWI= 1\n")  # "a", "ab": no single-byte base tokens
    (tmp_path / "torn.jsonl").write_text('{"type":"header","prev_sha256":"00')  # only a torn header
    base = ["verify", "--key", str(d / "key.json"), "--quiet"]
    tok = ["--tokenizer", teacher.tokenizer.source]
    cases = [
        ([str(tmp_path / "nested.jsonl"), *tok], "nested too deeply"),
        ([str(tmp_path / "long.jsonl"), *tok], "exceeds the limit"),
        ([str(d / "in.jsonl"), *tok, "--decoy-seed", "-5"], "decoy seed"),
        ([str(d / "in.jsonl"), *tok, "--decoys", str(10 ** 12)], "number of decoys"),
        ([str(d / "in.jsonl"), "--tokenizer", str(tmp_path / "nobase.tiktoken")], "base tokens are missing"),
        ([str(tmp_path / "torn.jsonl"), *tok], "torn tail"),
    ]
    for argv, expected in cases:
        assert main([*base[:1], *argv, *base[1:]]) == EXIT_BAD_INPUT, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (argv, err)


def test_evidence_summary_exit_codes_hold_with_json(tmp_path, capsys):
    """0 for an intact file, 1 for a broken one, in aligned-lines and --json output alike."""
    from fingerprint.collect.evidence import open_for_append

    ev = tmp_path / "ev.jsonl"
    writer, _ = open_for_append(ev, {"created_at": "2026-01-01T00:00:00+00:00",
                                     "settings": {"url": "http://x/v1/chat/completions", "model": "m",
                                                  "sampling": {"max_tokens": 8, "temperature": None}}})
    for i in range(3):
        writer.append({"type": "exchange", "prompt_id": f"p{i}", "sample": 0, "status": 200, "attempts": 1,
                       "request": {}, "response": {"choices": [{"message": {"content": "hi"}}]}})
    writer.close()
    assert main(["evidence", "summary", str(ev)]) == 0
    out = capsys.readouterr().out
    assert "exchanges    3 records: 3 succeeded, 0 failed" in out and "sampling     max_tokens 8\n" in out
    lines = ev.read_bytes().splitlines(keepends=True)
    ev.write_bytes(b"".join(lines[:2] + lines[3:]))  # a record deleted: the chain breaks
    assert main(["evidence", "summary", str(ev), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert not doc["ok"] and not doc["chain"]["ok"] and doc["chain"]["first_bad_line"] == 3
