"""Validity of keyring verification: no false accusation of a ring, or of a cohort, on text that
never learned from it (the full-size run is `python -m eval.cohort_validity`)."""

from __future__ import annotations

import numpy as np
from scipy import stats

from fingerprint.keyring import Keyring
from fingerprint.stats import BinomialNull
from fingerprint.verify.evidence import text_evidence
from fingerprint.verify.keyring import cohort_totals


def test_cohort_pvalues_are_uniform_over_many_keyrings(human_text):
    """20 keyrings x 1,000 cohorts on human text: the cohorts' randomized p-values are U(0, 1),
    and the smallest p-value of each ring is U(0, 1) after Šidák (what the global test uses)."""
    tokens, offsets = human_text
    ev = text_evidence(tokens[:6000], np.array([0, 6000]), context_width=2, vocab_size=8192)
    null = BinomialNull(len(ev), 0.25)
    u = np.random.default_rng(0)
    randomized, mins = [], []
    for seed in range(20):
        ring = Keyring.from_seed(f"uniform-{seed}", "greenlist", vocab_size=8192, cohorts=1000)
        totals, _ = cohort_totals(ev, ring.cohort_keys(), processes=1)
        p = null.randomized_pvalues(totals, u.random(totals.size))
        randomized.append(p)
        mins.append(1 - (1 - p.min()) ** p.size)
    assert stats.kstest(np.concatenate(randomized), "uniform").pvalue > 1e-3
    assert stats.kstest(mins, "uniform").pvalue > 1e-3


def test_family_wise_false_positives_stay_within_alpha():
    """The eval's smoke size: 100 keyrings of 100 cohorts on a student's answers and on human
    text, and 10 keyrings whose own 3 cohorts fingerprinted the text (only the other cohorts count)."""
    from eval.cohort_validity import run

    rows, summary = run(rings=100, n_cohorts=100, partial_rings=10, innocent_tokens=3000, partial_tokens=1500,
                        workers=2)
    assert {s["text"] for s in summary} == {"student", "human", "other-cohorts"}
    assert len(rows) == 2 * 100 + 10
    for s in summary:
        assert s["passed"], s
    partial = [r for r in rows if r["text"] == "other-cohorts"]
    assert all(r["holm_flagged"] >= 3 for r in partial)  # the 3 cohorts that served the text are found
    assert sum(r["false_flagged"] for r in partial) == 0
