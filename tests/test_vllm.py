"""vLLM's native watermark verified without torch: bit-for-bit PRF, detection, exact nulls.

The reference outputs come from vLLM 0.33.0's own code (``tests/make_vllm_vectors.py`` writes
``tests/data/vllm_watermark_vectors.npz``); nothing here needs vLLM or torch.
"""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import fingerprint
from fingerprint.cli import main
from fingerprint.errors import ParameterError
from fingerprint.keys import FingerprintKey
from fingerprint.schemes import make_scheme
from fingerprint.schemes.vllm_gumbel import (PRF_VERSION, VLLM_VERSION, VllmGumbelScheme, derive_watermark_key,
                                             philox_words, scores_of_words, vllm_detect, vllm_detector_inputs,
                                             vllm_detector_pvalue, vllm_detector_scores, vllm_key_secret,
                                             vllm_uniforms)
from fingerprint.stats.nulls import GammaNull, GammaSumNull, WeightedGammaSumNull
from fingerprint.verify import VerifyOptions, text_evidence

sys.path.insert(0, str(Path(__file__).parent))
from make_vllm_vectors import seeded_pairs  # noqa: E402

VECTORS = Path(__file__).parent / "data" / "vllm_watermark_vectors.npz"


@pytest.fixture(scope="module")
def vectors():
    with np.load(VECTORS) as data:
        return {k: data[k] for k in data.files}


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


# ---- the PRF, bit for bit ------------------------------------------------------------------

def test_fixture_is_vllm_0_33(vectors):
    assert str(vectors["vllm_version"]) == VLLM_VERSION == "0.33.0"
    assert str(vectors["prf_version"]) == PRF_VERSION == "philox4x32-10-v1"


def test_raw_vectors_bit_for_bit(vectors):
    """Words and float32 uniforms equal vLLM's exactly; vLLM's detector score -log1p(-u) to the
    last bit but one (torch's and numpy's float64 log1p differ in the last bit for some inputs)."""
    keys = [int(k) for k in vectors["keys"]]
    ki, width = vectors["raw_key_index"], vectors["raw_width"]
    assert set(width.tolist()) == set(range(1, 17))
    mismatches = 0
    for k in range(len(keys)):
        for w in range(1, 17):
            sel = (ki == k) & (width == w)
            words = philox_words(keys[k], vectors["raw_contexts"][sel][:, :w], vectors["raw_tokens"][sel])
            mismatches += int((words != vectors["raw_words"][sel]).sum())
            u = vllm_uniforms(words)
            mismatches += int((u.view(np.uint32) != vectors["raw_uniforms"][sel].view(np.uint32)).sum())
            np.testing.assert_allclose(vllm_detector_scores(words), vectors["raw_scores"][sel], rtol=3e-16, atol=0)
    assert mismatches == 0


def test_million_pairs_zero_mismatches(vectors):
    """>= 1M (context, token) pairs over 4 keys and widths 1-16: SHA-256 of vLLM's words and
    uniforms equal ours for every (key, width)."""
    keys = [int(k) for k in vectors["keys"]]
    n = int(vectors["digest_pairs"])
    bad, total = [], 0
    for j, (k, w) in enumerate(zip(vectors["digest_key_index"], vectors["digest_width"])):
        ctx, tok = seeded_pairs(int(k), int(w), n)
        words = philox_words(keys[int(k)], ctx, tok)
        total += tok.size
        if sha256(words.astype("<u4")) != vectors["digest_words_sha256"][j]:
            bad.append(("words", int(k), int(w)))
        if sha256(vllm_uniforms(words).astype("<f4")) != vectors["digest_uniforms_sha256"][j]:
            bad.append(("uniforms", int(k), int(w)))
    assert total >= 1_000_000
    assert set(vectors["digest_width"].tolist()) == set(range(1, 17))
    assert len(set(vectors["digest_key_index"].tolist())) >= 4
    assert bad == []


def test_uniform_conversion_all_mantissas(vectors):
    m = np.arange(1 << 24, dtype=np.uint32)
    u = vllm_uniforms((m << np.uint32(8)) | np.uint32(0xA5))
    assert sha256(u.astype("<f4")) == str(vectors["mantissa_uniform_sha256"])
    # vLLM's GPU kernel computes the float32 just below (m + 1) * 2**-24 (a bitcast minus one):
    # the same numbers as the CPU formula float32((m + 1) / (2**24 + 1))
    gpu = (((m + np.uint32(1)).astype(np.float32) * np.float32(2.0 ** -24)).view(np.uint32) - np.uint32(1))
    assert np.array_equal(gpu.view(np.float32), u)


def test_dual_key_derivation(vectors):
    keys = [int(k) for k in vectors["keys"]]
    assert [derive_watermark_key(k, b"key_a") for k in keys] == [int(v) for v in vectors["derived_a"]]
    assert [derive_watermark_key(k, b"key_b") for k in keys] == [int(v) for v in vectors["derived_b"]]


def test_vllm_detector_reproduced(vectors):
    """vLLM's detectors (single and dual key, with and without context de-duplication): the same
    scored positions, scores, and p-values (vLLM's Gamma approximation for the dual key; torch's
    and scipy's incomplete gamma agree to ~1e-9)."""
    keys = [int(k) for k in vectors["keys"]]
    tokens, offsets = vectors["detect_tokens"], vectors["detect_offsets"]
    kept = iter(vectors["detect_kept"])
    for row in vectors["detect_rows"]:
        k, w, dedup, ti, alpha, score, p, n = row
        if alpha < 0 and ti == 0:  # one kept-positions row per (key, width, dedup), over all texts
            mask = next(kept)
            for t in range(offsets.size - 1):
                text = tokens[offsets[t]:offsets[t + 1]]
                pos, _ = vllm_detector_inputs(text, int(w), deduplicate=bool(dedup))
                assert np.array_equal(np.flatnonzero(mask[offsets[t]:offsets[t + 1]]), pos)
        text = tokens[offsets[int(ti)]:offsets[int(ti) + 1]]
        s, pv, m = vllm_detect(text, keys[int(k)], context_width=int(w), alpha=None if alpha < 0 else float(alpha),
                               deduplicate=bool(dedup))
        assert m == n
        assert s == pytest.approx(score, rel=1e-13, abs=1e-12)
        assert pv == pytest.approx(p, rel=1e-12 if alpha < 0 else 1e-8)


def test_embed_side_matches_vllm_cpu_sampler(vectors):
    key = FingerprintKey(vllm_key_secret(int(vectors["keys"][int(vectors["sample_key_index"])])), "vllm-gumbel",
                         {"context_width": 4}, vectors["sample_logits"].shape[1])
    got = key.scheme_object().sample(vectors["sample_logits"].astype(np.float64), vectors["sample_contexts"],
                                     np.random.default_rng(0))
    assert np.array_equal(got, vectors["sample_tokens"])


def test_score_is_conservative_lower_end():
    """The scheme's score -ln(1 - m / 2**24) has tail exactly e**-s at its atoms (so its sum is
    stochastically below Gamma(n, 1)); vLLM's -log1p(-u) lies above it by at most 2**-24."""
    m = np.arange(1 << 24, dtype=np.uint32)
    ours = scores_of_words(m << np.uint32(8))
    theirs = vllm_detector_scores(m << np.uint32(8))
    n = float(1 << 24)
    np.testing.assert_allclose(np.exp(-ours), 1 - np.arange(1 << 24) / n, rtol=0, atol=1e-15)
    excess = theirs - ours
    assert excess.min() >= 0 and excess.max() < 2 ** -24 * 1.01


# ---- the scheme through the pipeline ---------------------------------------------------------

def _prompts(teacher, k: int) -> list[np.ndarray]:
    return [teacher.tokenizer.encode_batch([p])[0][:8] for p in teacher.paragraphs[100:100 + k]]


@pytest.mark.parametrize("params", [{}, {"algorithm": "dual_key_gumbel"},
                                    {"context_width": 7, "deduplicate": "context"}])
def test_detects_own_text_within_400_tokens(teacher, params):
    from fingerprint.sim.generate import generate

    key = FingerprintKey(vllm_key_secret(0x5EED), "vllm-gumbel", params, teacher.vocab_size)
    rng = np.random.default_rng(3)
    marked = generate(teacher.model, _prompts(teacher, 1), 400, rng, scheme=key.scheme_object())
    options = VerifyOptions(n_decoys=20)
    r = fingerprint.verify(marked, keys=key, options=options).results[0]
    assert r.counts.tokens_read == 400
    assert r.test.log10_pvalue < -10 and r.verdict == "detected"
    plain = generate(teacher.model, _prompts(teacher, 1), 400, rng)
    r0 = fingerprint.verify(plain, keys=key, options=options).results[0]
    assert r0.test.log10_pvalue > -3 and r0.verdict != "detected"


def test_null_uniform_over_2000_keys(human_text):
    """Randomized p-values of 2,000 keys on real text (independent of every key) are U(0, 1):
    one key, the dual key (exact GammaSumNull tail) and vLLM's context de-duplication."""
    tokens, offsets = human_text
    cut = int(np.searchsorted(offsets, 9_000))
    tokens, offsets = tokens[:offsets[cut]], offsets[:cut + 1]
    rng = np.random.default_rng(2026)
    vocab = int(tokens.max()) + 1
    for params in ({}, {"algorithm": "dual_key_gumbel", "alpha": 0.2}, {"deduplicate": "context"}):
        ev = text_evidence(tokens, offsets, context_width=4, vocab_size=vocab)
        totals, sizes = [], []
        for key in rng.integers(0, 2**63, size=2000):
            scheme = make_scheme("vllm-gumbel", vllm_key_secret(int(key)), vocab, **params)
            scores = scheme.scores_of_blocks(ev.blocks)
            keep = scheme.distinct_mask(ev.blocks)
            if keep is not None:
                scores = scores[keep]
            totals.append(float(scores.sum()))
            sizes.append(scores.size)
        assert len(set(sizes)) == 1
        null = scheme.null(sizes[0])
        if params.get("algorithm"):
            assert isinstance(null, GammaSumNull)
        else:
            assert isinstance(null, GammaNull)
        p = null.randomized_pvalues(np.array(totals), rng.random(len(totals)))
        assert stats.kstest(p, "uniform").pvalue > 1e-3, params
        assert (p < 0.01).sum() <= 35 and (p < 0.1).sum() <= 245, params


def test_context_dedup_is_vllms_rule():
    """``deduplicate="context"``: first tuple of each context (key-independent, corpus order)."""
    from fingerprint.prf import encode_tuples

    windows = np.array([[1, 2], [3, 4], [1, 2], [5, 6], [3, 4]])
    tokens = np.array([7, 8, 9, 7, 8])
    blocks = encode_tuples(windows, tokens)
    a = make_scheme("vllm-gumbel", vllm_key_secret(1), 16, context_width=2, deduplicate="context")
    b = make_scheme("vllm-gumbel", vllm_key_secret(2), 16, context_width=2, deduplicate="context")
    assert a.distinct_mask(blocks).tolist() == [True, True, False, True, False]
    assert b.distinct_mask(blocks).tolist() == [True, True, False, True, False]
    assert make_scheme("vllm-gumbel", vllm_key_secret(1), 16, context_width=2).distinct_mask(blocks) is None
    np.testing.assert_array_equal(a.scores_of_blocks(blocks), a.tuple_scores(windows, tokens))


def test_keygen_and_parameters(tmp_path, capsys):
    out = tmp_path / "v.key.json"
    assert main(["keygen", "--scheme", "vllm-gumbel", "--vllm-key", "0x0123456789ABCDEF", "--vocab-size", "8192",
                 "--param", "algorithm=dual_key_gumbel", "--param", "alpha=0.2", "--out", str(out)]) == 0
    key = FingerprintKey.load(out)
    scheme = key.scheme_object()
    assert isinstance(scheme, VllmGumbelScheme) and scheme.vllm_key == 0x0123456789ABCDEF
    assert key.params == {"context_width": 4, "algorithm": "dual_key_gumbel", "alpha": 0.2, "deduplicate": "tuple"}
    assert "0123456789abcdef" not in str(key.to_public_dict())
    assert main(["keygen", "--scheme", "gumbel", "--vllm-key", "1", "--vocab-size", "100",
                 "--out", str(tmp_path / "g.json")]) == 2
    assert "applies only to scheme(s) vllm-gumbel" in capsys.readouterr().err
    for bad in ({"algorithm": "kgw"}, {"alpha": 1.5}, {"deduplicate": "window"}, {"context_width": 0}):
        with pytest.raises(ParameterError):
            make_scheme("vllm-gumbel", vllm_key_secret(1), 100, **bad)
    for bad_key in (-1, 2**64, True):
        with pytest.raises(ParameterError):
            vllm_key_secret(bad_key)
    assert len(FingerprintKey.generate("vllm-gumbel", vocab_size=100).decoys(3, seed=1)) == 3


def test_weighted_dual_key_null_counts_pairs():
    w = np.array([0.5, 0.25, 1.0])
    null = make_scheme("vllm-gumbel", vllm_key_secret(9), 100, algorithm="dual_key_gumbel").null(3, weights=w)
    assert isinstance(null, WeightedGammaSumNull) and null.n_items == 3 and null.prefix(2).n_items == 2
    # unit weights: the saddlepoint agrees with the exact tail
    exact, approx = GammaSumNull(50, (0.9, 0.1)), WeightedGammaSumNull(np.ones(50), (0.9, 0.1))
    for t in (60.0, 80.0, 110.0):
        assert float(approx.log10_sf(np.array([t]))[0]) == pytest.approx(float(exact.log10_sf(np.array([t]))[0]),
                                                                         rel=0.02)


# ---- the dual key's exact tail -----------------------------------------------------------------

def mp_sf(t: float, n: int, a: float, b: float, digits: int = 60):
    """P[a G_1 + b G_2 >= t], G_i ~ Gamma(n, 1), from the partial fractions of the Laplace
    transform ``(1 + a s)**-n (1 + b s)**-n``, correct to ``digits`` significant digits: the
    working precision covers the cancellation, and a run with 30 more digits must agree."""
    mpmath = pytest.importorskip("mpmath")

    def closed_form(dps: int):
        with mpmath.workdps(dps):
            tt, aa, bb = mpmath.mpf(t), mpmath.mpf(a), mpmath.mpf(b)
            total, biggest = mpmath.mpf(0), mpmath.mpf(0)
            for x, y in ((aa, bb), (bb, aa)):
                c, d = (x - y) / x, y / x
                for m in range(n):  # the u**-(n - m) coefficient of u**-n (c + d u)**-n, u = 1 + x s
                    term = (mpmath.binomial(-n, m) * c ** (-n - m) * d ** m
                            * mpmath.gammainc(n - m, tt / x, mpmath.inf, regularized=True))
                    total += term
                    biggest = max(biggest, abs(term))
            return total, biggest

    value, biggest = closed_form(digits + 30)
    lost = max(0, int(mpmath.log10(biggest / abs(value)))) if value != 0 else 400
    dps = digits + lost + 20
    v1, _ = closed_form(dps)
    v2, _ = closed_form(dps + 30)
    with mpmath.workdps(dps):
        assert abs(v1 - v2) <= abs(v2) * mpmath.mpf(10) ** (-digits)
        return v2


@pytest.mark.parametrize("alpha", [0.1, 0.2, 0.35])
def test_dual_key_tail_matches_60_digit_reference(alpha):
    mpmath = pytest.importorskip("mpmath")
    a, b = 1 - alpha, alpha
    for n in (1, 2, 7, 30, 60):
        null = GammaSumNull(n, (a, b))
        sd = math.sqrt(n * (a * a + b * b))
        for t in (0.3 * n, n, n + 3 * sd, n + 12 * sd, 8 * n + 40, 60 * n + 300):
            ref = mp_sf(t, n, a, b)
            with mpmath.workdps(60):
                ref_log10 = float(mpmath.log10(ref))
            got = float(null.log10_sf(np.array([t]))[0])
            assert got == pytest.approx(ref_log10, rel=1e-12, abs=1e-14), (n, t)


def test_dual_key_tail_large_n_consistent():
    """At large n the series is summed at every sd/4-th term: the same value as the consecutive
    sum, a valid distribution (density = -d tail / dt), and matching simulation."""
    import fingerprint.stats.nulls as nulls

    for n in (2_000, 200_000):
        null = GammaSumNull(n, (0.9, 0.1))
        sd = math.sqrt(n * 0.82)
        ts = n + sd * np.array([-3.0, 0.0, 3.0, 10.0, 40.0])
        stepped = null._log_series(ts, np.full(ts.size, n))
        old = nulls._STEP_FROM_SD
        try:
            nulls._STEP_FROM_SD = math.inf
            consecutive = null._log_series(ts, np.full(ts.size, n))
        finally:
            nulls._STEP_FROM_SD = old
        # ln p agrees to the rounding of the terms (log-gamma of arguments near n)
        np.testing.assert_allclose(stepped, consecutive, rtol=1e-12, atol=1e-14 * n)
    null = GammaSumNull(40, (0.8, 0.2))
    h = 1e-4
    deriv = (math.exp(null.log_sf(55 - h)) - math.exp(null.log_sf(55 + h))) / (2 * h)
    assert deriv == pytest.approx(math.exp(null.log_pdf(55.0)), rel=1e-6)
    x = np.random.default_rng(5)
    sim = 0.8 * x.gamma(40, size=400_000) + 0.2 * x.gamma(40, size=400_000)
    p = math.exp(null.log_sf(50.0))
    assert abs((sim >= 50).mean() - p) < 5 * math.sqrt(p * (1 - p) / sim.size)


#: log10 of vLLM's dual-key p-value where the exact one is 1e-3, 1e-6, 1e-10, 1e-20 (README table)
GAMMA_APPROX = {(0.1, 100): (-3.028, -6.100, -10.230, -20.655), (0.1, 1000): (-3.010, -6.036, -10.085, -20.255),
                (0.2, 100): (-3.039, -6.141, -10.332, -20.973), (0.2, 1000): (-3.013, -6.048, -10.116, -20.353)}


@pytest.mark.parametrize("alpha,n", sorted(GAMMA_APPROX))
def test_gamma_approximation_error(alpha, n):
    """vLLM's moment-matched Gamma for alpha = 0.1, 0.2 is anti-conservative: where the exact
    tail is 1e-10 it reports about 10**-10.1 to 10**-10.3 (up to 2x too small), worse further out."""
    null = GammaSumNull(n, (1 - alpha, alpha))
    for target, expected in zip((-3, -6, -10, -20), GAMMA_APPROX[alpha, n]):
        t = null.critical_total(target)
        assert float(null.log10_sf(np.array([t]))[0]) == pytest.approx(target, abs=1e-9)
        approx = math.log10(vllm_detector_pvalue(t, n, alpha))
        assert approx == pytest.approx(expected, abs=2e-3)
        assert approx < target  # smaller than the truth: a false detection is likelier than reported
    # alpha 0.5 is exact in vLLM too (0.5 (G_1 + G_2) = 0.5 Gamma(2n))
    t = 60.0
    assert math.log10(vllm_detector_pvalue(t, 40, 0.5)) == pytest.approx(
        float(GammaSumNull(40, (0.5, 0.5)).log10_sf(np.array([t]))[0]), rel=1e-12)


# ---- the stronger access modes and the strength guard -------------------------------------------

def _logprob_exchanges(teacher, model, prompts, n_tokens: int, rng) -> "fingerprint.ExchangeSet":
    """A model's answers with its top-5 logprobs at every position, as `collect --logprobs 5` records them."""
    from fingerprint.corpus import Exchange, ExchangeSet
    from fingerprint.sim.generate import generate
    from fingerprint.tokenize import token_bytes_table

    tb = token_bytes_table(teacher.tokenizer)
    tops: list = []
    answers = generate(model, prompts, n_tokens, rng, batch_size=256, top_logprobs=5, top_out=tops)
    return ExchangeSet(exchanges=[
        Exchange(f"q{i}", teacher.tokenizer.decode(q), teacher.tokenizer.decode(a), "sim",
                 tuple((tb[int(t)], tuple((tb[int(c)], float(v)) for c, v in zip(ids[j], lps[j])))
                       for j, t in enumerate(a)))
        for i, (q, a, (ids, lps)) in enumerate(zip(prompts, answers, tops))])


def _reading_exchanges(teacher, model, texts) -> "fingerprint.ExchangeSet":
    """Texts fed to a model with teacher forcing and its top-1 prediction at every position
    (what `collect --echo --logprobs 1` records)."""
    from fingerprint.corpus import Exchange, ExchangeSet
    from fingerprint.tokenize import token_bytes_table

    tb = token_bytes_table(teacher.tokenizer)
    out = []
    for i, t in enumerate(texts):
        ctx = np.stack([np.r_[-np.ones(model.context_size, np.int64), t][j:j + model.context_size]
                        for j in range(t.size)])
        pred = model.next_logprobs(ctx).argmax(axis=1)
        out.append(Exchange(f"f{i}", teacher.tokenizer.decode(t), "", "sim", None,
                            tuple((tb[int(t[j])], ((tb[int(pred[j])], 0.0),) if j else ()) for j in range(t.size))))
    return ExchangeSet(exchanges=out)


@pytest.mark.parametrize("params", [{}, {"algorithm": "dual_key_gumbel", "alpha": 0.2}])
def test_access_modes_valid_over_300_keys_on_an_innocent_student(teacher, distilled, params):
    """Logprob and reading statistics of vllm-gumbel keys on a student that never saw them (the
    control distilled without any fingerprint): randomized p-values uniform over 300 keys."""
    from fingerprint.verify import verify_evidence
    from fingerprint.verify.access import VocabMapper, logprob_evidence, reading_evidence
    from fingerprint.sim.generate import generate

    _, pool, students = distilled
    control = students[0.0]
    rng = np.random.default_rng(8)
    key = FingerprintKey(vllm_key_secret(0xC0FFEE), "vllm-gumbel", {"context_width": 2, **params}, teacher.vocab_size)
    mapper = VocabMapper(teacher.tokenizer)
    lp = logprob_evidence(_logprob_exchanges(teacher, control, _prompts(teacher, 40), 60, rng), teacher.tokenizer,
                          mapper, 2, teacher.vocab_size)
    fed = generate(teacher.model, pool.prompts[:40], 60, rng)  # clean owner texts
    rd = reading_evidence(_reading_exchanges(teacher, control, fed), mapper, 2, teacher.vocab_size,
                          exclude_fed_pairs=False)
    for ev in (lp, rd):
        res = verify_evidence(ev, key, options=VerifyOptions(mode=ev.mode, n_decoys=300, decoy_seed=5,
                                                              fed_texts_clean=True, trajectory_points=2)).results[0]
        assert res.counts.scored > 1000
        assert res.decoys.ks_pvalue > 0.01, (ev.mode, params)
        p = 10 ** res.decoys.log10_pvalues
        assert (p <= 0.01).sum() <= stats.binom.ppf(0.999, 300, 0.01), (ev.mode, params)


@pytest.fixture(scope="module")
def vllm_students(teacher):
    """A vllm-gumbel key (h = 2), its teacher's answers (30k tokens) and a trigram student trained
    on them alone (rho = 1)."""
    from fingerprint.sim.distill import distill_student, fingerprinted_responses

    key = FingerprintKey(vllm_key_secret(0xD15711), "vllm-gumbel", {"context_width": 2}, teacher.vocab_size)
    rng = np.random.default_rng(21)
    pool = fingerprinted_responses(teacher, key.scheme_object(), 30_000, rng=rng)
    student, _ = distill_student(np.zeros(0, np.int64), np.zeros(1, np.int64), pool, 1.0,
                                 vocab_size=teacher.vocab_size)
    return key, pool, student


def test_logprob_mode_detects_a_student_of_vllm_outputs(teacher, vllm_students):
    key, pool, student = vllm_students
    ex = _logprob_exchanges(teacher, student, _prompts(teacher, 20), 50, np.random.default_rng(4))
    r = fingerprint.verify_exchanges(ex, teacher.tokenizer, key,
                                     options=VerifyOptions(mode="logprobs", n_decoys=20)).results[0]
    assert r.mode == "logprobs" and r.verdict == "detected" and r.test.log10_pvalue < -6, r.test
    assert r.decoys is not None and r.decoys.passed


def test_strength_measures_vllm_releases(teacher, vllm_students):
    """The CI guard on a vllm-gumbel release: fingerprinted answers have a clear effect and are
    detectable one by one; answers sampled without it are not."""
    from fingerprint.corpus import Exchange, ExchangeSet
    from fingerprint.sim.generate import generate
    from fingerprint.strength import measure_strength

    key, pool, _ = vllm_students
    dec = teacher.tokenizer.decode

    def release(responses) -> ExchangeSet:
        return ExchangeSet(exchanges=[Exchange(f"r{i}", dec(p), dec(r), "sim")
                                      for i, (p, r) in enumerate(zip(pool.prompts[:40], responses))])

    marked = measure_strength(release(pool.responses[:40]), teacher.tokenizer, key)
    plain = measure_strength(release(generate(teacher.model, pool.prompts[:40], 200, np.random.default_rng(3))),
                             teacher.tokenizer, key)
    assert marked.scheme == "vllm-gumbel" and marked.log10_pvalue < -100 and marked.effect > 0.3
    assert marked.detectable_share > 0.8 and marked.unmarked_share < 0.1
    assert plain.log10_pvalue > -3 and plain.detectable_share < 0.1 and abs(plain.effect) < 0.1
    hf = FingerprintKey.generate("hf-kgw", vocab_size=teacher.vocab_size)
    with pytest.raises(ParameterError, match="vllm-gumbel"):
        measure_strength(release(pool.responses[:2]), teacher.tokenizer, hf)
