"""The verify pipeline on bad and borderline input: every failure is a ``FingerprintError``, and
too little data gives ``insufficient data`` (never a bare ``not detected``, never a traceback)."""

from __future__ import annotations

import hashlib
import json
import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fingerprint
from fingerprint import FingerprintError, FingerprintKey, VerifyOptions, VerifyResult
from fingerprint.cli import main

SCHEME_NAMES = ["greenlist", "gumbel", "tournament", "hf-kgw", "hf-synthid"]
VOCABS = [64, 130, 300]

_KEYS: dict[tuple[str, int], FingerprintKey] = {}


def key_for(scheme: str, vocab: int) -> FingerprintKey:
    """One fixed key per (scheme, vocabulary): the schemes' per-secret tables stay cached."""
    if (scheme, vocab) not in _KEYS:
        params = {"depth": 8} if scheme == "hf-synthid" else {}
        size = 64 if scheme == "hf-synthid" else 32
        secret = hashlib.shake_256(f"test_pipeline_errors:{scheme}".encode()).digest(size)
        _KEYS[scheme, vocab] = FingerprintKey(secret, scheme, params, vocab)
    return _KEYS[scheme, vocab]


# ---- inputs ----------------------------------------------------------------------------------------

def one_text(vocab: int):
    """One response: mostly valid ids, sometimes bad ones (negative, >= vocab, floats, NaN, 2-D,
    Python lists, booleans, strings)."""
    ok = st.integers(0, vocab - 1)
    return st.one_of(
        st.lists(ok, max_size=25).map(lambda x: np.array(x, dtype=np.int64)),
        st.lists(ok, max_size=25).map(lambda x: np.array(x, dtype=np.int32)),
        st.lists(ok, max_size=25),  # a plain Python list
        st.sampled_from([np.zeros(0, np.int64), np.array([3]), np.array([vocab - 1])]),
        st.lists(st.integers(-3, vocab + 3), min_size=1, max_size=8).map(np.array),
        st.lists(st.integers(-2**63, 2**63 - 1), min_size=1, max_size=3).map(np.array),
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=4).map(np.array),
        st.lists(st.floats(0, vocab - 1), min_size=1, max_size=4),
        st.lists(ok, min_size=2, max_size=12).map(lambda x: np.array(x[:len(x) // 2 * 2]).reshape(2, -1)),
        st.sampled_from([np.array([True, False]), np.array(["a", "b"]), "abc", 7, None, [[1, 2], [3]]]),
    )


@st.composite
def layouts(draw, vocab: int, texts):
    """(tokens, offsets) as given to verify: a list of arrays, or flat ids with good or bad offsets."""
    choice = draw(st.sampled_from(["list", "list", "flat", "flat", "2d"]))
    if choice == "list":
        return texts, None
    arrays = []
    for t in texts:
        try:
            arrays.append(np.asarray(t))
        except ValueError:  # a ragged nested list
            continue
    try:
        flat = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0, np.int64)
    except (ValueError, TypeError):
        flat = np.zeros(0, np.int64)
    sizes = [a.size for a in arrays]
    good = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    if choice == "2d":
        return np.atleast_2d(flat), draw(st.sampled_from([None, good]))
    offsets = draw(st.sampled_from([
        "good", "good", "decreasing", "short_end", "long_end", "float", "2d", "empty", "start1", "none", "list",
    ]))
    if offsets == "good":
        off = good
    elif offsets == "decreasing":
        off = good[::-1].copy() if good.size > 1 else np.array([0, 1, 0])
    elif offsets == "short_end":
        off = np.append(good[:-1], max(0, flat.size - 1))
    elif offsets == "long_end":
        off = np.append(good, flat.size + 5)
    elif offsets == "float":
        off = good.astype(np.float64)
    elif offsets == "2d":
        off = np.stack([good, good])
    elif offsets == "empty":
        off = np.zeros(0, np.int64)
    elif offsets == "start1":
        off = good + 1
    elif offsets == "list":
        off = [int(x) for x in good]
    else:
        off = None
    return flat, off


def option_values():
    bad_real = st.sampled_from([0.0, 1.0, -0.5, 1.5, math.nan, math.inf, -math.inf, 0, 1, "0.01", None])
    return st.fixed_dictionaries({}, optional={
        "alpha": st.one_of(st.floats(1e-12, 0.5), bad_real),
        "n_decoys": st.sampled_from([0, 1, 2, 3, -1, -100, 100_001, 10**12, 2.5, math.nan, True, None, "3",
                                     np.int64(2)]),
        "decoy_seed": st.sampled_from([0, 1, 2**40, -1, 2.5, math.nan, None, np.int64(3)]),
        "prior_probability": st.one_of(st.floats(0.01, 0.99), bad_real),
        "effect_prior_max": st.sampled_from([None, 0.05, 0.3, 0.0, -1.0, math.nan, math.inf, "x"]),
        "ks_threshold": st.sampled_from([0.001, 0.5, 0.0, 1.0, math.nan, -1.0, None, "x"]),
        "trajectory_points": st.sampled_from([2, 5, 40, 1, 0, -3, 2.5, math.nan, None, "x"]),
        "confidence_level": st.sampled_from([0.95, 0.5, 0.0, 1.0, math.nan, 2.0, None, "x"]),
        "mode": st.sampled_from(["text", "logprobs", "reading", "bogus", None]),
    })


@st.composite
def verify_calls(draw):
    """Arguments of one ``fingerprint.verify`` call. Half the calls are sane (valid ids, matching prompts,
    valid options) so that the statistics run; the others mix in bad ids, layouts, prompts and options."""
    scheme = draw(st.sampled_from(SCHEME_NAMES), label="scheme")
    vocab = draw(st.sampled_from(VOCABS), label="vocab")
    sane = draw(st.booleans(), label="sane")
    n = draw(st.integers(0, 5), label="n_texts")
    if sane:
        long_ = draw(st.integers(0, 4), label="long") == 0  # sometimes enough tokens for 'not detected'
        text = st.integers(0, 30).map(lambda k: k + (600 if long_ else 0)).flatmap(
            lambda k: st.lists(st.integers(0, vocab - 1), min_size=k, max_size=k)).map(
            lambda x: np.array(x, dtype=np.int64))
    else:
        text = one_text(vocab)
    texts = [draw(text) for _ in range(n)]
    tokens, offsets = (texts, None) if sane else draw(layouts(vocab, texts))
    kwargs = {}
    prompts = draw(st.sampled_from(["none", "matching", "matching", "matching"] if sane else
                                   ["none", "matching", "matching", "fewer", "more", "flat"]), label="prompts")
    if prompts != "none":
        count = {"matching": n, "fewer": max(0, n - 1), "more": n + 1, "flat": n}[prompts]
        ptexts = []
        for i in range(count):
            if i < n and draw(st.booleans()) and isinstance(texts[i], np.ndarray) and texts[i].ndim == 1:
                a = draw(st.integers(0, texts[i].size))  # a slice of the response: prompt exclusion bites
                ptexts.append(np.asarray(texts[i][a:a + draw(st.integers(0, 6))]))
            else:
                ptexts.append(draw(st.lists(st.integers(0, vocab - 1), max_size=8).map(np.array) if sane
                                   else one_text(vocab)))
        if prompts == "flat":
            p_tokens, p_offsets = draw(layouts(vocab, ptexts))
            kwargs.update(prompt_tokens=p_tokens, prompt_offsets=p_offsets)
        else:
            kwargs["prompt_tokens"] = ptexts
    if draw(st.integers(0, 5), label="text_ids") == 0:
        kwargs["text_ids"] = [f"t{i}" for i in range(n if sane else draw(st.integers(0, n + 1)))]
    if sane:
        options = {"n_decoys": draw(st.sampled_from([0, 1, 3]))}
        if draw(st.booleans()):
            options["alpha"] = draw(st.floats(1e-9, 0.2))
    else:
        options = draw(option_values(), label="options")
    key = key_for(scheme, vocab)
    keys = draw(st.sampled_from([key] * 6 + [[key], [key, key_for("greenlist", vocab)], [], "key"]), label="keys")
    return dict(tokens=tokens, offsets=offsets, keys=keys, options=options, **kwargs)


def describe(call) -> str:
    def short(x):
        if isinstance(x, np.ndarray):
            return f"array(shape={x.shape}, dtype={x.dtype}, {x.ravel()[:8].tolist()})"
        if isinstance(x, list):
            return "[" + ", ".join(short(v) for v in x[:6]) + (", ..." if len(x) > 6 else "") + "]"
        if isinstance(x, FingerprintKey):
            return f"Key({x.scheme}, V={x.vocab_size})"
        return repr(x)
    return ", ".join(f"{k}={short(v)}" for k, v in call.items())


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(call=verify_calls())
def test_verify_returns_a_result_or_raises_a_fingerprint_error(call):
    options = VerifyOptions(**call["options"])
    try:
        result = fingerprint.verify(call["tokens"], call["offsets"], keys=call["keys"],
                                    prompt_tokens=call.get("prompt_tokens"),
                                    prompt_offsets=call.get("prompt_offsets"), text_ids=call.get("text_ids"),
                                    options=options)
    except FingerprintError as exc:
        assert str(exc), "an error must say what was wrong"
        return
    except Exception as exc:  # anything else is a bug
        pytest.fail(f"{type(exc).__name__}: {exc}\n  escaped fingerprint.verify({describe(call)}, "
                    f"options={options})")
    assert isinstance(result, VerifyResult)
    assert result.verdict in fingerprint.VERDICTS
    for r in result.results:
        assert r.verdict in fingerprint.VERDICTS
        assert r.test.log10_pvalue <= 0.0
        assert r.counts.scored >= 0
        if r.counts.scored == 0:
            assert r.verdict == "insufficient data"
        assert r.verdict != "not detected" or r.sufficiency.sufficient


@pytest.mark.parametrize("texts", [
    [np.array([1, 2, 3]), np.zeros((2, 2), dtype=np.int64)],
    [[1, None, 3]],
    [[1, 2**70, 3]],
    ["abc"],
    [np.array([0.7, 1.9, 2.2, 3.5, 4.1, 5.9])],
], ids=["mixed-ndim", "None", "huge-int", "string", "floats"])
def test_list_of_texts_is_validated_like_flat_ids(texts):
    key = key_for("greenlist", 64)
    with pytest.raises(fingerprint.TokenError):
        fingerprint.verify(texts, keys=key, options=VerifyOptions(n_decoys=0))


def test_float_ids_in_a_flat_array_raise_token_error():
    key = key_for("greenlist", 64)
    with pytest.raises(fingerprint.TokenError, match="integer"):
        fingerprint.verify(np.array([0.7, 1.9, 2.2]), np.array([0, 3]), keys=key, options=VerifyOptions(n_decoys=0))


@pytest.mark.parametrize("options", [dict(ks_threshold=None), dict(confidence_level="x"),
                                     dict(trajectory_points=None)], ids=["ks-None", "cl-str", "tp-None"])
def test_options_of_the_wrong_type_raise_parameter_error(options):
    with pytest.raises(fingerprint.ParameterError):
        VerifyOptions(**options).validate()


@pytest.mark.parametrize("points", [2.5, math.nan])
def test_non_integer_trajectory_points_raise_parameter_error(points):
    key = key_for("greenlist", 64)
    with pytest.raises(fingerprint.ParameterError):
        fingerprint.verify([np.arange(10)], keys=key, options=VerifyOptions(trajectory_points=points, n_decoys=0))


@pytest.mark.parametrize("options, match", [
    (dict(alpha=0.0), "alpha"), (dict(alpha=1.0), "alpha"), (dict(alpha=math.nan), "alpha"),
    (dict(alpha=-1e-6), "alpha"), (dict(n_decoys=-1), "decoys"), (dict(n_decoys=10**9), "decoys"),
    (dict(n_decoys=math.nan), "decoys"), (dict(n_decoys=2.5), "decoys"), (dict(decoy_seed=-1), "seed"),
    (dict(prior_probability=math.nan), "prior"), (dict(effect_prior_max=math.inf), "effect"),
    (dict(effect_prior_max=math.nan), "effect"), (dict(ks_threshold=math.nan), "KS"),
    (dict(confidence_level=math.nan), "confidence"), (dict(trajectory_points=1), "trajectory"),
    (dict(mode="bogus"), "mode"), (dict(mode="logprobs"), "verify_exchanges"),
])
def test_invalid_options_name_the_setting(options, match):
    key = key_for("greenlist", 64)
    with pytest.raises(fingerprint.ParameterError, match=match):
        fingerprint.verify([np.arange(10)], keys=key, options=VerifyOptions(**options))


# ---- too little data -------------------------------------------------------------------------------

def fingerprinted_text(key: FingerprintKey, n: int, seed: int = 1) -> np.ndarray:
    """``n`` ids sampled with the key's scheme from random logits (the README's loop)."""
    scheme = key.scheme_object()
    v = key.vocab_size
    rng = np.random.default_rng(seed)
    ids = list(rng.integers(0, v, size=max(scheme.context_width, 1)))
    while len(ids) < n:
        context = np.array([ids[len(ids) - scheme.context_width:]], dtype=np.int64)
        ids.append(int(scheme.sample(rng.normal(size=(1, v)), context, rng)[0]))
    return np.array(ids[:n], dtype=np.int64)


#: hf-synthid with 8 keys (a 64-byte secret: the test fixture's deterministic secrets stop at 64 bytes)
SMALL_PARAMS = {"hf-synthid": {"depth": 8}}

NEEDED = re.compile(r"about ([0-9][0-9,]*) are needed")


@pytest.mark.parametrize("scheme", ["greenlist", "hf-kgw"])
def test_twenty_fingerprinted_tokens_are_insufficient_data_with_the_tuples_needed(scheme):
    # a moderate bias (greenlist delta 1.5, hf-kgw's default 2.0): 20 tokens cannot reach alpha
    key = FingerprintKey.generate(scheme, vocab_size=1000, **({"delta": 1.5} if scheme == "greenlist" else {}))
    text = fingerprinted_text(key, 20)
    result = fingerprint.verify([text], keys=key, options=VerifyOptions(n_decoys=20))
    r = result.results[0]
    assert result.verdict == r.verdict == "insufficient data"
    assert 0 < r.counts.scored < 20
    assert r.test.log10_pvalue > math.log10(1e-6)
    assert not r.sufficiency.sufficient
    m = NEEDED.search(r.reason)
    assert m, r.reason
    needed = int(m.group(1).replace(",", ""))
    assert needed == r.sufficiency.items_needed > r.counts.scored
    assert f"{r.counts.scored:,} distinct tuples" in r.reason
    assert any("insufficient data" in note for note in result.notes)


@pytest.mark.parametrize("scheme", SCHEME_NAMES)
def test_short_fingerprinted_texts_are_never_a_bare_not_detected(scheme):
    key = FingerprintKey.generate(scheme, vocab_size=1000, **SMALL_PARAMS.get(scheme, {}))
    for n in (20, 3):
        r = fingerprint.verify([fingerprinted_text(key, n)], keys=key, options=VerifyOptions(n_decoys=10)).results[0]
        assert r.verdict in ("insufficient data", "detected"), (n, r.verdict, r.reason)
        if n == 3:  # a handful of tuples cannot reach alpha = 1e-6 under any scheme
            assert r.verdict == "insufficient data", r.reason
            assert "not enough" in r.reason and f"{r.counts.scored:,} distinct tuples" in r.reason


def test_three_tokens_name_the_tuples_needed():
    key = FingerprintKey.generate("greenlist", vocab_size=1000)  # h = 2: one tuple
    r = fingerprint.verify([fingerprinted_text(key, 3)], keys=key, options=VerifyOptions(n_decoys=5)).results[0]
    assert r.verdict == "insufficient data" and r.counts.scored == 1
    m = NEEDED.search(r.reason)
    assert m and int(m.group(1).replace(",", "")) > 1, r.reason


@pytest.mark.parametrize("scheme", SCHEME_NAMES)
def test_one_token_responses_are_insufficient_data(scheme):
    key = FingerprintKey.generate(scheme, vocab_size=300, **SMALL_PARAMS.get(scheme, {}))
    texts = [np.array([i % 300]) for i in range(50)]
    result = fingerprint.verify(texts, keys=key, prompt_tokens=[np.array([1, 2])] * 50,
                                options=VerifyOptions(n_decoys=5))
    r = result.results[0]
    assert result.verdict == r.verdict == "insufficient data"
    assert r.counts.scored == 0 and r.counts.tokens_read == 50
    assert r.test.log10_pvalue == 0.0
    assert r.responses.n_scored.tolist() == [0] * 50


def test_cli_one_token_responses_exit_0_with_insufficient_data(teacher, tmp_path, capsys):
    tok = teacher.tokenizer
    words = []
    for word in ("the", " the", " of", " and", " a", " to", " in", " is", "I", " it"):
        ids = tok.encode_batch([word])[0]
        if ids.size == 1:
            words.append(word)
    assert len(words) >= 3
    path = tmp_path / "one-token.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "prompt": "Say one word.", "response": words[i % len(words)]})
                            + "\n" for i in range(40)), encoding="utf-8")
    key_path = tmp_path / "k.json"
    assert main(["keygen", "--scheme", "greenlist", "--vocab-size", str(teacher.vocab_size),
                 "--out", str(key_path)]) == 0
    capsys.readouterr()
    rc = main(["verify", str(path), "--key", str(key_path), "--tokenizer", tok.source, "--decoys", "5", "-q"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "insufficient data" in out
    assert "verdict: insufficient data" in out
    assert "Traceback" not in out + err and "error" not in err
