"""transformers' KGW watermark verified without torch: bit-for-bit green flags, exact tests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from fingerprint.keys import FingerprintKey  # noqa: E402
from fingerprint.schemes.hf_kgw import (HfKgwScheme, full_randperm, hashing_key_secret, lefthash_seeds32,  # noqa: E402
                                        torch_randperm_contains, torch_randperm_prefix)
from fingerprint.prf import encode_tuples  # noqa: E402
from fingerprint.windows import first_occurrence_mask, select_tuples  # noqa: E402

try:
    import numba  # noqa: F401
    HAVE_NUMBA = True
except ImportError:  # the numpy kernel alone (numba is the optional [fast] extra)
    HAVE_NUMBA = False
KERNELS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed"))]

CONFIGS = [("lefthash", 1), ("selfhash", 2), ("selfhash", 4)]


def hf_flags(processor, seq: np.ndarray, seeding: str, cw: int) -> list[bool]:
    """transformers' own green flag of every token of ``seq`` that its detector scores."""
    t = torch.from_numpy(seq)
    out = []
    for j in range(cw if seeding == "lefthash" else cw - 1, seq.size):
        prefix = t[j - cw + 1:j + 1] if seeding == "selfhash" else t[j - cw:j]
        out.append(int(seq[j]) in set(processor._get_greenlist_ids(prefix).tolist()))
    return out


@pytest.fixture(scope="module")
def generations(tiny_gpt2, teacher):
    out = {}
    prompts = np.stack([teacher.tokens[teacher.offsets[i]:teacher.offsets[i] + 8] for i in (11, 111, 1111, 11111)])
    for seeding, cw in CONFIGS:
        cfg = transformers.WatermarkingConfig(bias=4.0, seeding_scheme=seeding, context_width=cw,
                                              hashing_key=15485863 + cw)
        torch.manual_seed(cw)
        gen = tiny_gpt2.generate(torch.from_numpy(prompts), do_sample=True, max_new_tokens=100, top_k=0,
                                 watermarking_config=cfg, pad_token_id=0, no_repeat_ngram_size=3)
        out[(seeding, cw)] = (cfg, [row[8:].numpy() for row in gen])
    torch.manual_seed(99)
    plain = tiny_gpt2.generate(torch.from_numpy(prompts), do_sample=True, max_new_tokens=200, top_k=0, pad_token_id=0,
                               no_repeat_ngram_size=3)
    out["plain"] = [row[8:].numpy() for row in plain]
    return out


@pytest.mark.parametrize("n", [2, 3, 10, 257, 8192, 50257, 100003])
def test_randperms_equal_torch_on_cpu(n):
    gen = torch.Generator()
    seeds = [0, 1, 7, 15485863, 2**32 - 1, 2**40 + 5]
    k = max(1, n // 4)
    prefixes = torch_randperm_prefix(seeds, n, k)
    for seed, prefix in zip(seeds, prefixes):
        gen.manual_seed(seed)
        want = torch.randperm(n, generator=gen).numpy()
        assert np.array_equal(full_randperm(seed, n), want)
        assert np.array_equal(prefix, want[:k])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("n", [2, 3, 5, 50, 1000, 50257, 151646, 152000])
def test_membership_equals_torch_randperm_on_cpu(n, kernel):
    """Green membership traced through the shuffle equals membership in torch's own
    ``randperm(n)[:k]``, for random seeds (beyond 2**32 too: manual_seed keeps seed mod 2**32),
    several prefix lengths and a few hundred query tokens per seed (every token when n is small)."""
    rng = np.random.default_rng(n)
    gen = torch.Generator()
    seeds = [int(s) for s in rng.integers(0, 2**40, 6)] + [0, 2**32 - 1]
    ks = {1, n // 4, n // 2, n - 1, n} if n <= 1000 else {n // 4, n // 3}
    for k in sorted(v for v in ks if v >= 1):
        queried, wanted = [], []
        for seed in seeds:
            gen.manual_seed(seed)
            perm = torch.randperm(n, generator=gen).numpy()
            tokens = np.arange(n) if n <= 300 else np.concatenate(
                ([0, n - 1], perm[:50], perm[-50:], rng.integers(0, n, 200)))
            queried.append(tokens)
            wanted.append(np.isin(tokens, perm[:k]))
        seed_col = np.repeat(np.array(seeds, dtype=np.uint64), [t.size for t in queried])
        got = torch_randperm_contains(seed_col, np.concatenate(queried), n, k, kernel=kernel)
        assert np.array_equal(got, np.concatenate(wanted)), (n, k)


@pytest.mark.parametrize("kernel", KERNELS)
def test_membership_equals_randperm_prefix_on_random_inputs(kernel):
    """Against the materialised prefixes: random n, k, seeds, repeated (seed, token) queries, seeds
    asked about every token (the many-values path), and more seeds than one chunk of the numpy
    kernel holds at n = 50257."""
    rng = np.random.default_rng(17)
    cases = [(int(rng.integers(2, 3000)), None, int(rng.integers(1, 10)), int(rng.integers(1, 60)))
             for _ in range(60)]
    cases += [(int(rng.integers(2, 400)), None, 3, -1) for _ in range(10)]  # every token of every seed
    cases += [(50257, 50257 // 4, 240, 480)]
    for n, k, n_seeds, m in cases:
        k = int(rng.integers(1, n + 1)) if k is None else k
        distinct = rng.integers(0, 2**32, n_seeds).astype(np.uint64)
        if m < 0:
            seeds, tokens = np.repeat(distinct, n), np.tile(np.arange(n), n_seeds)
        else:
            seeds, tokens = rng.choice(distinct, m), rng.integers(0, n, m)
        prefix = torch_randperm_prefix(distinct, n, k)
        row = np.searchsorted(np.sort(distinct), seeds)
        rows = np.argsort(distinct)[row]
        want = (prefix[rows] == tokens[:, None]).any(axis=1)
        assert np.array_equal(torch_randperm_contains(seeds, tokens, n, k, kernel=kernel), want), (n, k)
    assert torch_randperm_contains(np.zeros(0, np.uint64), np.zeros(0, np.int64), 10, 2).size == 0


def test_lefthash_seeds_equal_python_integers():
    rng = np.random.default_rng(3)
    keys = [0, 1, 2, 15485863, 2**32 * 12345, 2**63 - 1] + [int(k) for k in rng.integers(0, 2**63, 30)]
    prev = np.concatenate(([0, 1, 2**31 - 1, 2**32 + 7], rng.integers(0, 2**31, 300)))
    for key in keys:
        want = [((key * int(p)) % (2**64 - 1)) & 0xFFFFFFFF for p in prev]
        assert lefthash_seeds32(key, prev).tolist() == want, key


@pytest.mark.parametrize("seeding,cw,hashing_key", [("lefthash", 1, 15485863), ("lefthash", 1, 2**32 * 12345),
                                                    ("lefthash", 1, 2**20 * 3), ("selfhash", 2, 15485863),
                                                    ("selfhash", 4, 7)])
def test_block_scores_and_distinct_mask_equal_their_definitions(seeding, cw, hashing_key):
    """What verify calls per key (scores_of_blocks, distinct_mask on one blocks array, shared
    key-independent work cached across keys) equals the definitions: membership in the
    materialised green list of each tuple's seed, and the first occurrence of each (seed, token).
    Keys whose previous tokens fold onto shared seeds (even lefthash keys) included; two blocks
    arrays and two keys alternate, so nothing cached leaks from one to the other."""
    vocab = 1000
    rng = np.random.default_rng(cw + hashing_key % 97)
    h = 1 if seeding == "lefthash" else cw - 1
    data = []
    for size in (3000, 2000):
        windows = (rng.zipf(1.3, (size, h)) - 1) % vocab
        tokens = (rng.zipf(1.3, size) - 1) % vocab
        data.append((windows, tokens, encode_tuples(windows, tokens)))
    schemes = [make_key(seeding, cw, hk, vocab).scheme_object() for hk in (hashing_key, hashing_key + 2**33 + 1)]
    for _ in range(2):
        for scheme in schemes:
            for windows, tokens, blocks in data:
                seeds = scheme.seeds32(windows, tokens)
                distinct = np.unique(seeds)
                prefix = torch_randperm_prefix(distinct, vocab, scheme.greenlist_size)
                want = (prefix[np.searchsorted(distinct, seeds)] == tokens[:, None]).any(axis=1)
                assert np.array_equal(scheme.scores_of_blocks(blocks), want.astype(np.int8))
                assert np.array_equal(scheme.green_flags(windows, tokens), want)
                keep = first_occurrence_mask((seeds << np.uint64(32)) | tokens.astype(np.uint64))
                assert np.array_equal(scheme.distinct_mask(blocks), keep)
    if hashing_key == 2**32 * 12345:
        assert not schemes[0].distinct_mask(data[0][2]).all()  # this key folds previous tokens together


def make_key(seeding: str, cw: int, hashing_key: int, vocab: int) -> FingerprintKey:
    return FingerprintKey(hashing_key_secret(hashing_key), "hf-kgw",
                          {"seeding": seeding, "context_width": cw}, vocab)


@pytest.mark.parametrize("seeding,cw", CONFIGS)
def test_green_flags_equal_transformers_for_every_token(generations, teacher, seeding, cw):
    from transformers.generation.logits_process import WatermarkLogitsProcessor

    cfg, texts = generations[(seeding, cw)]
    vocab = teacher.vocab_size
    processor = WatermarkLogitsProcessor(vocab_size=vocab, device="cpu", greenlist_ratio=cfg.greenlist_ratio,
                                         hashing_key=cfg.hashing_key, seeding_scheme=seeding, context_width=cw)
    scheme = make_key(seeding, cw, cfg.hashing_key, vocab).scheme_object()
    h = scheme.context_width
    for seq in texts:
        ours = scheme.score(seq, np.array([0, seq.size]))
        theirs = hf_flags(processor, seq, seeding, cw)
        assert ours.scores.astype(bool).tolist()[-len(theirs):] == theirs[-ours.scores.size:]
        assert ours.scores.size == seq.size - h


@pytest.mark.parametrize("seeding,cw", CONFIGS)
def test_watermarked_text_detected_p_below_1e10(generations, teacher, seeding, cw):
    cfg, texts = generations[(seeding, cw)]
    scheme = make_key(seeding, cw, cfg.hashing_key, teacher.vocab_size).scheme_object()
    offsets = np.concatenate(([0], np.cumsum([t.size for t in texts])))
    scored = scheme.score(np.concatenate(texts), offsets)
    result = scheme.test(scored.scores[select_tuples(scored.table).mask])
    assert result.log10_pvalue < -10, result
    other = make_key(seeding, cw, cfg.hashing_key + 1, teacher.vocab_size).scheme_object()
    scored = other.score(np.concatenate(texts), offsets)
    assert other.test(scored.scores[select_tuples(scored.table).mask]).log10_pvalue > -3


def exact_null_randomized_pvalue(k: int, seeds: np.ndarray, vocab: int, green: int, u: float) -> float:
    """P[S > k] + u P[S = k] for S = sum over seeds of Hypergeometric(vocab, green, m_s): the
    exact null of transformers' fixed-size green lists (m_s distinct tokens scored under seed s)."""
    _, m = np.unique(seeds, return_counts=True)
    pmf = np.array([1.0])
    values, counts = np.unique(m, return_counts=True)
    for mw, c in zip(values, counts):
        part = stats.hypergeom.pmf(np.arange(mw + 1), vocab, green, mw)
        for _ in range(c):
            pmf = np.convolve(pmf, part)
    return float(pmf[k + 1:].sum() + u * pmf[k])


@pytest.mark.parametrize("seeding,cw,parity", [("lefthash", 1, 1), ("lefthash", 1, 0),
                                               pytest.param("selfhash", 2, None, marks=pytest.mark.slow),
                                               pytest.param("selfhash", 4, None, marks=pytest.mark.slow)])
def test_uniform_over_hashing_keys_on_unwatermarked_text(generations, teacher, seeding, cw, parity):
    """Under the exact null (fixed-size green lists per seed, one flag per distinct (seed, token))
    the randomized p-values over many hashing keys are uniform, and the reported binomial
    p-values are valid. Even lefthash keys fold previous tokens onto one seed and selfhash
    windows share seeds: the scheme's (seed, token) de-duplication is what keeps this exact."""
    texts = generations["plain"]
    tokens = np.concatenate(texts)
    offsets = np.concatenate(([0], np.cumsum([t.size for t in texts])))
    rng = np.random.default_rng(5 + cw)
    n_keys = 200 if seeding == "lefthash" else 100
    keys = rng.integers(1, 2**61, size=n_keys)
    if parity is not None:
        keys = keys * 2 + parity
    exact, reported, folded = [], [], 0
    for hk in keys:
        scheme = make_key(seeding, cw, int(hk), teacher.vocab_size).scheme_object()
        scored = scheme.score(tokens, offsets)
        sel = select_tuples(scored.table)
        windows, nexts = scored.table.windows(sel.mask), scored.table.next_tokens(sel.mask)
        keep = scheme.distinct_mask(encode_tuples(windows, nexts))
        folded += int((~keep).sum())
        kept = scored.scores[sel.mask][keep]
        seeds = scheme.seeds32(windows, nexts)[keep]
        exact.append(exact_null_randomized_pvalue(int(kept.sum()), seeds, scheme.vocab_size,
                                                  scheme.greenlist_size, rng.random()))
        reported.append(scheme.test(kept).pvalue)
    exact, reported = np.array(exact), np.array(reported)
    if seeding == "selfhash":
        assert folded > 0  # the collisions the de-duplication is for do happen
    assert stats.kstest(exact, "uniform").pvalue > 0.01
    hi = stats.binom.ppf(0.99, n_keys, 0.01)
    assert (exact <= 0.01).sum() <= hi and (reported <= 0.01).sum() <= hi
    assert np.mean(reported >= exact - 1e-9) > 0.95


def test_verify_counts_shared_seeds_once(generations, teacher):
    """A text built so that selfhash gives two different windows one seed (the minimum falls on
    the scored token's own term): verify scores the shared (seed, token) once and reports the
    other as a duplicate."""
    from fingerprint.verify import VerifyOptions, verify
    from fingerprint.windows import tuple_table

    key = make_key("selfhash", 2, 15485865, teacher.vocab_size)
    scheme = key.scheme_object()
    # find a token t and two windows x != y that give (x, t) and (y, t) one seed
    every = np.arange(teacher.vocab_size)
    for t in range(teacher.vocab_size):
        seeds = scheme.seeds32(every[:, None], np.full(every.size, t))
        order = np.argsort(seeds, kind="stable")
        same = np.flatnonzero(seeds[order][1:] == seeds[order][:-1])
        if same.size:
            x, y = (int(v) for v in order[same[0]:same[0] + 2])
            if t not in (x, y):
                break
    seq = np.array([x, t, y, t])
    table = tuple_table(seq, np.array([0, seq.size]), 1, vocab_size=teacher.vocab_size)
    sel = select_tuples(table)
    blocks = encode_tuples(table.windows(sel.mask), table.next_tokens(sel.mask))
    assert sel.counts.scored == 3
    assert scheme.distinct_mask(blocks).tolist() == [True, True, False]
    kr = verify([seq], keys=key, text_ids=["x"], options=VerifyOptions(n_decoys=20)).results[0]
    assert kr.counts.scored == 2 and kr.counts.dropped["duplicate_tuple"] == sel.counts.duplicate_tuple + 1
    assert kr.test.n == 2 and kr.responses.n_scored.tolist() == [2]


def test_repeated_text_flagged_by_transformers_not_by_fingerprint(generations, teacher, tiny_gpt2):
    from transformers import WatermarkDetector

    cfg = transformers.WatermarkingConfig(bias=2.5, seeding_scheme="lefthash", context_width=1, hashing_key=777)
    scheme = make_key("lefthash", 1, 777, teacher.vocab_size).scheme_object()
    # an unwatermarked snippet that happens to be a little green, quoted 200 times
    plain = np.concatenate(generations["plain"])
    best, best_rate = None, -1.0
    for s in range(0, plain.size - 13, 13):
        snippet = plain[s:s + 13]
        rate = scheme.score(snippet, np.array([0, 13])).scores.mean()
        if rate > best_rate:
            best, best_rate = snippet, rate
    repeated = np.tile(best, 200)
    detector = WatermarkDetector(model_config=tiny_gpt2.config, device="cpu", watermarking_config=cfg)
    hf = detector(torch.from_numpy(repeated)[None, :], return_dict=True)
    assert bool(hf.prediction[0]) and hf.z_score[0] > 10  # transformers counts every copy
    scored = scheme.score(repeated, np.array([0, repeated.size]))
    sel = select_tuples(scored.table)
    ours = scheme.test(scored.scores[sel.mask])
    assert sel.counts.scored <= 13 and ours.log10_pvalue > -6  # each (window, token) counts once


def test_keygen_keeps_the_hashing_key_secret(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "k.json"
    res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "keygen", "--scheme", "hf-kgw", "--vocab-size",
                          "50257", "--hashing-key", "15485863", "--seeding", "selfhash", "--context-width", "4",
                          "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["params"] == {"seeding": "selfhash", "context_width": 4, "greenlist_ratio": 0.25, "bias": 2.0}
    assert "15485863" not in json.dumps(data["params"]) and "15485863" not in res.stdout
    key = FingerprintKey.load(out)
    assert key.scheme_object().hashing_key == 15485863 and key.scheme_object().context_width == 3
    assert isinstance(key.scheme_object(), HfKgwScheme)
