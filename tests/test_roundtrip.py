"""Round trip on a real model: samples embedded with each scheme are detected within 400
tokens; samples from the same model without the fingerprint are not."""

from __future__ import annotations

import numpy as np
import pytest

from fingerprint.keys import FingerprintKey
from fingerprint.sim.generate import generate
from fingerprint.apps.roundtrip import run_roundtrip, score_responses

SCHEMES = [("greenlist", {"delta": 2.0, "gamma": 0.25}), ("gumbel", {}), ("tournament", {}),
           ("greenlist", {"delta": 2.0, "context_width": 1}), ("tournament", {"context_width": 4})]


@pytest.mark.parametrize("name,params", SCHEMES)
def test_detected_within_400_tokens(teacher, name, params):
    rng = np.random.default_rng(100)
    key = FingerprintKey.generate(name, vocab_size=teacher.vocab_size, **params)
    prompts = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i] + 10] for i in (7, 3001, 9000, 15000)]
    marked = generate(teacher.model, prompts, 100, rng, scheme=key.scheme_object())
    plain = generate(teacher.model, prompts, 100, rng)
    assert sum(m.size for m in marked) == 400
    result_kr = score_responses(key, prompts, marked)
    result, counts = result_kr.test, result_kr.counts
    assert result.log10_pvalue < -10, (result, counts)
    assert result.effect.ci_low > 0
    null = score_responses(key, prompts, plain).test
    assert null.log10_pvalue > -3, null


def test_temperature_and_top_p_keep_the_fingerprint(teacher):
    rng = np.random.default_rng(7)
    key = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size, delta=2.0)
    prompts = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i] + 10] for i in (11, 12, 13, 14)]
    marked = generate(teacher.model, prompts, 100, rng, scheme=key.scheme_object(), temperature=0.7,
                      top_p=0.95)
    result_kr = score_responses(key, prompts, marked)
    result, counts = result_kr.test, result_kr.counts
    assert result.log10_pvalue < -6


def test_run_roundtrip_rows(teacher):
    rows = run_roundtrip(teacher, n_prompts=4, tokens_per_response=50, seed=1)
    assert [r.scheme for r in rows] == ["greenlist", "gumbel", "tournament"]
    for r in rows:
        assert r.fingerprinted.test.log10_pvalue < -6
        assert r.fingerprinted.verdict == "detected"
        assert r.plain.test.log10_pvalue > -3
        assert r.fingerprinted.counts.tokens_read == 200
