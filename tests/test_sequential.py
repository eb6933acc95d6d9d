"""Anytime-valid evidence: e-processes stay valid under optional stopping (Ville), a fixed-n
p-value checked repeatedly does not, and `collect --until-detected` stops early on a distilled
student over real HTTP and runs a control to its budget."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

import fingerprint
from fingerprint.keys import FingerprintKey
from fingerprint.sim.distill import corpus_prompts
from fingerprint.sim.generate import generate
from fingerprint.sim.server import ServedModel, serve
from fingerprint.stats import BinomialNull, GammaNull, WeightedBernoulliNull, WeightedExponentialNull
from fingerprint.stats.sequential import anytime_log10_pvalues

RUNS = 600
ITEMS = 1500


def sup_evalues(null, draw, rng: np.random.Generator) -> np.ndarray:
    """max_t log10 E_t of RUNS null runs of ITEMS items each."""
    return np.array([null.log10_eprocess(draw(rng)).max() for _ in range(RUNS)])


@pytest.mark.parametrize("name", ["binomial", "tournament", "gamma", "weighted-bernoulli", "weighted-exponential"])
def test_ville_holds_for_every_eprocess(name):
    rng = np.random.default_rng(3)
    weights = rng.dirichlet(np.ones(5), size=ITEMS // 5).ravel()  # five candidates per window, unit mass
    cases = {
        "binomial": (BinomialNull(ITEMS, 0.25), lambda r: (r.random(ITEMS) < 0.25).astype(float)),
        "tournament": (BinomialNull(ITEMS, 0.5, trials_per_item=30), lambda r: r.binomial(30, 0.5, ITEMS)),
        "gamma": (GammaNull(ITEMS), lambda r: r.exponential(size=ITEMS)),
        "weighted-bernoulli": (WeightedBernoulliNull(weights, 0.25), lambda r: (r.random(weights.size) < 0.25) * 1.0),
        "weighted-exponential": (WeightedExponentialNull(weights), lambda r: r.exponential(size=weights.size)),
    }
    null, draw = cases[name]
    sup = sup_evalues(null, draw, rng)
    for alpha in (0.1, 0.02):
        hits = int((sup >= -math.log10(alpha)).sum())
        assert hits <= stats.binom.ppf(0.999, RUNS, alpha), (name, alpha, hits)  # P[sup E >= 1/alpha] <= alpha


def test_peeking_at_a_fixed_n_pvalue_inflates_false_positives_and_the_eprocess_does_not():
    rng = np.random.default_rng(5)
    looks = np.arange(100, ITEMS + 1, 100)
    null = BinomialNull(ITEMS, 0.25)
    fixed_hits = anytime_hits = 0
    for _ in range(RUNS):
        flags = (rng.random(ITEMS) < 0.25).astype(float)
        k = np.cumsum(flags)[looks - 1]
        fixed_hits += bool((null.log10_sf_prefixes(k, looks) <= -2).any())
        anytime_hits += bool(anytime_log10_pvalues(null.log10_eprocess(flags))[looks - 1].min() <= -2)
    assert fixed_hits / RUNS > 0.03  # 15 looks at alpha = 0.01: several times alpha
    assert anytime_hits <= stats.binom.ppf(0.999, RUNS, 0.01)


def test_eprocess_detects_a_real_effect():
    rng = np.random.default_rng(1)
    flags = (rng.random(20_000) < 0.28).astype(float)
    null = BinomialNull(flags.size, 0.25)
    anytime = anytime_log10_pvalues(null.log10_eprocess(flags))[-1]
    fixed = float(null.log10_sf(np.array([flags.sum()]))[0])
    assert anytime < -6 and fixed < anytime  # valid under stopping, at a modest cost in power


def test_hf_kgw_has_no_eprocess_and_says_so():
    key = FingerprintKey.generate("hf-kgw", vocab_size=300)
    res = fingerprint.verify([np.arange(200) % 300], keys=key, options=fingerprint.VerifyOptions(n_decoys=0))
    assert res.results[0].anytime_log10_pvalue is None
    with pytest.raises(fingerprint.ParameterError, match="stopping rule"):
        fingerprint.verify([np.arange(200) % 300], keys=key,
                           options=fingerprint.VerifyOptions(n_decoys=0, optional_stopping=True))


def test_anytime_pvalues_over_many_keys_on_plain_model_text(teacher):
    """The pipeline's anytime-valid p-value on unfingerprinted model text, over 200 keys."""
    rng = np.random.default_rng(9)
    prompts, _ = corpus_prompts(teacher, 20, length=8, rng=rng)
    texts = generate(teacher.model, prompts, 100, rng)
    base = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size)
    ev = fingerprint.text_evidence(*_flat(texts), context_width=2, vocab_size=teacher.vocab_size)
    p = []
    for key in base.decoys(200, seed=12):
        r = fingerprint.verify_evidence(ev, key, options=fingerprint.VerifyOptions(n_decoys=0, trajectory_points=2))
        p.append(10 ** r.results[0].anytime_log10_pvalue)
    p = np.array(p)
    for alpha in (0.05, 0.2):
        assert (p <= alpha).sum() <= stats.binom.ppf(0.999, p.size, alpha)


def _flat(arrays):
    return np.concatenate(arrays), np.concatenate(([0], np.cumsum([a.size for a in arrays]))).astype(np.int64)


@pytest.fixture(scope="module")
def students(teacher, distilled, tmp_path_factory):
    d = tmp_path_factory.mktemp("sequential")
    key, _, models = distilled
    key_path = key.save(d / "key.json")
    queries, _ = corpus_prompts(teacher, 300, length=12, rng=np.random.default_rng(21))
    qfile = d / "queries.jsonl"
    qfile.write_text("".join(json.dumps({"id": f"q{i}", "prompt": teacher.tokenizer.decode(q)}) + "\n"
                             for i, q in enumerate(queries)))
    return d, key_path, models, qfile


def _collect(url, qfile, out, key_path, tokenizer, budget):
    res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "collect", str(qfile), "--base-url", url,
                          "--model", "suspect", "--out", str(out), "--max-tokens", "100", "--temperature", "1",
                          "--quiet", "--concurrency", "4", "--until-detected", "--key", str(key_path),
                          "--tokenizer", tokenizer, "--alpha", "1e-6", "--check-every", "8",
                          "--max-requests", str(budget)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_collect_until_detected_stops_early_on_the_student_and_not_on_the_control(students, teacher):
    d, key_path, models, qfile = students
    tok = teacher.tokenizer.source
    budgets = {0.0: 150, 0.1: 300}
    used = {}
    for rho, model in models.items():
        budget = budgets[rho]
        out = d / f"evidence-{rho}.jsonl"
        with serve(ServedModel(model, teacher.tokenizer)) as srv:
            if rho > 0:  # a first run with a small budget, then a resume that continues the same e-process
                first = _collect(srv.url, qfile, out, key_path, tok, 24)
                assert "budget used, not detected" in first
            text = _collect(srv.url, qfile, out, key_path, tok, budget)
        recs = _records(out)
        assert recs[0]["type"] == "header" and recs[0]["stopping_rule"]["kind"] == "anytime-valid"
        used[rho] = sum(1 for r in recs if r.get("type") == "exchange" and r.get("status") == 200)
        report = d / f"report-{rho}.json"
        res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "verify", str(out), "--key", str(key_path),
                              "--tokenizer", tok, "--decoys", "20", "--json", str(report), "--quiet"],
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr
        doc = json.loads(report.read_text())
        assert doc["results"][0]["valid_pvalue"] == "anytime"
        if rho > 0:
            assert "STOPPED: detected" in text, text
            assert doc["verdict"] == "detected" and doc["anytime_log10_pvalue"] <= -6
            assert doc["holm_log10_pvalue"] == doc["anytime_log10_pvalue"]  # the anytime p decides
        else:
            assert "budget used, not detected" in text, text
            assert doc["verdict"] == "not detected" and doc["anytime_log10_pvalue"] > -3
    print(f"requests used until detected: student {used[0.1]} of {budgets[0.1]}, control {used[0.0]} of "
          f"{budgets[0.0]}")
    assert used[0.0] == budgets[0.0]
    assert 24 < used[0.1] < budgets[0.1] / 2, used  # stopped well before the budget
