"""transformers' schemes (hf-kgw, hf-synthid) in the access modes: the logprob statistic, reading
(top-1 and with distributions), their nulls over decoy keys, and what is refused and why."""

from __future__ import annotations

import numpy as np
import pytest

from fingerprint.corpus import Exchange, ExchangeSet
from fingerprint.errors import ParameterError
from fingerprint.keys import FingerprintKey
from fingerprint.schemes.hf_kgw import hashing_key_secret
from fingerprint.sim.distill import corpus_prompts
from fingerprint.sim.generate import generate
from fingerprint.tokenize import token_bytes_table
from fingerprint.verify import VerifyOptions, verify_evidence, verify_exchanges
from fingerprint.verify.access import access_scheme
from fingerprint.verify.distribution import PositionDistributions, distribution_evidence, read_distributions

SCHEMES = {
    "hf-kgw-lefthash": ("hf-kgw", {"bias": 3.0}),
    "hf-kgw-selfhash": ("hf-kgw", {"seeding": "selfhash", "context_width": 3}),
    "hf-synthid": ("hf-synthid", {}),
}


@pytest.fixture(autouse=True)
def compiled_membership(monkeypatch):
    """hf-kgw's green-list membership through the compiled kernel where numba is installed (the
    same answers as numpy, about 10x faster for the decoys)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return
    monkeypatch.setenv("FINGERPRINT_HF_KGW_KERNEL", "numba")


@pytest.fixture(scope="module")
def world(teacher):
    """Clean fed texts (the teacher's answers sampled without any key: 20 x 64 tokens) and an
    innocent suspect's reading of them (the teacher's own model: its top 4 candidates everywhere)."""
    rng = np.random.default_rng(21)
    prompts, _ = corpus_prompts(teacher, 20, length=4, rng=rng)
    texts = generate(teacher.model, prompts, 64, rng)
    return texts, read_distributions(teacher.model, texts, top_k=4)


def learned(dists: list[PositionDistributions], scheme, beta: float) -> list[PositionDistributions]:
    """A suspect that learned the fingerprint: each candidate's probability times
    ``exp(beta * score(window, candidate))`` under the key (what a distilled student's bias does)."""
    h = scheme.context_width
    out = []
    for pd in dists:
        L, K = pd.candidates.shape
        j = np.arange(h, L)
        wins = np.lib.stride_tricks.sliding_window_view(pd.tokens, h)[:L - h]  # window before each j
        w = np.repeat(wins, K, axis=0)
        c = pd.candidates[j].ravel()
        ok = (c >= 0) & (w >= 0).all(axis=1)
        tilt = np.ones(c.size)
        tilt[ok] = np.exp(beta * scheme.tuple_scores(w[ok], c[ok]).astype(np.float64))
        probs = pd.probs.copy()
        probs[j] *= tilt.reshape(j.size, K)
        out.append(PositionDistributions(pd.tokens, pd.candidates, probs))
    return out


def exchanges(teacher, dists: list[PositionDistributions], *, reading_k: int | None) -> ExchangeSet:
    """The suspect's evidence as collect stores it: its answers with top-k logprobs
    (``reading_k`` None), or the fed texts' prompt logprobs with its top-``reading_k`` predictions."""
    tb = token_bytes_table(teacher.tokenizer)
    out = []
    for i, pd in enumerate(dists):
        order = np.argsort(-pd.probs, axis=1, kind="stable")
        rows = []
        for j, tok in enumerate(pd.tokens):
            top = [(tb[int(pd.candidates[j, r])], float(np.log(pd.probs[j, r] / pd.probs[j].sum())))
                   for r in order[j] if pd.candidates[j, r] >= 0 and pd.probs[j, r] > 0]
            rows.append((tb[int(tok)], tuple(top[:reading_k] if reading_k else top)))
        lp = tuple(rows)
        text = teacher.tokenizer.decode(pd.tokens)
        out.append(Exchange(f"t{i}", "", text, "sim", None if reading_k else lp, lp if reading_k else None))
    return ExchangeSet(exchanges=out)


@pytest.mark.parametrize("name", ["hf-kgw-lefthash", "hf-synthid"])
def test_reading_with_distributions_null_over_300_decoys_and_detection(world, teacher, name):
    scheme_name, params = SCHEMES[name]
    key = FingerprintKey.generate(scheme_name, vocab_size=teacher.vocab_size, **params)
    scheme = key.scheme_object()
    _, innocent = world
    opts = VerifyOptions(mode="reading", n_decoys=300, decoy_seed=3, trajectory_points=2, fed_texts_clean=True)
    ev = distribution_evidence(innocent, context_width=scheme.context_width, vocab_size=teacher.vocab_size,
                               exclude_fed_pairs=False)
    res = verify_evidence(ev, key, options=opts).results[0]
    assert res.decoys.k == 300 and res.decoys.ks_pvalue > 1e-3 and res.decoys.passed
    assert res.test.log10_pvalue > -3 and res.verdict != "detected"
    guilty = distribution_evidence(learned(innocent, scheme, 1.0 if scheme_name == "hf-kgw" else 0.1),
                                   context_width=scheme.context_width, vocab_size=teacher.vocab_size,
                                   exclude_fed_pairs=False)
    res = verify_evidence(guilty, key, options=VerifyOptions(mode="reading", n_decoys=0)).results[0]
    assert res.test.log10_pvalue < -8, res.test


@pytest.mark.parametrize("name", list(SCHEMES))
def test_logprob_mode_and_reading_detect_a_student_that_learned_the_key(world, teacher, name):
    scheme_name, params = SCHEMES[name]
    key = FingerprintKey.generate(scheme_name, vocab_size=teacher.vocab_size, **params)
    _, innocent = world
    guilty = learned(innocent, key.scheme_object(), 1.0 if scheme_name == "hf-kgw" else 0.15)
    p = {}
    for who, dists in (("innocent", innocent), ("guilty", guilty)):
        for mode, k in (("logprobs", None), ("reading", 1), ("reading", 4)):
            es = exchanges(teacher, dists, reading_k=k)
            opts = VerifyOptions(mode=mode, n_decoys=0, fed_texts_clean=True)
            p[(who, mode, k)] = verify_exchanges(es, teacher.tokenizer, key, options=opts).results[0].test.log10_pvalue
    for mode, k in (("logprobs", None), ("reading", 1), ("reading", 4)):
        assert p[("innocent", mode, k)] > -3, (mode, k, p)
        assert p[("guilty", mode, k)] < (-4 if k == 1 else -8), (mode, k, p)


def test_refused_only_where_no_valid_null_exists(teacher):
    vocab = teacher.vocab_size
    lefthash = FingerprintKey.generate("hf-kgw", vocab_size=vocab)
    selfhash = FingerprintKey.generate("hf-kgw", vocab_size=vocab, seeding="selfhash", context_width=3)
    synthid = FingerprintKey.generate("hf-synthid", vocab_size=vocab)
    folding = FingerprintKey(hashing_key_secret(2**62), "hf-kgw", {}, vocab)  # folds previous tokens onto one seed
    for key in (lefthash, selfhash, synthid, folding):
        for mode in ("logprobs", "reading"):
            access_scheme(key, teacher.tokenizer, mode, fed_texts_clean=True)
        access_scheme(key, teacher.tokenizer, "logprobs", fed_texts_clean=False)
    access_scheme(lefthash, teacher.tokenizer, "reading", fed_texts_clean=False)
    for key, why in ((selfhash, "selfhash"), (synthid, "table"), (folding, "one seed")):
        with pytest.raises(ParameterError) as err:
            access_scheme(key, teacher.tokenizer, "reading", fed_texts_clean=False)
        msg = str(err.value)
        assert key.scheme in msg and "--mode reading" in msg and why in msg and "--fed-texts-clean" in msg


@pytest.mark.slow
def test_selfhash_reading_null_over_300_decoys(world, teacher):
    """Slow (each selfhash key draws its own million-entry table): the weighted null of hf-kgw
    selfhash over 300 decoy keys on the innocent reading."""
    key = FingerprintKey.generate("hf-kgw", vocab_size=teacher.vocab_size, seeding="selfhash", context_width=3)
    _, innocent = world
    ev = distribution_evidence(innocent, context_width=2, vocab_size=teacher.vocab_size, exclude_fed_pairs=False)
    opts = VerifyOptions(mode="reading", n_decoys=300, decoy_seed=3, trajectory_points=2, fed_texts_clean=True)
    res = verify_evidence(ev, key, options=opts).results[0]
    assert res.decoys.ks_pvalue > 1e-3 and res.decoys.passed


def test_weighted_shift_null_is_the_exact_shift_null_rounded_up(teacher):
    """With unit weights the weighted SynthID null is the exact shift null's distribution, its
    values rounded up to a fine grid: never below it, and within a few hundredths of log10 p."""
    from fingerprint.stats import ShiftNull, WeightedShiftNull

    g = FingerprintKey.generate("hf-synthid", vocab_size=teacher.vocab_size).scheme_object().shift_g
    units = np.unique(np.random.default_rng(0).integers(0, g.size, size=3000))
    exact, weighted = ShiftNull(units, g, 30), WeightedShiftNull(units, np.ones(units.size), g, 30)
    doubled = WeightedShiftNull(units, np.full(units.size, 2.0), g, 30)
    sd = np.sqrt(30 * exact.correlation.var())
    totals = np.rint(exact.null_mean + sd * np.arange(0, 9))
    a, b = exact.log10_sf(totals), weighted.log10_sf(totals)
    assert (b >= a - 1e-3).all() and (b - a < 0.05).all(), (a, b)
    np.testing.assert_allclose(doubled.log10_sf(2 * totals), b, atol=1e-6)
    assert a[-1] < -14
