"""Logprob statistic and reading mode: validity over many keys, detection over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from fingerprint.cli import main
from fingerprint.verify import VerifyOptions, verify_evidence, verify_exchanges
from fingerprint.verify.access import VocabMapper, access_notes, reading_evidence, reading_top_k
from fingerprint.corpus import Exchange, ExchangeSet, read_exchanges
from fingerprint.keys import FingerprintKey
from fingerprint.sim.distill import corpus_prompts
from fingerprint.sim.generate import generate
from fingerprint.sim.server import ServedModel, serve
from fingerprint.tokenize import token_bytes_table


@pytest.fixture(scope="module")
def setup(teacher, distilled, tmp_path_factory):
    d = tmp_path_factory.mktemp("access")
    key, pool, students = distilled
    key_path = key.save(d / "key.json")
    rng = np.random.default_rng(12)
    queries, _ = corpus_prompts(teacher, 120, length=12, rng=rng)
    qfile = d / "queries.jsonl"
    qfile.write_text("".join(json.dumps({"id": i, "prompt": teacher.tokenizer.decode(q)}) + "\n"
                             for i, q in enumerate(queries)))
    clean_feed = generate(teacher.model, pool.prompts[:100], 150, rng)
    ffile = d / "feed-clean.jsonl"
    ffile.write_text("".join(json.dumps({"id": i, "prompt": teacher.tokenizer.decode(t)}) + "\n"
                             for i, t in enumerate(clean_feed)))
    marked_feed = d / "feed-marked.jsonl"
    marked_feed.write_text("".join(json.dumps({"id": i, "prompt": teacher.tokenizer.decode(t)}) + "\n"
                                   for i, t in enumerate(pool.responses[:100])))
    return d, key, key_path, students, qfile, ffile, marked_feed


def collect(url, prompts, out, *extra):
    res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "collect", str(prompts), "--base-url", url,
                          "--model", "suspect", "--out", str(out), "--endpoint", "completions", "--quiet",
                          *map(str, extra)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return out


def verify(evidence, key_path, tokenizer, *extra):
    res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "verify", str(evidence), "--key", str(key_path),
                          "--tokenizer", tokenizer, "--quiet", *map(str, extra)], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_logprobs_and_reading_over_http(setup, teacher):
    d, key, key_path, students, qfile, ffile, marked_feed = setup
    tok = teacher.tokenizer.source
    out = {}
    for rho, student in students.items():
        with serve(ServedModel(student, teacher.tokenizer)) as srv:
            lp = collect(srv.url, qfile, d / f"lp-{rho}.jsonl", "--max-tokens", 80, "--logprobs", 5)
            rd = collect(srv.url, ffile, d / f"rd-{rho}.jsonl", "--max-tokens", 1, "--logprobs", 1, "--echo")
        for mode, ev, extra in (("logprobs", lp, ()), ("reading", rd, ("--fed-texts-clean",))):
            verify(ev, key_path, tok, "--mode", mode, "--decoys", 60, "--json", d / f"{mode}-{rho}.json", *extra)
            out[(mode, rho)] = json.loads((d / f"{mode}-{rho}.json").read_text())["results"][0]
    for mode in ("logprobs", "reading"):
        assert out[(mode, 0.0)]["verdict"] == "not detected" and out[(mode, 0.0)]["log10_pvalue"] > -3
        assert out[(mode, 0.1)]["verdict"] == "detected", out[(mode, 0.1)]
        assert out[(mode, 0.0)]["decoys"]["passed"] and out[(mode, 0.1)]["decoys"]["passed"]
    assert out[("logprobs", 0.0)]["dropped"]["unmapped_tokens"] == 0
    assert out[("logprobs", 0.1)]["mode"] == "logprobs" and out[("logprobs", 0.1)]["n_scored"] > 1000


@pytest.mark.parametrize("mode", ["logprobs", "reading"])
def test_uniform_over_500_keys_on_a_rho0_student(setup, teacher, mode):
    d, key, key_path, students, qfile, ffile, _ = setup
    with serve(ServedModel(students[0.0], teacher.tokenizer)) as srv:
        if mode == "logprobs":
            ev = collect(srv.url, qfile, d / "lp-null.jsonl", "--max-tokens", 60, "--logprobs", 5)
        else:
            ev = collect(srv.url, ffile, d / "rd-null.jsonl", "--max-tokens", 1, "--logprobs", 1, "--echo")
    res = verify_exchanges(read_exchanges([ev]), teacher.tokenizer, key,
                           options=VerifyOptions(mode=mode, n_decoys=500, decoy_seed=4, fed_texts_clean=True,
                                                 trajectory_points=2)).results[0]
    assert res.decoys.ks_pvalue > 0.01  # randomized p-values in reading mode (exact binomial is discrete)
    p = 10 ** res.decoys.log10_pvalues
    assert p.size == 500
    lo, hi = stats.binom.interval(0.99, p.size, 0.01)
    assert (p <= 0.01).sum() <= hi and (mode == "reading" or lo <= (p <= 0.01).sum())


def test_reading_fingerprinted_texts_needs_the_fed_pair_rule(teacher):
    """Innocent suspects that predict the owner's fingerprinted texts well must not look guilty:
    without the fed-pair rule a perfect predictor (one that knows the texts, e.g. from the web)
    is flagged under every key; with it the false-positive rate holds for it and for a realistic
    predictor (the teacher's own model without the key)."""
    tb = token_bytes_table(teacher.tokenizer)
    mapper = VocabMapper(teacher.tokenizer)
    base = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size, delta=3.0)
    rng = np.random.default_rng(2)
    pvals: dict = {}
    for key in base.decoys(120, seed=99):  # 120 independent real keys, each fingerprinting its own texts
        scheme = key.scheme_object()
        prompts, _ = corpus_prompts(teacher, 8, length=6, rng=rng)
        texts = generate(teacher.model, prompts, 100, rng, scheme=scheme, batch_size=8)
        suspects = {"model": [], "perfect": []}
        for t in texts:
            ctx = np.stack([np.r_[-1, -1, t][j:j + 2] for j in range(t.size)])
            suspects["model"].append(teacher.model.next_logprobs(ctx).argmax(axis=1))
            suspects["perfect"].append(t)
        for name, preds in suspects.items():
            es = ExchangeSet(exchanges=[
                Exchange(f"t{i}", "", "", "sim", None,
                         tuple((tb[int(t[j])], ((tb[int(pr[j])], 0.0),) if j else ()) for j in range(t.size)))
                for i, (t, pr) in enumerate(zip(texts, preds))])
            for rule in (False, True):
                ev = reading_evidence(es, mapper, 2, teacher.vocab_size, exclude_fed_pairs=rule)
                p = 10 ** verify_evidence(ev, key, options=VerifyOptions(mode="reading", n_decoys=0)
                                          ).results[0].test.log10_pvalue if len(ev) else 1.0
                pvals.setdefault((name, rule), []).append(p)
    p = {k: np.array(v) for k, v in pvals.items()}
    assert (p[("perfect", False)] <= 1e-6).mean() > 0.95  # the bias is real
    hi = stats.binom.ppf(0.99, 120, 0.01)
    for name in ("model", "perfect"):
        assert (p[(name, True)] <= 0.01).sum() <= hi
        assert (p[(name, True)] <= 0.05).mean() <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 120)


def test_topk_reading_over_http_scores_the_suspects_distributions(setup, teacher, tmp_path):
    """collect --echo --logprobs 5 returns the suspect's top-5 predictions at every position of
    the fed texts: reading scores them with the distribution statistic (weights p_suspect): its
    null holds over 300 decoy keys on the control student, and the rho = 10% student is detected."""
    d, key, key_path, students, qfile, ffile, _ = setup
    feed = tmp_path / "feed.jsonl"
    feed.write_text("".join(ffile.read_text().splitlines(keepends=True)[:15]))
    res, notes = {}, {}
    for rho, student in students.items():
        out = tmp_path / f"rd5-{rho}.jsonl"
        with serve(ServedModel(student, teacher.tokenizer)) as srv:
            assert main(["collect", str(feed), "--base-url", srv.url, "--model", "suspect", "--out", str(out),
                         "--endpoint", "completions", "--quiet", "--max-tokens", "1", "--logprobs", "5", "--echo"]) == 0
        es = read_exchanges([out])
        assert reading_top_k(es) == 5
        opts = VerifyOptions(mode="reading", fed_texts_clean=True, n_decoys=300 if rho == 0 else 0, decoy_seed=5,
                             trajectory_points=2)
        res[rho] = verify_exchanges(es, teacher.tokenizer, key, options=opts).results[0]
        notes[rho] = access_notes(es, opts)
    control, student = res[0.0], res[0.1]
    assert control.test.test == "weighted-bernoulli-saddlepoint" and control.counts.scored > 5_000
    assert control.decoys.k == 300 and control.decoys.ks_pvalue > 1e-3 and control.decoys.passed
    assert control.test.log10_pvalue > -3 and control.verdict != "detected"
    assert student.test.log10_pvalue < -6, student.test
    assert "distribution" in notes[0.1][0] and "top 5" in notes[0.1][0]
