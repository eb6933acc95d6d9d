"""Window weights for reading with distributions: exposure (how often the fed texts hold a window)
and the suspect's entropy, their exact values, and the null with them."""

from __future__ import annotations

import numpy as np
import pytest

from fingerprint.errors import ParameterError
from fingerprint.keys import FingerprintKey
from fingerprint.sim.distill import corpus_prompts
from fingerprint.sim.generate import generate
from fingerprint.verify import VerifyOptions, verify_evidence
from fingerprint.verify.distribution import (WINDOW_WEIGHTINGS, PositionDistributions, distribution_evidence,
                                             entropy_weights, exposure_weights, read_distributions,
                                             sqrt_exposure_weights)


def test_exposure_counts_every_occurrence_of_the_window_followed_by_a_token():
    texts = [np.array([1, 2, 3, 1, 2, 4]), np.array([1, 2, 3]), np.array([5, -1, 5, 6, 5, 6, 7]), np.array([9])]
    w = exposure_weights(texts, 2)
    # (1, 2) is followed by a token three times, (2, 3) once (its end of text 1 teaches nothing),
    # (3, 1) once; a window with an unknown token weighs 0
    np.testing.assert_array_equal(w[0], [0, 0, 3, 1, 1, 3])
    np.testing.assert_array_equal(w[1], [0, 0, 3])
    np.testing.assert_array_equal(w[2], [0, 0, 0, 0, 2, 1, 2])
    np.testing.assert_array_equal(w[3], [0])
    np.testing.assert_array_equal(exposure_weights(texts, 1)[0], [0, 3, 3, 1, 3, 3])
    assert [a.dtype for a in w] == [np.float64] * 4
    np.testing.assert_allclose(sqrt_exposure_weights(texts, 2)[0], np.sqrt([0, 0, 3, 1, 1, 3]))
    assert "sqrt-exposure" in WINDOW_WEIGHTINGS
    with pytest.raises(ParameterError):
        exposure_weights(texts, 0)


def test_entropy_is_the_top_k_part_of_the_suspects_entropy():
    probs = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.25, np.nan, 0.25], [0.0, 0.0, 0.0]])
    pd = PositionDistributions(np.arange(4), np.zeros((4, 3), dtype=np.int64), probs)
    np.testing.assert_allclose(entropy_weights([pd])[0], [np.log(2), 0.0, 0.5 * np.log(4), 0.0])


def test_window_weights_multiply_the_unit_norm_weights_and_zero_drops_the_window():
    rng = np.random.default_rng(0)
    L, K = 40, 3
    tokens = rng.integers(0, 50, L)
    pd = PositionDistributions(tokens, rng.integers(0, 50, (L, K)), rng.dirichlet(np.ones(K), L))
    plain = distribution_evidence([pd], context_width=1, vocab_size=50, exclude_fed_pairs=False)
    j0 = int(np.unique(plain.positions)[3])  # a position where a window is scored (its first occurrence)
    e = np.full(L, 2.5)
    e[j0] = 0.0
    weighted = distribution_evidence([pd], context_width=1, vocab_size=50, exclude_fed_pairs=False,
                                     window_weights=[e])
    assert plain.weights is not None and weighted.weights is not None
    dropped = plain.positions == j0
    np.testing.assert_allclose(weighted.weights, 2.5 * plain.weights[~dropped])
    assert weighted.counts.dropped["zero_weight_windows"] == 1
    with pytest.raises(ParameterError):
        distribution_evidence([pd], context_width=1, vocab_size=50, window_weights=[-e])


def test_exposure_weighted_reading_keeps_its_null_over_300_decoys(teacher):
    """An innocent suspect (the teacher's own model) reads fed texts; each window weighs its
    exposure in them, or its entropy, or is averaged over its positions: the decoys' p-values
    stay uniform, and the key does not detect."""
    rng = np.random.default_rng(5)
    prompts, _ = corpus_prompts(teacher, 30, length=4, rng=rng)
    texts = generate(teacher.model, prompts, 60, rng)
    innocent = read_distributions(teacher.model, texts, top_k=4)
    key = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size, delta=3.0)
    h = key.scheme_object().context_width
    exposure = exposure_weights([d.tokens for d in innocent], h)
    assert max(float(w.max()) for w in exposure) >= 3  # some windows repeat
    opts = VerifyOptions(mode="reading", n_decoys=300, decoy_seed=8, trajectory_points=2, fed_texts_clean=True)
    for weights, aggregate in ((exposure, "first"), (entropy_weights(innocent), "first"), (None, "mean"),
                               (sqrt_exposure_weights([d.tokens for d in innocent], h), "mean")):
        ev = distribution_evidence(innocent, context_width=h, vocab_size=teacher.vocab_size, exclude_fed_pairs=False,
                                   window_weights=weights, aggregate=aggregate)
        res = verify_evidence(ev, key, options=opts).results[0]
        assert res.decoys.k == 300 and res.decoys.ks_pvalue > 1e-3 and res.decoys.passed
        assert res.test.log10_pvalue > -3


def test_mean_aggregation_averages_a_window_over_its_positions():
    """Window (7,) occurs at positions 1 and 3 with different top-2 candidates: each candidate's
    probability is averaged over both (0 where it is not in the top 2), the reference subtracted
    after averaging, then the window is normed. Without repeats, mean equals first."""
    tokens = np.array([7, 1, 7, 2, 9])
    cands = np.array([[-1, -1], [3, 4], [5, 6], [3, 5], [8, 8]])
    probs = np.array([[0, 0], [0.6, 0.3], [0.5, 0.5], [0.2, 0.7], [0.9, 0.1]])
    ref = np.array([[0, 0], [0.1, 0.1], [0.5, 0.1], [0.1, 0.1], [0.2, 0.2]])
    pd = PositionDistributions(tokens, cands, probs, ref)
    ev = distribution_evidence([pd], context_width=1, vocab_size=10, exclude_fed_pairs=False, aggregate="mean")
    assert ev.weights is not None
    got = {(int(p), int(b[0][2])): w for p, b, w in zip(ev.positions, ev.blocks, ev.weights)}
    # window 7 at position 1: candidate 3 (0.6 + 0.2) / 2 - (0.1 + 0.1) / 2 = 0.3; 4: 0.3 / 2 - 0.1 / 2 = 0.1;
    # 5: 0.7 / 2 - 0.1 / 2 = 0.3
    w7 = np.array([0.3, 0.1, 0.3]) / np.linalg.norm([0.3, 0.1, 0.3])
    for (cand, want) in zip((3, 4, 5), w7):
        assert got[(1, cand)] == pytest.approx(want)
    assert (2, 5) not in got and got[(2, 6)] == pytest.approx(1.0)  # window (1,): 0.5 - 0.5 = 0 drops candidate 5
    assert ev.counts.dropped["window_repeats_averaged"] == 1
    rng = np.random.default_rng(3)
    unique = PositionDistributions(np.arange(30), rng.integers(0, 40, (30, 4)), rng.dirichlet(np.ones(4), 30),
                                   rng.dirichlet(np.ones(4), 30) / 2)
    a, b = (distribution_evidence([unique], context_width=2, vocab_size=40, exclude_fed_pairs=False, aggregate=m)
            for m in ("first", "mean"))
    assert a.weights is not None and b.weights is not None
    ka = sorted(zip(a.dedup_ids.tolist(), a.weights.tolist()))
    kb = sorted(zip(b.dedup_ids.tolist(), b.weights.tolist()))
    assert [x for x, _ in ka] == [x for x, _ in kb]
    np.testing.assert_allclose([w for _, w in ka], [w for _, w in kb], rtol=1e-12)
    with pytest.raises(ParameterError, match="aggregate"):
        distribution_evidence([unique], context_width=2, vocab_size=40, aggregate="median")
