"""Open-weights reading: a local transformers checkpoint's top-K distributions on the owner's
fed texts (fingerprint.interop.open_weights), the evidence they give, and verify --suspect-model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy import stats

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from fingerprint.cli import main  # noqa: E402
from fingerprint.interop.open_weights import OpenWeightsModel  # noqa: E402
from fingerprint.keys import FingerprintKey  # noqa: E402
from fingerprint.sim.distill import fingerprinted_responses  # noqa: E402
from fingerprint.tokenize import token_bytes_table  # noqa: E402
from fingerprint.verify import VerifyOptions, verify_evidence  # noqa: E402
from fingerprint.verify.distribution import distribution_evidence  # noqa: E402


def _train(model, tokens: np.ndarray, steps: int, seed: int) -> None:
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        starts = rng.integers(0, tokens.size - 65, size=16)
        batch = torch.from_numpy(np.stack([tokens[s:s + 64] for s in starts]))
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def suspect_dir(tiny_gpt2, tmp_path_factory):
    """The innocent tiny GPT-2 (trained on the teacher's corpus, never on fingerprinted text),
    saved without a tokenizer: its ids are the owner's."""
    d = tmp_path_factory.mktemp("suspect")
    tiny_gpt2.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def reference_dir(teacher, tmp_path_factory):
    """A second, independently initialised and trained tiny GPT-2 (the owner's reference), saved
    with the owner's tokenizer.json (same bytes per id: read by ids)."""
    torch.manual_seed(1)
    cfg = transformers.GPT2Config(vocab_size=teacher.vocab_size, n_positions=256, n_embd=64, n_layer=2, n_head=2,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    _train(model, teacher.tokens, 10, seed=1)
    d = tmp_path_factory.mktemp("reference")
    model.save_pretrained(d)
    shutil.copy(teacher.tokenizer.source, d / "tokenizer.json")
    return d


@pytest.fixture(scope="module")
def fed(teacher):
    """A greenlist key and the teacher's texts fingerprinted with it (what the owner served)."""
    key = FingerprintKey(bytes(range(40, 72)), "greenlist", {"delta": 3.0}, teacher.vocab_size)
    data = fingerprinted_responses(teacher, key.scheme_object(), 3000, rng=np.random.default_rng(5),
                                   response_tokens=100)
    return key, data.responses


def test_distributions_equal_a_direct_forward(tiny_gpt2, suspect_dir, teacher):
    texts = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i + 1]][:150] for i in range(200, 204)]
    model = OpenWeightsModel(suspect_dir)
    assert model.device == "cpu" and model.dtype == "float32" and model.bos is None
    reading = model.read(texts, teacher.tokenizer, top_k=8)
    assert reading.mapping == "assumed ids" and reading.counts["unmapped_candidates"] == 0
    short = OpenWeightsModel(suspect_dir, max_length=32).read(texts[:1], teacher.tokenizer, top_k=8)
    for t, pd in zip(texts, reading.distributions):
        with torch.no_grad():
            lp = torch.log_softmax(tiny_gpt2(torch.from_numpy(t[None])).logits[0].float(), -1).numpy()
        assert (pd.candidates[0] == -1).all()  # no prediction without a context
        np.testing.assert_array_equal(pd.candidates[1:, 0], lp[:-1].argmax(axis=1))
        np.testing.assert_allclose(pd.probs[1:, 0], np.exp(lp[:-1].max(axis=1)), rtol=1e-5)
        top8 = np.sort(np.exp(lp[:-1]), axis=1)[:, ::-1][:, :8]
        np.testing.assert_allclose(pd.probs[1:], top8, rtol=1e-5)
    # a text longer than the window is read in overlapping windows: the first window's
    # predictions are the full forward's, later ones see at least half a window of context
    np.testing.assert_array_equal(short.distributions[0].candidates[:32], reading.distributions[0].candidates[:32])
    assert (short.distributions[0].candidates[1:, 0] >= 0).all()


def test_innocent_model_is_valid_under_1000_decoys_and_not_detected(suspect_dir, reference_dir, teacher, fed):
    key, texts = fed
    suspect = OpenWeightsModel(suspect_dir)
    reference = OpenWeightsModel(reference_dir)
    scheme = key.scheme_object()
    h = scheme.context_width
    plain = suspect.read(texts, teacher.tokenizer, top_k=8)
    with_ref = suspect.read(texts, teacher.tokenizer, top_k=8, reference=reference)
    assert with_ref.reference_mapping == "ids"
    # the reference's probabilities are its own model's, gathered for the suspect's candidates
    pd, rd = with_ref.distributions[0], plain.distributions[0]
    np.testing.assert_array_equal(pd.candidates, rd.candidates)
    assert pd.reference_probs is not None and np.isfinite(pd.reference_probs[1:]).all()
    assert not np.allclose(pd.reference_probs[1:], pd.probs[1:])
    # several references: their mean probability of each candidate (here the suspect itself and
    # the reference, so the mean of the two readings' probabilities)
    both = suspect.read(texts[:3], teacher.tokenizer, top_k=8, reference=[reference, suspect])
    one = suspect.read(texts[:3], teacher.tokenizer, top_k=8, reference=reference)
    for b, o in zip(both.distributions, one.distributions):
        assert b.reference_probs is not None and o.reference_probs is not None
        np.testing.assert_allclose(b.reference_probs[1:], (o.reference_probs[1:] + o.probs[1:]) / 2, rtol=1e-5)
    # the suspect's own reading (no tokenizer in its checkpoint: "assumed ids") differs from the
    # reference's ("ids"), so the references' mapping is reported as mixed
    assert both.reference_mapping == ("ids" if one.mapping == "ids" else "mixed")
    assert both.counts["reference_unaligned_positions"] == 2 * one.counts["reference_unaligned_positions"]
    decoys = key.decoys(1000, seed=17)
    u = np.random.default_rng(3).random(len(decoys))
    for reading in (plain, with_ref):
        ev = distribution_evidence(reading.distributions, context_width=h, vocab_size=teacher.vocab_size)
        assert len(ev) > 10_000 and ev.counts.dropped["pair_in_fed_text"] > 0
        null = scheme.null(len(ev), weights=ev.weights)
        # sum(scores * weights), not a BLAS dot: 1,000 tiny BLAS calls next to torch's idle threads are slow
        totals = np.array([(d.scheme_object().scores_of_blocks(ev.blocks) * ev.weights).sum() for d in decoys])
        p = null.randomized_pvalues(totals, u)
        assert stats.kstest(p, "uniform").pvalue > 1e-3
        lo, hi = stats.binom.interval(0.999, p.size, 0.01)
        assert lo <= (p <= 0.01).sum() <= hi
        lo, hi = stats.binom.interval(0.999, p.size, 0.05)
        assert lo <= (p <= 0.05).sum() <= hi
        # the key whose fingerprinted texts were fed: the innocent model is not detected
        res = verify_evidence(ev, key, options=VerifyOptions(mode="reading", n_decoys=0)).results[0]
        assert res.test.log10_pvalue > -3


def test_cli_reads_a_checkpoint_and_writes_a_reading_report(suspect_dir, reference_dir, teacher, fed, tmp_path,
                                                           capsys):
    key, texts = fed
    key_path = key.save(tmp_path / "key.json")
    feed = tmp_path / "fed.jsonl"
    feed.write_text("".join(json.dumps({"id": f"r{i}", "prompt": "", "response": teacher.tokenizer.decode(t)}) + "\n"
                            for i, t in enumerate(texts[:12])))
    out = tmp_path / "report.json"
    base = ["verify", str(feed), "--key", str(key_path), "--tokenizer", teacher.tokenizer.source, "--quiet"]
    assert main([*base, "--mode", "reading", "--suspect-model", str(suspect_dir), "--reference-model",
                 str(reference_dir), "--reference-model", str(reference_dir), "--top-k", "16", "--decoys", "20",
                 "--window-weights", "sqrt-exposure", "--window-aggregate", "mean", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["results"][0]["mode"] == "reading" and doc["n_texts"] == 12
    notes = " ".join(doc["notes"])
    assert str(suspect_dir) in notes and str(reference_dir) in notes and "sha256" in notes and "top 16" in notes
    assert "window weights: sqrt-exposure" in notes and "windows read: mean" in notes
    assert "2 reference models" in notes and "the references' mean" in notes
    assert doc["results"][0]["verdict"] != "detected"
    capsys.readouterr()
    # the flags belong to --mode reading, and --reference-model / --top-k to --suspect-model
    assert main([*base, "--suspect-model", str(suspect_dir)]) == 2
    assert main([*base, "--mode", "reading", "--reference-model", str(reference_dir)]) == 2
    assert main([*base, "--mode", "reading", "--window-weights", "entropy"]) == 2
    assert main([*base, "--mode", "reading", "--suspect-model", str(tmp_path)]) == 2  # not a checkpoint
    err = capsys.readouterr().err
    assert "--mode reading" in err and "--suspect-model DIR" in err and "config.json" in err


def test_a_suspect_with_its_own_tokenizer_is_read_through_bytes(teacher, fed, suspect_dir, tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())  # another BPE: 1,500 ids learnt from a slice of the corpus
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(teacher.paragraphs[:3000], trainer=trainers.BpeTrainer(
        vocab_size=1500, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    torch.manual_seed(2)  # untrained: its top candidates reach tokens the owner's vocabulary lacks
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=1500, n_positions=512, n_embd=32,
                                                                 n_layer=1, n_head=2, bos_token_id=0,
                                                                 eos_token_id=0)).eval()
    d = tmp_path / "other"
    model.save_pretrained(d)
    tok.save(str(d / "tokenizer.json"))
    key, texts = fed
    strings = [teacher.tokenizer.decode(t) for t in texts[:20]]
    other = OpenWeightsModel(d)
    reading = other.read(strings, teacher.tokenizer, top_k=16)
    c = reading.counts
    assert reading.mapping == "bytes"
    assert c["unaligned_positions"] > 0 and c["unmapped_candidates"] > 0 and c["texts_not_byte_exact"] == 0
    assert c["unaligned_positions"] < c["positions"] // 2
    assert any("unaligned" in n and "unmapped" in n for n in reading.notes())
    # an aligned position's candidates are the owner ids with the model's tokens' bytes
    tb = other.token_bytes() or []
    owner_table = token_bytes_table(teacher.tokenizer)
    owner_bytes = {b: i for i, b in reversed(list(enumerate(owner_table)))}

    def starts(table, ids):
        return np.concatenate(([0], np.cumsum([len(table[int(i)]) for i in ids])[:-1]))

    own = [np.array(tok.encode(s).ids) for s in strings]
    aligned = [np.isin(starts(owner_table, pd.tokens), starts(tb, o)) for pd, o in zip(reading.distributions, own)]
    ti = next(t for t, a in enumerate(aligned) if not a.all())  # a text with unaligned positions
    pd = reading.distributions[ti]
    assert (pd.candidates[~aligned[ti]] == -1).all() and (pd.probs[~aligned[ti]] == 0).all()
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.from_numpy(own[ti][None])).logits[0], -1).numpy()
    m_starts, o_starts = starts(tb, own[ti]), starts(owner_table, pd.tokens)
    checked = 0
    for j in np.flatnonzero(aligned[ti])[1:]:
        i = int(np.flatnonzero(m_starts == o_starts[j])[0])
        top = int(lp[i - 1].argmax())
        assert pd.candidates[j, 0] == owner_bytes.get(tb[top], -1)
        if pd.candidates[j, 0] >= 0:
            np.testing.assert_allclose(pd.probs[j, 0], np.exp(lp[i - 1].max()), rtol=1e-5)
            checked += 1
    assert checked > 10
    ev = distribution_evidence(reading.distributions, context_width=key.scheme_object().context_width,
                               vocab_size=teacher.vocab_size)
    assert len(ev) > 1000
    res = verify_evidence(ev, key, options=VerifyOptions(mode="reading", n_decoys=0)).results[0]
    assert np.isfinite(res.test.log10_pvalue)
    # as a reference for the (same-vocabulary) suspect: gathered through bytes at its own positions
    ref = OpenWeightsModel(suspect_dir).read(strings, teacher.tokenizer, top_k=16, reference=other)
    assert ref.reference_mapping == "bytes"
    assert ref.counts["reference_unaligned_positions"] == c["unaligned_positions"]
    assert ref.counts["reference_unmapped_candidates"] > 0
    rp = ref.distributions[ti].reference_probs
    assert rp is not None and np.isnan(rp[~aligned[ti]]).all() and np.isfinite(rp[aligned[ti]]).all()
