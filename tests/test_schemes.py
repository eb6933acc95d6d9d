import itertools

import numpy as np
import pytest
from scipy import stats

from fingerprint.errors import ParameterError, TokenError
from fingerprint.schemes import GreenlistScheme, GumbelScheme, TournamentScheme, make_scheme

SECRET = bytes(range(32))


def test_greenlist_bias_adds_delta_to_green_tokens_only():
    s = GreenlistScheme(SECRET, 1000, delta=2.5, gamma=0.3)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 1000))
    ctx = np.array([[1, 2], [3, 4], [-1, 5]])
    out = s.bias_logits(logits, ctx)
    for i in range(2):
        green = s.green_mask(s.tuple_values(np.repeat(ctx[i:i + 1], 1000, 0), np.arange(1000)))
        assert np.allclose(out[i] - logits[i], 2.5 * green)
        assert abs(green.mean() - 0.3) < 0.06
    assert np.array_equal(out[2], logits[2])  # unknown context: no fingerprint


def test_greenlist_green_rate_is_gamma():
    s = GreenlistScheme(SECRET, 50_000, gamma=0.25)
    rng = np.random.default_rng(1)
    scores = s.tuple_scores(rng.integers(0, 50_000, (400_000, 2)), rng.integers(0, 50_000, 400_000))
    assert abs(scores.mean() - 0.25) < 5 * np.sqrt(0.25 * 0.75 / 400_000)


def test_gumbel_scores_are_exponential():
    s = GumbelScheme(SECRET, 1000)
    rng = np.random.default_rng(2)
    scores = s.tuple_scores(rng.integers(0, 1000, (100_000, 2)), rng.integers(0, 1000, 100_000))
    assert stats.kstest(scores, "expon").pvalue > 1e-3


def test_gumbel_sampling_is_distortion_free():
    """Over windows (fresh keyed randomness), argmax r^(1/p) is distributed as p."""
    s = GumbelScheme(SECRET, 200)
    p = np.zeros(200)
    p[:5] = [0.4, 0.3, 0.15, 0.1, 0.05]
    n = 30_000
    with np.errstate(divide="ignore"):
        logits = np.log(p)[None, :].repeat(n, 0)
    ctx = np.stack([np.arange(n) % 200, np.arange(n) // 200], axis=1)  # n distinct windows
    draws = s.sample(logits, ctx, np.random.default_rng(0))
    counts = np.bincount(draws, minlength=200)
    assert counts[5:].sum() == 0
    assert stats.chisquare(counts[:5], n * p[:5]).pvalue > 1e-4


def brute_force_tournament(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Exact winner distribution of an m-layer two-contestant tournament by enumeration."""
    v, m = g.shape
    out = np.zeros(v)
    for draw in itertools.product(range(v), repeat=2 ** m):
        prob = np.prod(p[list(draw)])
        if prob == 0:
            continue
        # contestants carry (token, weight of each outcome); ties broken uniformly at random
        dist = [{t: 1.0} for t in draw]
        for layer in range(m):
            nxt = []
            for a, b in zip(dist[::2], dist[1::2]):
                merged: dict[int, float] = {}
                for ta, wa in a.items():
                    for tb, wb in b.items():
                        ga, gb = g[ta, layer], g[tb, layer]
                        wins = [(ta, 1.0)] if ga > gb else [(tb, 1.0)] if gb > ga else [(ta, 0.5), (tb, 0.5)]
                        for t, w in wins:
                            merged[t] = merged.get(t, 0.0) + wa * wb * w
                nxt.append(merged)
            dist = nxt
        for t, w in dist[0].items():
            out[t] += prob * w
    return out


def test_tournament_distribution_matches_enumeration():
    s = TournamentScheme(SECRET, 3, layers=2)
    p = np.array([0.5, 0.3, 0.2])
    ctx = np.array([[7, 9]])
    values = s.tuple_values(np.repeat(ctx, 3, 0), np.arange(3))
    g = s.g_bits(values)
    exact = np.exp(s.tournament_logp(np.log(p)[None, :], ctx))[0]
    assert np.allclose(exact, brute_force_tournament(p, g), atol=1e-12)


def test_tournament_score_counts_bits():
    s = TournamentScheme(SECRET, 100, layers=7)
    v = s.tuple_values(np.array([[1, 2]] * 100), np.arange(100))
    assert np.array_equal(s._tuple_scores(v), s.g_bits(v).sum(axis=1))


@pytest.mark.parametrize("name", ["greenlist", "gumbel", "tournament"])
def test_top_p_is_respected(name):
    s = make_scheme(name, SECRET, 50)
    logits = np.zeros((400, 50))
    logits[:, :3] = 5.0  # nucleus at top_p=0.9 holds the three big tokens
    ctx = np.stack([np.arange(400), np.arange(400)], 1) % 50
    draws = s.sample(logits, ctx, np.random.default_rng(0), top_p=0.9, temperature=0.7)
    assert draws.max() < 3


@pytest.mark.parametrize("name", ["greenlist", "gumbel", "tournament"])
def test_embed_bad_input(name):
    s = make_scheme(name, SECRET, 50)
    rng = np.random.default_rng(0)
    with pytest.raises(TokenError, match=r"shape \(batch, 50\)"):
        s.sample(np.zeros((2, 49)), np.zeros((2, 2), int), rng)
    with pytest.raises(TokenError, match="context token id 50"):
        s.sample(np.zeros((2, 50)), np.array([[1, 50], [1, 2]]), rng)
    with pytest.raises(TokenError, match="shape"):
        s.sample(np.zeros((2, 50)), np.zeros((2, 3), int), rng)
    with pytest.raises(ParameterError, match="temperature"):
        s.sample(np.zeros((2, 50)), np.zeros((2, 2), int), rng, temperature=0.0)
    with pytest.raises(ParameterError, match="top_p"):
        s.sample(np.zeros((2, 50)), np.zeros((2, 2), int), rng, top_p=1.5)
    with pytest.raises(TokenError, match="token id 50"):
        s.score(np.array([1, 2, 50]), np.array([0, 3]))
    with pytest.raises(TokenError, match="integer"):
        s.score(np.array([1.0, 2.0, 3.0]), np.array([0, 3]))


def test_vocab_size_validated():
    with pytest.raises(ParameterError, match="vocab_size"):
        GreenlistScheme(SECRET, 1)


def test_empty_texts_raise_unless_allowed():
    s = GreenlistScheme(SECRET, 50)
    with pytest.raises(TokenError, match="text 1 is empty"):
        s.score(np.array([1, 2, 3, 4]), np.array([0, 4, 4]))
    with pytest.raises(TokenError, match="no texts"):
        s.score(np.zeros(0, int), np.array([0]))
    assert len(s.score(np.array([1, 2, 3, 4]), np.array([0, 4, 4]), allow_empty=True).table) == 2
