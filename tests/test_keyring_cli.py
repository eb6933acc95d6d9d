"""`fingerprint keygen --keyring` and `fingerprint verify --keyring`: files, reports, errors."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from fingerprint.cli import main
from fingerprint.keyring import Keyring


@pytest.fixture(scope="module")
def case(teacher, tmp_path_factory):
    """A 30-bucket keyring written by the command line, and suspect exchanges whose answers came
    from two of its cohorts, written as JSONL."""
    from fingerprint.sim.distill import fingerprinted_responses

    d = tmp_path_factory.mktemp("ringcli")
    assert main(["keygen", "--keyring", "--cohorts", "30", "--scheme", "greenlist", "--delta", "3",
                 "--vocab-size", str(teacher.vocab_size), "--out", str(d / "ring.json")]) == 0
    ring = Keyring.load(d / "ring.json")
    used = [ring.cohorts[4], ring.cohorts[17]]
    rows = []
    for j, c in enumerate(used):
        data = fingerprinted_responses(teacher, ring.cohort_key(c).scheme_object(), 3000,
                                       rng=np.random.default_rng(j))
        for i, (p, r) in enumerate(zip(data.prompts, data.responses)):
            rows.append({"id": f"{c}-{i}", "prompt": teacher.tokenizer.decode(p), "response": teacher.tokenizer.decode(r)})
    (d / "suspect.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    clean = [teacher.tokenizer.decode(teacher.tokens[teacher.offsets[i]:teacher.offsets[i + 1]]) for i in range(4000, 4100)]
    (d / "human.jsonl").write_text("".join(json.dumps({"id": i, "prompt": "", "response": t}) + "\n"
                                           for i, t in enumerate(clean)))
    (d / "tokenizer.json").write_bytes(open(teacher.tokenizer.source, "rb").read())
    return d, ring, used


def test_keygen_keyring_writes_one_secret_file(case, capsys, tmp_path):
    d, ring, _ = case
    assert stat.S_IMODE(os.stat(d / "ring.json").st_mode) == 0o600
    data = json.loads((d / "ring.json").read_text())
    assert data["format"] == "fingerprint-keyring" and len(data["cohorts"]) == 30 and data["assign"] == "hash"
    ids = tmp_path / "ids.txt"
    ids.write_text("# resellers\nacme\nglobex\n\ninitech\n")
    assert main(["keygen", "--keyring", "--cohorts-file", str(ids), "--scheme", "greenlist", "--vocab-size", "100",
                 "--out", str(tmp_path / "r2.json")]) == 0
    out = capsys.readouterr().out
    assert "3 (acme ... initech)" in out and "to themselves only" in out
    assert Keyring.load(tmp_path / "r2.json").cohorts == ("acme", "globex", "initech")
    assert json.loads((tmp_path / "r2.json").read_text())["master"] not in out


@pytest.mark.parametrize("argv, message", [
    (["--cohorts", "5"], "apply only with --keyring"),
    (["--keyring"], "exactly one of --cohorts N and --cohorts-file"),
    (["--keyring", "--cohorts", "5", "--cohorts-file", "x"], "exactly one of"),
    (["--keyring", "--cohorts", "0"], "number of cohorts must be an integer >= 1"),
])
def test_keygen_keyring_errors_exit_2(argv, message, tmp_path, capsys):
    assert main(["keygen", "--scheme", "greenlist", "--vocab-size", "100", "--out", str(tmp_path / "r.json"),
                 *argv]) == 2
    assert message in capsys.readouterr().err


def test_verify_keyring_names_the_cohorts_and_writes_every_report(case, capsys):
    d, ring, used = case
    out = d / "out"
    out.mkdir(exist_ok=True)
    code = main(["verify", str(d / "suspect.jsonl"), "--keyring", str(d / "ring.json"), "--tokenizer",
                 str(d / "tokenizer.json"), "--decoys", "40", "--json", str(out / "r.json"), "--markdown",
                 str(out / "r.md"), "--html", str(out / "r.html"), "--fail-on-detect", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 1, printed  # detected, with --fail-on-detect
    doc = json.loads((out / "r.json").read_text())
    assert doc["schema"] == "fingerprint-keyring-report" and doc["verdict"] == "detected"
    assert sorted(doc["flagged"]) == sorted(used)
    assert {c["cohort"] for c in doc["cohorts"][:2]} == set(used)
    assert len(doc["cohorts"]) == 30 and [c["rank"] for c in doc["cohorts"]] == list(range(1, 31))
    assert all(c["flagged"] == (c["cohort"] in used) for c in doc["cohorts"])
    assert doc["decoys"]["passed"] and doc["global"]["log10_pvalue"] < -6
    assert ring.ring_id in json.dumps(doc["ring"]) and "master" not in json.dumps(doc)
    md = (out / "r.md").read_text()
    html = (out / "r.html").read_text()
    for c in used:
        assert c.replace("-", "\\-") in md and c in html and c in printed
    assert "| rank | cohort |" in md and "<th>Holm p</th>" in html
    line = next(x for x in printed.splitlines() if x.startswith("cohorts identified (holm): "))
    assert sorted(line.split(": ", 1)[1].split(", ")) == sorted(used)


def test_verify_keyring_on_human_text_flags_nobody(case, capsys):
    d, _, _ = case
    assert main(["verify", str(d / "human.jsonl"), "--keyring", str(d / "ring.json"), "--tokenizer",
                 str(d / "tokenizer.json"), "--decoys", "40", "--correction", "bh", "--alpha", "0.01",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "cohorts identified (bh): none" in printed and "verdict: not detected" in printed


@pytest.mark.parametrize("extra, message", [
    (["--key", "k.json"], "give --key or --keyring, not both"),
    (["--mode", "logprobs"], "--keyring verifies sampled text"),
    (["--dask", "local"], "--dask applies to --key"),
])
def test_verify_keyring_refusals_exit_2(case, extra, message, capsys):
    d, _, _ = case
    assert main(["verify", str(d / "suspect.jsonl"), "--keyring", str(d / "ring.json"), "--tokenizer",
                 str(d / "tokenizer.json"), "--quiet", *extra]) == 2
    assert message in capsys.readouterr().err


def test_verify_needs_a_key_or_a_keyring(case, capsys):
    d, _, _ = case
    assert main(["verify", str(d / "suspect.jsonl"), "--tokenizer", str(d / "tokenizer.json")]) == 2
    assert "needs --key" in capsys.readouterr().err
    assert main(["verify", str(d / "suspect.jsonl"), "--key", str(d / "ring.json"), "--tokenizer",
                 str(d / "tokenizer.json")]) == 2
    assert "this is a keyring: use --keyring" in capsys.readouterr().err
