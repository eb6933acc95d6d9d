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
from fingerprint.verify.distribution import (PositionDistributions, distribution_evidence, entropy_weights,
                                             exposure_weights, read_distributions)


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
    exposure in them: the decoys' p-values stay uniform, and the key does not detect."""
    rng = np.random.default_rng(5)
    prompts, _ = corpus_prompts(teacher, 30, length=4, rng=rng)
    texts = generate(teacher.model, prompts, 60, rng)
    innocent = read_distributions(teacher.model, texts, top_k=4)
    key = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size, delta=3.0)
    h = key.scheme_object().context_width
    exposure = exposure_weights([d.tokens for d in innocent], h)
    assert max(float(w.max()) for w in exposure) >= 3  # some windows repeat
    opts = VerifyOptions(mode="reading", n_decoys=300, decoy_seed=8, trajectory_points=2, fed_texts_clean=True)
    for weights in (exposure, entropy_weights(innocent)):
        ev = distribution_evidence(innocent, context_width=h, vocab_size=teacher.vocab_size, exclude_fed_pairs=False,
                                   window_weights=weights)
        res = verify_evidence(ev, key, options=opts).results[0]
        assert res.decoys.k == 300 and res.decoys.ks_pvalue > 1e-3 and res.decoys.passed
        assert res.test.log10_pvalue > -3
