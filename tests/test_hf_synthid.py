"""transformers' SynthID Text watermark verified without torch: equal g-values, an exact test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from fingerprint.verify import VerifyOptions, verify  # noqa: E402
from fingerprint.errors import ParameterError  # noqa: E402
from fingerprint.keys import FingerprintKey  # noqa: E402
from fingerprint.prf import encode_tuples  # noqa: E402
from fingerprint.schemes.hf_synthid import synthid_keys_secret, torch_randint_bits  # noqa: E402
from fingerprint.windows import select_tuples, tuple_table  # noqa: E402

KEYS = [654, 400, 836, 123, 340, 443, 597, 160, 57]


def make_key(keys: list[int], vocab: int, **params) -> FingerprintKey:
    return FingerprintKey(synthid_keys_secret(keys), "hf-synthid", {"depth": len(keys), **params}, vocab)


@pytest.fixture(scope="module")
def generations(tiny_gpt2, teacher):
    prompts = np.stack([teacher.tokens[teacher.offsets[i]:teacher.offsets[i] + 8] for i in (12, 121, 1212, 12121)])
    cfg = transformers.SynthIDTextWatermarkingConfig(keys=KEYS, ngram_len=5)
    torch.manual_seed(3)
    marked = tiny_gpt2.generate(torch.from_numpy(prompts), do_sample=True, max_new_tokens=100, top_k=0,
                                watermarking_config=cfg, pad_token_id=0)
    torch.manual_seed(4)
    plain = tiny_gpt2.generate(torch.from_numpy(prompts), do_sample=True, max_new_tokens=200, top_k=0, pad_token_id=0)
    return cfg, [row[8:].numpy() for row in marked], [row[8:].numpy() for row in plain]


def selected_blocks(texts: list[np.ndarray], scheme):
    tokens = np.concatenate(texts)
    offsets = np.concatenate(([0], np.cumsum([t.size for t in texts])))
    table = tuple_table(tokens, offsets, scheme.context_width, vocab_size=scheme.vocab_size)
    sel = select_tuples(table)
    return table, sel, encode_tuples(table.windows(sel.mask), table.next_tokens(sel.mask))


def test_sampling_table_equals_torch():
    for seed, size in ((0, 65536), (7, 1024), (2**32 + 3, 4096)):
        gen = torch.Generator().manual_seed(seed)
        want = torch.randint(0, 2, (size,), generator=gen).numpy()
        assert np.array_equal(torch_randint_bits(seed, size), want)


def test_g_values_equal_transformers_for_every_token(generations, teacher):
    from transformers.generation.logits_process import SynthIDTextWatermarkLogitsProcessor

    cfg, marked, _ = generations
    processor = SynthIDTextWatermarkLogitsProcessor(ngram_len=5, keys=KEYS, sampling_table_size=65536,
                                                    sampling_table_seed=0, context_history_size=1024, device="cpu")
    scheme = make_key(KEYS, teacher.vocab_size).scheme_object()
    for seq in marked:
        theirs = processor.compute_g_values(torch.from_numpy(seq)[None, :]).numpy()[0]
        windows = np.lib.stride_tricks.sliding_window_view(seq, 5)
        ours = scheme.g_values(windows[:, :4], windows[:, 4])
        assert theirs.shape == ours.shape == (seq.size - 4, len(KEYS))
        assert np.array_equal(theirs, ours)


def test_watermarked_text_detected_p_below_1e10_with_decoys(generations, teacher):
    _, marked, plain = generations
    key = make_key(KEYS, teacher.vocab_size)
    scheme = key.scheme_object()
    kr = verify(marked, keys=key, options=VerifyOptions(n_decoys=100)).results[0]
    assert kr.test.log10_pvalue < -10, kr.test
    assert kr.verdict == "detected"
    assert kr.decoys.passed and kr.decoys.min_log10_pvalue > -4
    assert kr.trajectory[-1].log10_pvalue == pytest.approx(kr.test.log10_pvalue)
    assert np.all(kr.responses.log10_pvalue < -2)
    null_kr = verify(plain, keys=key, options=VerifyOptions(n_decoys=0)).results[0]
    assert null_kr.test.log10_pvalue > -3


@pytest.mark.parametrize("source", ["model", "covering"])
def test_uniform_over_keys_on_unwatermarked_text(generations, teacher, source):
    """Randomized p-values over 2,000 random key sets are uniform, on model text and on a text
    whose units cover almost the whole table (where a binomial model of the fixed public table
    would be off by about one standard deviation)."""
    if source == "model":
        texts = generations[2]
    else:
        texts = [np.random.default_rng(1).integers(0, teacher.vocab_size, size=400_000)]
    rng = np.random.default_rng(11)
    base = make_key(list(rng.integers(0, 2**63, size=9)), teacher.vocab_size).scheme_object()
    table, sel, blocks = selected_blocks(texts, base)
    keep = base.distinct_mask(blocks)
    kept = blocks[keep]
    null = base.null(len(kept), blocks=kept)  # key-independent
    if source == "covering":
        assert keep.sum() > 0.95 * 65536
    windows, tokens = base._tuples_of_blocks(kept)
    h = base.ngram_hashes(windows, tokens)
    n_keys = 2000
    keys = rng.integers(0, 2**63, size=(n_keys, 9), dtype=np.int64).astype(np.uint64)
    totals = np.empty(n_keys, dtype=np.int64)
    for lo in range(0, n_keys, 20):  # g-values of every unit under 20 key sets at a time
        with np.errstate(over="ignore"):
            positions = (h[None, :, None] + keys[lo:lo + 20, None, :]) * np.uint64(6364136223846793005) + np.uint64(1)
        totals[lo:lo + 20] = base.table[(positions & np.uint64(65535)).astype(np.int64)].sum(axis=(1, 2))
    u = rng.random(n_keys)
    randomized = null.randomized_pvalues(totals, u)
    assert stats.kstest(randomized, "uniform").pvalue > 0.01
    if source == "covering":  # the binomial model of a random table is grossly wrong here
        binomial = stats.binom.sf(totals - 1, null.n_trials, 0.5)
        assert stats.kstest(binomial, "uniform").pvalue < 1e-6
    reported = 10.0 ** null.log10_sf(totals)
    hi = stats.binom.ppf(0.999, n_keys, 0.01)
    assert (reported <= 0.01).sum() <= hi
    # the same totals through the scheme for a few keys (the vectorized shortcut above is exact)
    for i in range(3):
        scheme = make_key([int(k) for k in keys[i]], teacher.vocab_size).scheme_object()
        assert scheme.scores_of_blocks(kept).sum() == totals[i]


def test_parameters_and_key_file(tmp_path):
    import json
    import subprocess
    import sys

    with pytest.raises(ParameterError, match="power of two"):
        make_key(KEYS, 1000, sampling_table_size=60000)
    out = tmp_path / "k.json"
    res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "keygen", "--scheme", "hf-synthid", "--vocab-size",
                          "256000", "--synthid-keys", ",".join(map(str, KEYS)), "--ngram-len", "5", "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["params"]["depth"] == 9 and "654" not in json.dumps(data["params"]) and "654" not in res.stdout
    key = FingerprintKey.load(out)
    assert key.scheme_object().keys.tolist() == KEYS
    assert len(key.decoys(2, seed=0)[1].scheme_object().keys) == 9


def test_cli_verify_detects_synthid_text_and_refuses_reading_fingerprinted_texts(generations, teacher, tmp_path):
    """End to end: transformers' SynthID text, decoded to strings, re-tokenized by `fingerprint verify`."""
    import json
    import subprocess
    import sys

    _, marked, plain = generations
    key_path = tmp_path / "synthid.json"
    make_key(KEYS, teacher.vocab_size).save(key_path)
    for name, texts in (("marked", marked), ("plain", plain)):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for i, seq in enumerate(texts):
                f.write(json.dumps({"id": f"{name}-{i}", "prompt": "", "response": teacher.tokenizer.decode(seq)}) + "\n")
    verdicts = {}
    for name in ("marked", "plain"):
        res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "verify", str(tmp_path / f"{name}.jsonl"),
                              "--key", str(key_path), "--tokenizer", teacher.tokenizer.source, "--decoys", "50",
                              "--json", str(tmp_path / f"{name}-report.json")], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        report = json.loads((tmp_path / f"{name}-report.json").read_text())
        verdicts[name] = report
    assert verdicts["marked"]["verdict"] == "detected" and verdicts["marked"]["log10_pvalue"] < -10
    assert verdicts["plain"]["verdict"] == "not detected"
    # reading texts fingerprinted with the key is refused, with the reason and the way out
    res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "verify", str(tmp_path / "marked.jsonl"),
                          "--key", str(key_path), "--tokenizer", teacher.tokenizer.source, "--mode", "reading"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "hf-synthid" in res.stderr and "--fed-texts-clean" in res.stderr
