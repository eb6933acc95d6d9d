import json
import os
import stat
import subprocess
import sys

import pytest

from fingerprint.cli import main


def test_keygen_writes_key(tmp_path, capsys):
    out = tmp_path / "key.json"
    assert main(["keygen", "--scheme", "greenlist", "--vocab-size", "8192", "--gamma", "0.5",
                 "-H", "1", "--out", str(out)]) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    data = json.loads(out.read_text())
    assert data["params"] == {"context_width": 1, "gamma": 0.5, "delta": 3.0}
    printed = capsys.readouterr().out
    assert data["key_id"] in printed and data["secret"] not in printed


def test_keygen_bad_input_exits_2(tmp_path, capsys):
    out = tmp_path / "key.json"
    assert main(["keygen", "--scheme", "greenlist", "--vocab-size", "100", "--gamma", "1.5",
                 "--out", str(out)]) == 2
    assert "gamma must be a number in (0, 1), got 1.5" in capsys.readouterr().err
    assert main(["keygen", "--scheme", "gumbel", "--vocab-size", "100", "--layers", "3",
                 "--out", str(out)]) == 2
    assert "--layers does not apply to scheme 'gumbel'" in capsys.readouterr().err
    assert main(["keygen", "--scheme", "tournament", "--vocab-size", "1", "--out", str(out)]) == 2
    assert main(["keygen", "--scheme", "tournament", "--vocab-size", "10", "--out", str(out)]) == 0
    assert main(["keygen", "--scheme", "tournament", "--vocab-size", "10", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_roundtrip_command_runs(teacher):
    res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "roundtrip", "--n-prompts", "4",
                          "--max-tokens", "40"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rows = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[1] in ("fingerprinted", "plain"):
            rows[(parts[0], parts[1])] = (int(parts[2]), float(parts[3]))
    assert {s for s, _ in rows} == {"greenlist", "gumbel", "tournament"}
    for scheme in ("greenlist", "gumbel", "tournament"):
        scored, p_marked = rows[(scheme, "fingerprinted")]
        # fresh keys and samples each run (OS CSPRNG in the subprocess): 1e-10 leaves a wide margin
        # (greenlist at about 150 tuples gives 1e-14 to 1e-25), the bound the README's round trip states
        assert scored > 40 and p_marked < 1e-10, (scheme, rows)
        assert rows[(scheme, "plain")][1] > 1e-5, (scheme, rows)


def test_counts_are_pluralized():
    from fingerprint.cli import _n

    assert _n(1, "response") == "1 response" and _n(0, "response") == "0 responses"
    assert _n(2_500, "token") == "2,500 tokens" and _n(1, "retry", "retries") == "1 retry"
    assert _n(3, "retry", "retries") == "3 retries"


@pytest.fixture(scope="module")
def fingerprinted_evidence(teacher, tmp_path_factory):
    """Evidence with top-5 logprobs collected from the local server fingerprinting its answers."""
    import numpy as np

    from fingerprint.keys import FingerprintKey
    from fingerprint.sim.distill import corpus_prompts
    from fingerprint.sim.server import ServedModel, serve

    d = tmp_path_factory.mktemp("cli")
    key = FingerprintKey(bytes(range(3, 35)), "greenlist", {"delta": 3.0}, teacher.vocab_size)
    key.save(d / "key.json")
    queries, _ = corpus_prompts(teacher, 24, length=10, rng=np.random.default_rng(5))
    (d / "prompts.jsonl").write_text("".join(json.dumps({"id": i, "prompt": teacher.tokenizer.decode(q)}) + "\n"
                                            for i, q in enumerate(queries)))
    with serve(ServedModel(teacher.model, teacher.tokenizer, scheme=key.scheme_object())) as srv:
        assert main(["collect", str(d / "prompts.jsonl"), "--base-url", srv.url, "--model", "m", "--out",
                     str(d / "ev.jsonl"), "--endpoint", "completions", "--max-tokens", "40", "--logprobs", "5",
                     "--seed", "0", "--quiet"]) == 0
    return d


def test_evidence_summary_prints_aligned_lines_or_json(fingerprinted_evidence, capsys):
    d = fingerprinted_evidence
    capsys.readouterr()
    assert main(["evidence", "summary", str(d / "ev.jsonl")]) == 0
    out = capsys.readouterr().out
    column = {len(line) - len(line[12:].lstrip()) for line in out.splitlines()}
    assert len(column) == 1  # the values are aligned in one column
    width = column.pop()
    rows = {line[:width].strip(): line[width:] for line in out.splitlines()}
    assert "{" not in out and "}" not in out  # no Python dict
    assert rows["chain"].startswith("intact, 25 records") and rows["exchanges"].startswith("24 records: 24 succ")
    assert "max_tokens 40" in rows["sampling"] and "seed 0" in rows["sampling"] and rows["logprobs"] == "top 5"
    assert rows["statuses"] == "200: 24" and rows["manifest"] == "none (unsigned)"
    assert main(["evidence", "summary", str(d / "ev.jsonl"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["records"] == 24 and doc["statuses"] == {"200": 24} and doc["chain"]["records"] == 25


def test_logprobs_verdict_on_the_fingerprinting_server_explains_itself(fingerprinted_evidence, teacher, capsys):
    """The local server's logprobs are taken before its fingerprint: logprobs mode cannot see it
    (and says why), while the same evidence's sampled text shows it."""
    d = fingerprinted_evidence
    base = ["verify", str(d / "ev.jsonl"), "--key", str(d / "key.json"), "--tokenizer", teacher.tokenizer.source,
            "--decoys", "0", "--quiet"]
    capsys.readouterr()
    assert main([*base, "--mode", "logprobs", "--json", str(d / "lp.json")]) == 0
    out = capsys.readouterr().out
    lp = json.loads((d / "lp.json").read_text())
    assert lp["verdict"] != "detected"
    note = [n for n in lp["notes"] if "before any watermark is applied" in n]
    assert note and f"note: {note[0]}" in out and "--mode text" in note[0]
    assert main([*base, "--mode", "text", "--json", str(d / "text.json")]) == 0
    text = json.loads((d / "text.json").read_text())
    assert text["verdict"] == "detected"
    assert not any("before any watermark is applied" in n for n in text["notes"])
    assert "24 responses" in capsys.readouterr().out


def test_a_served_file_given_as_suspect_is_refused(fingerprinted_evidence, teacher, capsys):
    """`--served a b suspect` reads b as a suspect input; when a path is both, the error says how
    --served takes its paths."""
    d = fingerprinted_evidence
    ev = str(d / "ev.jsonl")
    assert main(["verify", ev, "--served", ev, "--key", str(d / "key.json"), "--tokenizer",
                 teacher.tokenizer.source, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "both as a suspect input and with --served" in err and "--served a.jsonl --served b.jsonl" in err


def test_serve_says_what_it_does_while_it_starts(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "fingerprint.cli", "serve", "--instant", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # the first stdout line names the URL (benchmarks read it)
        assert line.startswith("serving local-ngram on http://127.0.0.1:"), line
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "building the demo teacher" in err and "model ready" in err


def test_serve_a_saved_model_file(teacher, tmp_path, capsys):
    from fingerprint.sim.ngram import NgramLM

    tokens, offsets = teacher.tokenizer.encode_batch(teacher.paragraphs[:200])
    NgramLM.fit(tokens, offsets, vocab_size=teacher.vocab_size, order=3).save(tmp_path / "m.npz")
    NgramLM.fit(tokens % 50, offsets, vocab_size=50, order=2).save(tmp_path / "small.npz")
    tok = teacher.tokenizer.source
    assert main(["serve", "--model-file", str(tmp_path / "m.npz")]) == 2
    assert "--model-file and --tokenizer go together" in capsys.readouterr().err
    assert main(["serve", "--model-file", str(tmp_path / "small.npz"), "--tokenizer", tok]) == 2
    assert "not the model's tokenizer" in capsys.readouterr().err
    proc = subprocess.Popen([sys.executable, "-m", "fingerprint.cli", "serve", "--model-file", str(tmp_path / "m.npz"),
                             "--tokenizer", tok, "--model-name", "student", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving student on http://127.0.0.1:"), line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        import httpx

        body = {"model": "student", "prompt": "The", "max_tokens": 5}
        answer = httpx.post(f"{url}/completions", json=body, timeout=30).json()
        assert answer["choices"][0]["text"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "loading" in err and "model ready" in err
