"""Validity of keyring verification: no false accusation of a ring, or of a cohort, on text that
never learned from it. The family-wise rates over 1,000 keyrings of 1,000 cohorts are
`python -m eval.cohort_validity` (README table); identification under the partial null (other
cohorts served the text) is tested in tests/test_keyring.py."""

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
