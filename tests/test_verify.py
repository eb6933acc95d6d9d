"""`fingerprint verify` end to end on real text, real files and the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fingerprint.cli import main
from fingerprint.corpus import read_exchanges
from fingerprint.verify import VerifyOptions, verify_exchanges
from fingerprint.keys import FingerprintKey
from fingerprint.sim.generate import generate
from fingerprint.tokenize import load_tokenizer

SCHEMES = [("greenlist", {"delta": 2.0}), ("gumbel", {}), ("tournament", {})]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("verify")


@pytest.fixture(scope="module")
def tokenizer_path(teacher) -> str:
    return teacher.tokenizer.source


@pytest.fixture(scope="module")
def prompts(teacher):
    idx = range(0, teacher.offsets.size - 1, (teacher.offsets.size - 1) // 60)
    return [teacher.tokens[teacher.offsets[i]:teacher.offsets[i] + 12] for i in idx][:60]


def exchanges_file(teacher, path, prompts, responses, prefix="r"):
    dec = teacher.tokenizer.decode
    return write_jsonl(path, [{"id": f"{prefix}{i}", "prompt": dec(p), "response": dec(r)}
                              for i, (p, r) in enumerate(zip(prompts, responses))])


@pytest.fixture(scope="module")
def cases(teacher, workdir, prompts):
    """Per scheme: a key file, fingerprinted responses and plain responses from the same model."""
    rng = np.random.default_rng(42)
    out = {}
    for name, params in SCHEMES:
        key = FingerprintKey.generate(name, vocab_size=teacher.vocab_size, **params)
        key_path = key.save(workdir / f"{name}.key.json")
        marked = generate(teacher.model, prompts, 60, rng, scheme=key.scheme_object())
        plain = generate(teacher.model, prompts, 60, rng)
        out[name] = (key_path, exchanges_file(teacher, workdir / f"{name}-marked.jsonl", prompts, marked),
                     exchanges_file(teacher, workdir / f"{name}-plain.jsonl", prompts, plain))
    return out


def run_verify(*args):
    return subprocess.run([sys.executable, "-m", "fingerprint.cli", "verify", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def verify_api(paths, tokenizer_path, key_paths, **opts):
    tok = load_tokenizer(tokenizer_path)
    ex = read_exchanges(paths)
    return verify_exchanges(ex, tok, [FingerprintKey.load(k) for k in key_paths],
                            options=VerifyOptions(**opts))


@pytest.mark.parametrize("name", [s[0] for s in SCHEMES])
def test_fingerprinted_detected_plain_not(cases, tokenizer_path, name):
    key_path, marked, plain = cases[name]
    res = verify_api([marked], tokenizer_path, [key_path])
    r = res.results[0]
    assert r.counts.scored >= 2000 or name == "gumbel"
    # the evidence after ~2,000 scored tuples already beats 1e-10
    at_2000 = [p for p in r.trajectory if p.n_scored >= min(2000, r.counts.scored)][0]
    assert at_2000.log10_pvalue < -10
    assert r.verdict == "detected" and r.decoys.passed
    assert r.bayes.log10_bayes_factor > 10 and r.bayes.posterior > 0.999
    null = verify_api([plain], tokenizer_path, [key_path]).results[0]
    assert null.test.log10_pvalue > -3 and null.verdict == "not detected" and null.decoys.passed


def test_human_text_not_detected(teacher, workdir, tokenizer_path, cases):
    paras = [p for p in teacher.paragraphs if not p.startswith(("Genesis", "Exodus"))][6000:6400]
    path = write_jsonl(workdir / "human.jsonl", [{"id": i, "prompt": "", "response": p} for i, p in enumerate(paras)])
    for name in ("greenlist", "gumbel", "tournament"):
        r = verify_api([path], tokenizer_path, [cases[name][0]]).results[0]
        assert r.verdict == "not detected" and r.decoys.passed
        assert r.counts.scored > 5000


def test_one_response_repeated_1000_times_is_not_evidence(teacher, workdir, tokenizer_path, cases, prompts):
    key_path = cases["greenlist"][0]
    key = FingerprintKey.load(key_path)
    # a plain response that happens to be somewhat green: the most green of 200 candidates
    rng = np.random.default_rng(5)
    cands = generate(teacher.model, prompts[:1] * 200, 40, rng)
    scheme = key.scheme_object()
    greens = [scheme.tuple_scores(np.lib.stride_tricks.sliding_window_view(c, 2)[:-1], c[2:]).mean() for c in cands]
    best = cands[int(np.argmax(greens))]
    text = teacher.tokenizer.decode(best)
    path = write_jsonl(workdir / "repeated.jsonl",
                       [{"id": i, "prompt": "", "response": text} for i in range(1000)])
    res = verify_api([path], tokenizer_path, [key_path]).results[0]
    assert res.counts.dropped["duplicate_tuple"] >= 999 * 30
    assert res.test.log10_pvalue > -6 and res.verdict != "detected"


def test_copies_of_the_fingerprinted_prompt_are_not_evidence(teacher, workdir, tokenizer_path, cases, prompts):
    key_path, marked_file, _ = cases["greenlist"]
    marked = [json.loads(line)["response"] for line in marked_file.read_text().splitlines()]
    # the suspect's prompts are fingerprinted text; a clean suspect echoes them back verbatim
    rows = [{"id": i, "prompt": m, "response": m + " " + teacher.paragraphs[9000 + i]}
            for i, m in enumerate(marked)]
    path = write_jsonl(workdir / "echo.jsonl", rows)
    r = verify_api([path], tokenizer_path, [key_path]).results[0]
    assert r.counts.dropped["prompt_window"] > 2000
    assert r.verdict == "not detected" and r.test.log10_pvalue > -3


def test_cli_reports_and_schema(cases, workdir, tokenizer_path):
    key_path, marked, _ = cases["tournament"]
    out = workdir / "rep"
    res = run_verify(marked, "--key", key_path, "--tokenizer", tokenizer_path, "--decoys", "50",
                     "--json", f"{out}.json", "--markdown", f"{out}.md", "--html", f"{out}.html")
    assert res.returncode == 0, res.stderr
    assert "detected" in res.stdout
    doc = json.loads(Path(f"{out}.json").read_text())
    for field in ("key_id", "scheme", "n_texts", "n_tokens", "n_scored", "dropped", "statistic", "pvalue",
                  "log10_pvalue", "effect", "decoys", "log10_bayes_factor", "posterior", "verdict",
                  "trajectory", "version", "inputs"):
        assert field in doc, field
    assert set(doc["effect"]) >= {"value", "ci_low", "ci_high"}
    assert set(doc["decoys"]) >= {"k", "empirical_pvalue", "ks_pvalue"} and doc["decoys"]["k"] == 50
    assert doc["inputs"]["suspect"][0]["sha256"] == __import__("hashlib").sha256(marked.read_bytes()).hexdigest()
    assert doc["verdict"] == "detected" and doc["log10_pvalue"] < -10
    assert len(doc["responses"]) == doc["n_texts"] == 60
    secret = json.loads(Path(key_path).read_text())["secret"]
    for suffix in (".json", ".md", ".html"):
        assert secret not in Path(f"{out}{suffix}").read_text()
    # the plain-language sentence opens the Markdown report; the decoys read as a control
    md = Path(f"{out}.md").read_text()
    assert md.splitlines()[2] == doc["summary_sentence"]
    assert doc["summary_sentence"].startswith("If the suspect had never been trained on your outputs")
    assert "Control: 50 decoy keys (secrets that never fingerprinted anything)" in md
    assert "## Responses with the strongest signal" in md
    html_text = Path(f"{out}.html").read_text()
    assert "<script" not in html_text and f'<span class="pvalue">{doc["display"]["pvalue"]}</span>' in html_text
    assert "<svg" in Path(f"{out}.html").read_text() and "http" not in Path(f"{out}.html").read_text().split("<svg")[0].replace("http://www.w3.org", "")
    fail = run_verify(marked, "--key", key_path, "--tokenizer", tokenizer_path, "--decoys", "10", "--fail-on-detect")
    assert fail.returncode == 1


def test_several_keys_are_holm_corrected(cases, tokenizer_path):
    res = verify_api([cases["greenlist"][1]], tokenizer_path,
                     [cases["greenlist"][0], cases["gumbel"][0], cases["tournament"][0]], n_decoys=20)
    assert res.holm_applied
    r = res.results
    assert r[0].verdict == "detected"
    assert r[1].verdict == "not detected" and r[2].verdict == "not detected"
    for x in r:
        assert x.holm_log10_pvalue >= x.test.log10_pvalue
    assert res.verdict == "detected"


def test_window_filter_from_served_outputs(cases, tokenizer_path, workdir):
    key_path, marked, plain = cases["greenlist"]
    tok = load_tokenizer(tokenizer_path)
    key = FingerprintKey.load(key_path)
    served = read_exchanges([marked], require_prompt=False)
    res = verify_exchanges(read_exchanges([plain]), tok, [key], served=served,
                           options=VerifyOptions(n_decoys=20))
    assert res.window_filter_size > 1000
    r = res.results[0]
    assert r.counts.dropped["window_filter"] > 0 and r.verdict == "not detected"


def test_vocab_checks(cases, tokenizer_path, workdir, teacher):
    small = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size - 1).save(workdir / "small.key.json")
    res = run_verify(cases["greenlist"][1], "--key", small, "--tokenizer", tokenizer_path)
    assert res.returncode == 2
    assert f"vocab_size {teacher.vocab_size - 1}" in res.stderr and f"tokenizer's {teacher.vocab_size}" in res.stderr
    big = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size + 64).save(workdir / "big.key.json")
    res = run_verify(cases["greenlist"][1], "--key", big, "--tokenizer", tokenizer_path, "--decoys", "5")
    assert res.returncode == 0 and "padded logits" in res.stdout


BAD_LINES = [
    (b'{"id": "a", "prompt": "p", "response": "fine text here"}\n{"id": "b", "prompt": "p"\n', 'line 2: not valid JSON'),
    (b'{"id": "a", "prompt": "p", "response": "fine text here"}\n{"id": "b", "prompt": "p"}\n', 'line 2: field "response" missing'),
    (b'{"id": "a", "prompt": "p", "response": "fine \xff text"}\n', "line 1: not valid UTF-8"),
    (b'{"id": "a", "prompt": "p", "response": "   "}\n', 'line 1: field "response" is empty'),
    (b'{"id": "a", "prompt": [{"role": "user"}], "response": "x y z"}\n', 'line 1: field "prompt[0].content" missing'),
    (b'{"id": "a", "response": "x y z"}\n', 'line 1: field "prompt" missing'),
    (b'[1, 2]\n', "line 1: expected a JSON object"),
]


@pytest.mark.parametrize("content,message", BAD_LINES)
def test_bad_input_names_file_line_and_field(workdir, cases, tokenizer_path, content, message):
    path = workdir / "bad.jsonl"
    path.write_bytes(content)
    res = run_verify(path, "--key", cases["greenlist"][0], "--tokenizer", tokenizer_path, "--decoys", "5")
    assert res.returncode == 2
    assert f"{path} {message}" in res.stderr, res.stderr


def test_skip_invalid_counts_what_it_skipped(workdir, cases, tokenizer_path):
    key_path, marked, _ = cases["greenlist"]
    lines = marked.read_bytes().splitlines(keepends=True)
    path = workdir / "mixed.jsonl"
    path.write_bytes(b"".join(lines[:30]) + b'{"broken\n' + b'{"id": 1, "prompt": "", "response": ""}\n'
                     + b"".join(lines[30:]))
    res = run_verify(path, "--key", key_path, "--tokenizer", tokenizer_path, "--decoys", "5",
                     "--skip-invalid", "--json", workdir / "mixed.json")
    assert res.returncode == 0, res.stderr
    doc = json.loads((workdir / "mixed.json").read_text())
    assert doc["skipped"]["count"] == 2 and doc["n_texts"] == 60
    assert [r["line"] for r in doc["skipped"]["records"]] == [31, 32]


def test_bad_tokenizer_and_key_files(workdir, cases, tokenizer_path):
    broken = workdir / "tok.json"
    broken.write_text('{"not": "a tokenizer"}')
    res = run_verify(cases["greenlist"][1], "--key", cases["greenlist"][0], "--tokenizer", broken)
    assert res.returncode == 2 and f"{broken}: not a loadable tokenizer.json" in res.stderr
    key = json.loads(Path(cases["greenlist"][0]).read_text())
    key["params"]["gamma"] = 7
    bad_key = workdir / "bad.key.json"
    bad_key.write_text(json.dumps(key))
    res = run_verify(cases["greenlist"][1], "--key", bad_key, "--tokenizer", tokenizer_path)
    assert res.returncode == 2 and f"{bad_key}: field 'params'" in res.stderr and "gamma" in res.stderr


def test_plain_text_and_evidence_inputs(workdir, cases, tokenizer_path, teacher):
    key_path, marked, _ = cases["greenlist"]
    rows = [json.loads(line) for line in marked.read_text().splitlines()]
    txt = workdir / "suspect.txt"
    txt.write_text("\n\n".join(r["response"] for r in rows))
    evidence = []
    prev = "0" * 64
    for i, r in enumerate(rows):
        rec = {"format": "fingerprint-evidence", "seq": i, "prompt_id": r["id"], "sample": 0, "endpoint": "chat",
               "request": {"model": "m", "messages": [{"role": "user", "content": r["prompt"]}]},
               "status": 200 if i % 10 else 503,
               "response": {"choices": [{"index": 0, "message": {"role": "assistant", "content": r["response"]}}]}
               if i % 10 else None, "prev_sha256": prev}
        evidence.append(rec)
    ev = write_jsonl(workdir / "evidence.jsonl", evidence)
    ex = read_exchanges([txt, ev])
    assert ex.failed_requests == 6 and len(ex.exchanges) == 1 + 54
    assert [f.format for f in ex.files] == ["text", "evidence"]
    res = verify_api([txt, ev], tokenizer_path, [key_path], n_decoys=20).results[0]
    assert res.verdict == "detected"


def test_api_progress_and_errors(cases, tokenizer_path):
    msgs = []
    tok = load_tokenizer(tokenizer_path)
    key = FingerprintKey.load(cases["greenlist"][0])
    verify_exchanges(read_exchanges([cases["greenlist"][1]]), tok, [key], options=VerifyOptions(n_decoys=30),
                     progress=msgs.append)
    assert any("decoys" in m for m in msgs) and any("tokenizing" in m for m in msgs)
    from fingerprint.errors import ParameterError
    with pytest.raises(ParameterError, match="alpha"):
        verify_exchanges(read_exchanges([cases["greenlist"][1]]), tok, [key], options=VerifyOptions(alpha=2.0))


def test_main_exit_code_on_missing_file(tmp_path, cases, tokenizer_path, capsys):
    assert main(["verify", str(tmp_path / "nope.jsonl"), "--key", str(cases["greenlist"][0]),
                 "--tokenizer", tokenizer_path]) == 2
    assert "nope.jsonl: cannot read" in capsys.readouterr().err


def chromium_screenshot(html_path: Path, png_path: Path) -> None:
    import shutil

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "headless Chromium is required (installed by .ci/setup: apt-get install chromium)"
    profile = png_path.parent / "chromium-profile"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", "--window-size=1000,1200", f"--screenshot={png_path}",
                    html_path.resolve().as_uri()], capture_output=True, timeout=120, check=False)
    assert png_path.is_file(), "Chromium wrote no screenshot"


def count_near(img, rgb, tol=30) -> int:
    arr = np.asarray(img.convert("RGB"), dtype=np.int16)
    return int((np.abs(arr - np.array(rgb)).max(axis=2) <= tol).sum())


def test_html_report_renders_in_headless_chromium(cases, workdir, tokenizer_path):
    from PIL import Image

    key_path, marked, plain = cases["greenlist"]
    for label, suspect in (("marked", marked), ("plain", plain)):
        html_path = workdir / f"render-{label}.html"
        res = run_verify(suspect, "--key", key_path, "--tokenizer", tokenizer_path, "--decoys", "40",
                         "--html", html_path)
        assert res.returncode == 0, res.stderr
        png = workdir / f"render-{label}.png"
        chromium_screenshot(html_path, png)
        img = Image.open(png)
        assert img.size[0] >= 900
        assert count_near(img, (214, 39, 40)) > 300  # the trajectory line (and the verdict box border)
        if label == "plain":
            # the decoys' band (#9ecae1 at 60% over white) is drawn around the key's line
            assert count_near(img, (187, 222, 237), tol=12) > 2000
