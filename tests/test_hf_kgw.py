"""transformers' KGW watermark verified without torch: bit-for-bit green flags, exact tests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from fingerprint.keys import FingerprintKey  # noqa: E402
from fingerprint.schemes.hf_kgw import HfKgwScheme, full_randperm, hashing_key_secret, torch_randperm_prefix  # noqa: E402,E501
from fingerprint.prf import encode_tuples  # noqa: E402
from fingerprint.windows import select_tuples  # noqa: E402

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


@pytest.mark.parametrize("seeding,cw,parity", [("lefthash", 1, 1), ("lefthash", 1, 0), ("selfhash", 2, None),
                                               ("selfhash", 4, None)])
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
