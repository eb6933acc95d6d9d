"""Chain of custody (issue 14): each test reproduces an attack on the evidence or the keys and
asserts it is now refused or reported.

Evidence is written with the package's own writer (no HTTP), and verification runs in-process
through ``fingerprint.cli.main``, so these tests stay fast."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from fingerprint.cli import main
from fingerprint.collect.custody import (EvidenceSigner, check_custody, check_inputs, generate_signing_key,
                                         load_public_key, sign_evidence)
from fingerprint.collect.evidence import (canonical_json, check_chain, lock_evidence, lock_path, manifest_path,
                                          open_for_append, record_hash)
from fingerprint.errors import EvidenceLockedError, InputError, InsecureFileWarning, KeyFileError
from fingerprint.keys import FingerprintKey

SETTINGS = {"url": "http://suspect.example/v1/chat/completions", "model": "suspect", "sampling": {}}


def exchange(i: int, text: str, prompt: str = "Tell me something.") -> dict:
    return {"type": "exchange", "prompt_id": f"p{i}", "sample": 0, "status": 200, "attempts": 1,
            "request": {"model": "suspect", "messages": [{"role": "user", "content": prompt}]},
            "response": {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}}


def write_evidence(path: Path, texts: list[str], *, signer: EvidenceSigner | None = None) -> Path:
    writer, _ = open_for_append(path, {"created_at": "2026-01-01T00:00:00+00:00", "settings": SETTINGS},
                                signer=signer)
    for i, t in enumerate(texts):
        writer.append(exchange(i, t))
    writer.close()
    return path


def rechain(records: list[dict]) -> bytes:
    """What a forger does: recompute every hash with the package's own record_hash."""
    prev = "0" * 64
    out = []
    for seq, rec in enumerate(records):
        rec = {**rec, "seq": seq, "prev_sha256": prev}
        rec.pop("sha256", None)
        rec["sha256"] = prev = record_hash(rec)
        out.append((canonical_json(rec) + "\n").encode("utf-8"))
    return b"".join(out)


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture()
def investigator(tmp_path):
    priv, pub, _ = generate_signing_key(tmp_path / "investigator.key")
    return priv, pub


def verify_args(suspect: Path, *extra: str, key: str = "absent.key.json", tokenizer: str = "absent.json") -> list[str]:
    return ["verify", str(suspect), "--key", key, "--tokenizer", tokenizer, *extra]


# ---- 1. verify checks the chain first; a torn tail is not scored -----------------------------
def test_forged_record_without_newline_is_a_torn_tail_refused_everywhere(tmp_path, capsys):
    ev = write_evidence(tmp_path / "ev.jsonl", [f"answer {i}" for i in range(5)])
    last = json.loads(lines_of(ev)[-1])
    forged = {**exchange(99, "a fingerprinted answer slipped in"), "seq": 6, "prev_sha256": last["sha256"]}
    forged["sha256"] = record_hash(forged)
    with open(ev, "ab") as fh:  # a well-formed, well-chained record, but no trailing newline
        fh.write(canonical_json(forged).encode("utf-8"))

    check = check_chain(ev)
    assert not check.ok and check.torn_tail and check.first_bad_line == 7 and check.records == 6

    assert main(["evidence", "verify", str(ev)]) == 1
    out = capsys.readouterr().out
    assert "line 7: BROKEN: torn tail" in out and "must not be scored" in out
    assert main(["evidence", "summary", str(ev)]) == 1
    capsys.readouterr()

    # verify refuses before reading keys or tokenizer (they do not even exist here)
    assert main(verify_args(ev)) == 2
    err = capsys.readouterr().err
    assert f"{ev} line 7: BROKEN: torn tail" in err and "--accept-broken-chain" in err

    # resuming the collection cuts the torn line off (under the lock)
    writer, existing = open_for_append(ev, {"settings": SETTINGS})
    writer.close()
    assert len(existing) == 5 and check_chain(ev).ok and len(lines_of(ev)) == 6


def test_gap_and_edit_are_refused_by_verify_with_file_and_line(tmp_path, capsys):
    ev = write_evidence(tmp_path / "ev.jsonl", [f"answer {i}" for i in range(6)])
    lines = lines_of(ev)
    gap = tmp_path / "gap.jsonl"
    gap.write_bytes(b"".join(lines[:3] + lines[4:]))  # record on line 4 deleted
    assert main(verify_args(gap)) == 2
    err = capsys.readouterr().err
    assert f"{gap} line 4: BROKEN" in err and "deleted" in err

    # a file that hides its chain behind a first line that is not a header is still evidence
    hidden = tmp_path / "hidden.jsonl"
    hidden.write_bytes(b'{"id": "x", "prompt": "p", "response": "r"}\n' + b"".join(lines))
    assert main(verify_args(hidden)) == 2
    assert f"{hidden} line 1: BROKEN" in capsys.readouterr().err

    # plain exchanges that merely mention the field name are not evidence
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": "a", "prompt": "p", "response": 'the "prev_sha256" field', "x": "prev_sha256"})
                     + "\n")
    report = check_inputs([str(plain), str(ev)])
    assert report.ok and [u["path"] for u in report.unchained] == [str(plain)] and report.evidence[0].ok

    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert main(["evidence", "verify", str(empty)]) == 1
    assert "empty file" in capsys.readouterr().out


def test_served_logs_need_an_intact_chain_but_not_the_investigators_signature(tmp_path, investigator):
    """The owner's served outputs beside signed suspect evidence: plain logs are listed, not
    refused; a served evidence file with a broken chain is still refused."""
    priv, pub = investigator
    ev = write_evidence(tmp_path / "ev.jsonl", ["a", "b", "c"], signer=EvidenceSigner.from_file(priv))
    public = load_public_key(pub)
    served = tmp_path / "served.jsonl"
    served.write_text(json.dumps({"id": "s", "prompt": "p", "response": "r"}) + "\n")
    report = check_inputs([str(ev)], public_keys=[public], owner_paths=[str(served)])
    assert report.ok and report.to_dict()["owner_records"][0]["path"] == str(served)
    with pytest.raises(InputError, match="not evidence signed"):  # the same file given as suspect evidence
        check_inputs([str(ev), str(served)], public_keys=[public])
    lines = lines_of(write_evidence(tmp_path / "served-ev.jsonl", ["x", "y", "z"]))
    cut = tmp_path / "served-cut.jsonl"
    cut.write_bytes(b"".join(lines[:2] + lines[3:]))
    with pytest.raises(InputError, match="BROKEN"):
        check_inputs([str(ev)], public_keys=[public], owner_paths=[str(cut)])


# ---- 2. signed checkpoints, manifest, evidence verify --public-key ---------------------------
def test_keygen_sign_and_verify_checkpoints(tmp_path, capsys):
    assert main(["evidence", "keygen", "--out", str(tmp_path / "inv.key")]) == 0
    out = capsys.readouterr().out
    priv, pub = tmp_path / "inv.key", tmp_path / "inv.pub"
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600 and b"PRIVATE KEY" in priv.read_bytes()
    assert b"PUBLIC KEY" in pub.read_bytes() and "public key sha256" in out
    assert main(["evidence", "keygen", "--out", str(priv)]) == 2  # never overwritten without --force
    assert "already exists" in capsys.readouterr().err

    ev = write_evidence(tmp_path / "ev.jsonl", [f"answer {i}" for i in range(10)],
                        signer=EvidenceSigner.from_file(priv, every=4))
    manifest = json.loads(manifest_path(ev).read_text())
    assert [(c["records"], c["final"]) for c in manifest["checkpoints"]] == [(4, False), (8, False), (11, True)]
    assert manifest["head_sha256"] == check_chain(ev).last_sha256 and manifest["records"] == 11
    assert not lock_path(ev).exists()  # released at close

    assert main(["evidence", "summary", str(ev)]) == 0
    assert "3 checkpoints" in capsys.readouterr().out
    assert main(["evidence", "verify", str(ev), "--public-key", str(pub)]) == 0
    out = capsys.readouterr().out
    assert "chain intact, 11 records" in out and "3 checkpoints" in out and "investigator's public key given" in out

    other = generate_signing_key(tmp_path / "other.key")[1]
    assert main(["evidence", "verify", str(ev), "--public-key", str(other)]) == 1
    assert "not by the investigator's key" in capsys.readouterr().out

    # a resumed collection continues the same manifest; a resume without the key is refused
    with pytest.raises(InputError, match="signed.*--signing-key"):
        open_for_append(ev, {"settings": SETTINGS})
    writer, existing = open_for_append(ev, {"settings": SETTINGS}, signer=EvidenceSigner.from_file(priv, every=4))
    writer.append(exchange(10, "answer 10"))
    writer.close()
    c = check_custody(ev, public_keys=[load_public_key(pub)], require_signature=True)
    assert c.ok and c.manifest is not None and c.manifest.signed_records == 12 and c.manifest.final
    # ... and a resume with another investigator's key is refused
    with pytest.raises(InputError, match="not with this signing key"):
        open_for_append(ev, {"settings": SETTINGS}, signer=EvidenceSigner.from_file(tmp_path / "other.key"))


def test_truncation_at_a_line_boundary_is_detected_with_the_manifest(tmp_path, investigator, capsys):
    priv, pub = investigator
    ev = write_evidence(tmp_path / "ev.jsonl", [f"answer {i}" for i in range(10)],
                        signer=EvidenceSigner.from_file(priv, every=4))
    lines = lines_of(ev)
    ev.write_bytes(b"".join(lines[:-3]))  # the last three records cut cleanly
    assert check_chain(ev).ok  # the chain alone cannot see it
    assert main(["evidence", "verify", str(ev), "--public-key", str(pub)]) == 1
    assert "truncated" in capsys.readouterr().out
    assert main(verify_args(ev)) == 2
    assert "truncated" in capsys.readouterr().err

    # cut back exactly to a checkpoint and drop the later signatures from the manifest
    ev.write_bytes(b"".join(lines[:8]))
    m = json.loads(manifest_path(ev).read_text())
    m["checkpoints"] = m["checkpoints"][:2]
    m.update(records=8, head_sha256=m["checkpoints"][-1]["head_sha256"], final=False)
    manifest_path(ev).write_text(json.dumps(m))
    assert main(["evidence", "verify", str(ev), "--public-key", str(pub)]) == 1
    assert "not final" in capsys.readouterr().out


def test_unsigned_tail_after_a_crash_then_signed_by_resume_or_sign(tmp_path, investigator, capsys):
    priv, pub = investigator
    writer, _ = open_for_append(tmp_path / "ev.jsonl", {"settings": SETTINGS},
                                signer=EvidenceSigner.from_file(priv, every=3))
    for i in range(7):
        writer.append(exchange(i, f"answer {i}"))
    os.close(writer._fd)  # a kill: no final signature, and the lock goes with the process
    writer._fd = -1
    assert writer.lock is not None
    writer.lock.release()
    ev = tmp_path / "ev.jsonl"
    assert main(["evidence", "verify", str(ev), "--public-key", str(pub)]) == 1
    assert "lines 7-8 are not signed" in capsys.readouterr().out
    assert main(["evidence", "sign", str(ev), "--signing-key", str(priv)]) == 0
    capsys.readouterr()
    assert main(["evidence", "verify", str(ev), "--public-key", str(pub)]) == 0

    plain = write_evidence(tmp_path / "plain.jsonl", ["a", "b"])
    assert main(["evidence", "verify", str(plain), "--public-key", str(pub)]) == 1
    assert "no manifest" in capsys.readouterr().out


# ---- the forged control (the audit's attack, end to end) -------------------------------------
def test_forged_control_is_refused_without_the_private_key(teacher, tmp_path, investigator, capsys):
    from fingerprint.sim.distill import fingerprinted_responses

    priv, pub = investigator
    key = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size, delta=4.0)
    key_path = key.save(tmp_path / "owner.key.json")
    tok = teacher.tokenizer.source
    clean = [p[:400] for p in teacher.paragraphs[3000:] if len(p) > 200][:40]
    control = write_evidence(tmp_path / "control.jsonl", clean, signer=EvidenceSigner.from_file(priv, every=10))

    # the innocent control verifies, signed by the investigator, and the report cites its manifest
    report = tmp_path / "control.json"
    assert main(verify_args(control, "--public-key", str(pub), "--decoys", "5", "--json", str(report), "-q",
                            key=str(key_path), tokenizer=tok)) == 0
    doc = json.loads(report.read_text())
    assert doc["verdict"] == "not detected" and doc["custody"]["ok"]
    ev = doc["custody"]["evidence"][0]
    assert ev["chain"] == "intact" and ev["head_sha256"] == check_chain(control).last_sha256
    assert ev["manifest"]["trusted"] and ev["manifest"]["signed_head_sha256"] == ev["head_sha256"]
    assert ev["manifest"]["sha256"] and ev["manifest"]["path"] == str(manifest_path(control))
    capsys.readouterr()

    # the forger rewrites every answer with fingerprinted text and re-hashes the chain
    data = fingerprinted_responses(teacher, key.scheme_object(), 40 * 60, rng=np.random.default_rng(1),
                                   response_tokens=60)
    texts = teacher.tokenizer.decode_batch([r.tolist() for r in data.responses])
    records = [json.loads(x) for x in lines_of(control)]
    for rec, text in zip(records[1:], texts):
        rec["response"]["choices"][0]["message"]["content"] = text
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(rechain(records))
    shutil.copy(manifest_path(control), manifest_path(forged))
    assert check_chain(forged).ok  # the chain alone is fooled

    assert main(["evidence", "verify", str(forged), "--public-key", str(pub)]) == 1
    assert "history was rewritten" in capsys.readouterr().out
    assert main(verify_args(forged, key=str(key_path), tokenizer=tok)) == 2  # a manifest exists: checked
    err = capsys.readouterr().err
    assert f"{forged} line 1: BROKEN: lines 1-10 differ" in err and "rewritten" in err

    # a manifest of the forger's own key passes only its own consistency check
    manifest_path(forged).unlink()
    sign_evidence(forged, EvidenceSigner.from_file(generate_signing_key(tmp_path / "forger.key")[0]))
    assert main(["evidence", "verify", str(forged)]) == 0
    assert "NOT checked" in capsys.readouterr().out
    assert main(verify_args(forged, "--public-key", str(pub), key=str(key_path), tokenizer=tok)) == 2
    assert "not by the investigator's key" in capsys.readouterr().err

    # scored anyway on request: detected, and the report says first that the chain is broken
    md, js, html = tmp_path / "forged.md", tmp_path / "forged.json", tmp_path / "forged.html"
    assert main(verify_args(forged, "--public-key", str(pub), "--accept-broken-chain", "--decoys", "5", "--json",
                            str(js), "--markdown", str(md), "--html", str(html), "-q", key=str(key_path),
                            tokenizer=tok)) == 0
    doc = json.loads(js.read_text())
    assert doc["verdict"] == "detected"
    assert not doc["custody"]["ok"] and doc["custody"]["accepted_broken_chain"]
    assert doc["notes"][0].startswith("EVIDENCE CHAIN BROKEN")
    text = md.read_text()
    assert text.index("EVIDENCE CHAIN BROKEN") < text.index("## What was read") and "## Chain of custody" in text
    page = html.read_text()
    assert page.index("EVIDENCE CHAIN BROKEN") < page.index("<h2>What was read") and "Chain of custody" in page
    assert "EVIDENCE CHAIN BROKEN" in capsys.readouterr().out


# ---- 3. one collector per evidence file -------------------------------------------------------
def test_a_second_collector_on_the_same_file_exits_2_naming_the_holder(tmp_path, capsys):
    ev = tmp_path / "ev.jsonl"
    writer, _ = open_for_append(ev, {"settings": SETTINGS})
    with pytest.raises(EvidenceLockedError, match=f"pid {os.getpid()} on host"):
        open_for_append(ev, {"settings": SETTINGS})
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "p0", "prompt": "hello"}\n')
    code = main(["collect", str(prompts), "--base-url", "http://127.0.0.1:9/v1", "--model", "suspect", "--out",
                 str(ev), "--quiet"])
    assert code == 2
    assert f"locked by another collector (pid {os.getpid()}" in capsys.readouterr().err
    writer.close()
    assert not lock_path(ev).exists()
    open_for_append(ev, {"settings": SETTINGS})[0].close()


def test_a_killed_collector_leaves_no_stale_lock(tmp_path):
    ev = tmp_path / "ev.jsonl"
    code = ("import sys, time; from fingerprint.collect.evidence import lock_evidence; "
            f"lock_evidence({str(ev)!r}); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(EvidenceLockedError, match=f"pid {proc.pid} on host"):
            lock_evidence(ev)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with lock_evidence(ev) as held:
        assert held.holder["pid"] == os.getpid()


# ---- 4. keys: integrity, permissions, symlinks -------------------------------------------------
MAC = "field 'mac' does not match the fields it covers"


@pytest.mark.parametrize("field,sub,value,match", [
    ("params", "gamma", 0.5, MAC), ("params", "context_width", 3, MAC), ("params", "delta", 9.0, MAC),
    ("vocab_size", None, 16384, MAC), ("mac", None, "0" * 64, MAC),
    ("scheme", None, "gumbel", "field 'params'"), ("key_id", None, "0" * 32, "'key_id' does not match"),
    ("version", None, 1, r"unknown field\(s\) \['mac'\] for a version-1"),
])
def test_editing_any_field_of_a_key_file_is_detected(tmp_path, field, sub, value, match):
    path = FingerprintKey.generate("greenlist", vocab_size=8192).save(tmp_path / "k.json")
    data = json.loads(path.read_text())
    if sub:
        data[field][sub] = value
    else:
        data[field] = value
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=match) as exc:
        FingerprintKey.load(path)
    assert str(exc.value).startswith(f"{path}: ")


def test_a_key_file_without_mac_loads_with_a_warning(tmp_path):
    key = FingerprintKey.generate("greenlist", vocab_size=8192)
    path = key.save(tmp_path / "k.json")
    data = json.loads(path.read_text())
    del data["mac"]
    data["version"] = 1
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    with pytest.warns(InsecureFileWarning, match="without a MAC"):
        assert FingerprintKey.load(path) == key
    assert "mac" in json.loads(key.save(tmp_path / "new.json").read_text())  # re-saving adds one


def test_key_file_permissions(tmp_path, investigator, capsys):
    path = FingerprintKey.generate("greenlist", vocab_size=8192).save(tmp_path / "k.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FingerprintKey.load(path)  # 0600: silent
    path.chmod(0o644)
    with pytest.warns(InsecureFileWarning, match="readable by its group and everyone"):
        FingerprintKey.load(path)
    for mode in (0o620, 0o606):
        path.chmod(mode)
        with pytest.raises(KeyFileError, match="writable by.*--allow-insecure-key"):
            FingerprintKey.load(path)
    with pytest.warns(InsecureFileWarning, match="used anyway"):
        FingerprintKey.load(path, allow_insecure=True)

    suspect = tmp_path / "s.jsonl"
    suspect.write_text('{"id": "a", "prompt": "p", "response": "r"}\n')
    assert main(verify_args(suspect, key=str(path))) == 2
    assert "--allow-insecure-key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    assert "--allow-insecure-key" in capsys.readouterr().out

    priv, _ = investigator
    priv.chmod(0o666)
    with pytest.raises(KeyFileError, match="signing key is writable"):
        EvidenceSigner.from_file(priv)


def test_keygen_force_never_follows_a_symlink(tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = tmp_path / "k.json"
    link.symlink_to(victim)
    base = ["keygen", "--scheme", "greenlist", "--vocab-size", "100", "--out", str(link)]
    for extra in ([], ["--force"]):
        assert main(base + extra) == 2
        assert "symbolic link" in capsys.readouterr().err
    dangling = tmp_path / "d.json"
    dangling.symlink_to(tmp_path / "created-through-link.json")
    assert main(["keygen", "--scheme", "greenlist", "--vocab-size", "100", "--out", str(dangling), "--force"]) == 2
    assert main(["evidence", "keygen", "--out", str(link), "--force"]) == 2
    capsys.readouterr()
    assert victim.read_text() == "precious\n" and link.is_symlink()
    assert not (tmp_path / "created-through-link.json").exists()

    real = tmp_path / "real.json"
    real.write_text("old")
    real.chmod(0o644)
    assert main(["keygen", "--scheme", "greenlist", "--vocab-size", "100", "--out", str(real), "--force"]) == 0
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o600 and FingerprintKey.load(real).vocab_size == 100
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp file left


def test_a_torn_tail_is_never_read_as_an_exchange(tmp_path):
    """With --accept-broken-chain the report goes on, but the unterminated (torn or forged) last
    record is a skipped record, not a scored exchange."""
    from fingerprint.corpus import read_exchanges

    ev = write_evidence(tmp_path / "ev.jsonl", ["first answer here", "second answer here"])
    forged = {**exchange(9, "forged fingerprinted text"), "seq": 3, "prev_sha256": "0" * 64}
    with open(ev, "ab") as fh:
        fh.write(canonical_json(forged).encode("utf-8"))  # no newline
    es = read_exchanges([ev], skip_invalid=True)
    assert [e.response for e in es.exchanges] == ["first answer here", "second answer here"]
    assert len(es.skipped) == 1 and "torn tail" in es.skipped[0].reason


def test_windows_without_probability_mass_are_dropped_not_nan(teacher):
    """A suspect's -Infinity (or NaN) logprobs at every candidate of a window: the window is
    dropped and counted; the weights stay finite."""
    from fingerprint.corpus import Exchange, ExchangeSet
    from fingerprint.tokenize import token_bytes_table
    from fingerprint.verify.access import VocabMapper, logprob_evidence

    tb = token_bytes_table(teacher.tokenizer)
    ids = teacher.tokenizer.encode_batch([teacher.paragraphs[300]])[0][:40]
    lp = tuple((tb[int(t)], ((tb[int(t)], -math.inf if j % 3 == 0 else (math.nan if j % 3 == 1 else -0.5)),
                             (tb[int(ids[0])], -math.inf if j % 3 != 2 else -1.5)))
               for j, t in enumerate(ids))
    ev = logprob_evidence(ExchangeSet(exchanges=[Exchange("a", "", "x", "sim", lp)]), teacher.tokenizer,
                          VocabMapper(teacher.tokenizer), 2, teacher.vocab_size)
    assert ev.weights is not None and np.isfinite(ev.weights).all() and len(ev) > 0
    assert ev.counts.dropped["zero_mass_window_items"] > 0 and ev.counts.dropped["nonfinite_logprobs"] > 0
