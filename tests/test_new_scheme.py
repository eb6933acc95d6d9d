"""Adding a scheme touches one place: a scheme defined and registered in this file alone works
through keygen, key files, embedding, the CLI's verify (Holm, decoys, reports), the strength
metrics and the transformers adapter -- without any change to the library."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from fingerprint import FingerprintKey, ParameterError, VerifyOptions, read_exchanges, verify
from fingerprint.cli import main
from fingerprint.schemes import SCHEMES, Scheme, register_scheme
from fingerprint.schemes.base import apply_temperature_top_p, check_contexts, check_logits, sample_from_logp
from fingerprint.sim.generate import generate
from fingerprint.stats import BinomialNull, NullModel, WeightedBernoulliNull

NAME = "parity-test"


class ParityScheme(Scheme):
    """A (window, token) tuple is green when its keyed PRF value is even: exactly Bernoulli(1/2)
    under H0. Embed: add ``delta`` to the logits of the green tokens. Parameters
    ``context_width`` (default 2) and ``delta`` (default 3.0)."""

    name = NAME
    defaults = {"context_width": 2, "delta": 3.0}

    @classmethod
    def _validate(cls, params: dict[str, Any]) -> dict[str, Any]:
        delta = params["delta"]
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 <= delta < 1e6:
            raise ParameterError(f"delta must be a finite number >= 0, got {delta!r}")
        return {**params, "delta": float(delta)}

    @staticmethod
    def green(values: np.ndarray) -> np.ndarray:
        return (values & np.uint64(1)) == 0

    def _tuple_scores(self, values: np.ndarray) -> np.ndarray:
        return self.green(values).astype(np.int8)

    def null(self, n_items: int, *, blocks: np.ndarray | None = None,
             weights: np.ndarray | None = None) -> NullModel:
        if weights is not None:
            return WeightedBernoulliNull(weights, 0.5)
        return BinomialNull(n_items, 0.5)

    def bias_logits(self, logits: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        logits = check_logits(logits, self.vocab_size)
        contexts, full = check_contexts(contexts, logits.shape[0], self.context_width, self.vocab_size)
        return logits + self.params["delta"] * (self.green(self._row_values(contexts)) & full[:, None])

    def warp_logits(self, logits: np.ndarray, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.bias_logits(logits, contexts)

    def sample(self, logits: np.ndarray, contexts: np.ndarray, rng: np.random.Generator, *,
               temperature: float = 1.0, top_p: float = 1.0) -> np.ndarray:
        logp = apply_temperature_top_p(check_logits(logits, self.vocab_size), temperature, top_p)
        return sample_from_logp(self.bias_logits(logp, contexts), rng)


@pytest.fixture(scope="module")
def registered():
    assert NAME not in SCHEMES
    register_scheme(ParityScheme)
    try:
        yield ParityScheme
    finally:
        SCHEMES.pop(NAME, None)
    assert NAME not in SCHEMES


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("new-scheme")


@pytest.fixture(scope="module")
def prompts(teacher):
    idx = range(0, teacher.offsets.size - 1, (teacher.offsets.size - 1) // 60)
    return [teacher.tokens[teacher.offsets[i]:teacher.offsets[i] + 12] for i in idx][:60]


def keygen(workdir, teacher, name: str, *extra: str):
    path = workdir / name
    assert main(["keygen", "--scheme", NAME, "--vocab-size", str(teacher.vocab_size), "--out", str(path),
                 *extra]) == 0
    return path


@pytest.fixture(scope="module")
def keys(registered, workdir, teacher):
    """Two keys made by the CLI (flag and --param paths), loaded back from their files."""
    # the module-scoped fixture runs outside the per-test deterministic secrets: fine, any key works
    main_path = keygen(workdir, teacher, "parity.key.json", "--delta", "4.0")
    other_path = keygen(workdir, teacher, "parity2.key.json", "--param", "delta=2.5", "--context-width", "1")
    return main_path, other_path


def write_exchanges(path, teacher, prompts, responses):
    dec = teacher.tokenizer.decode
    path.write_text("".join(json.dumps({"id": f"r{i}", "prompt": dec(p), "response": dec(r)}) + "\n"
                            for i, (p, r) in enumerate(zip(prompts, responses))), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpora(keys, teacher, prompts, workdir):
    key = FingerprintKey.load(keys[0])
    rng = np.random.default_rng(7)
    marked = generate(teacher.model, prompts, 60, rng, scheme=key.scheme_object())
    plain = generate(teacher.model, prompts, 60, rng)
    return (write_exchanges(workdir / "marked.jsonl", teacher, prompts, marked),
            write_exchanges(workdir / "plain.jsonl", teacher, prompts, plain), marked, plain)


def test_keygen_and_key_files(keys, teacher, capsys):
    a, b = (FingerprintKey.load(p) for p in keys)
    assert (a.scheme, b.scheme) == (NAME, NAME)
    assert a.params == {"context_width": 2, "delta": 4.0}
    assert b.params == {"context_width": 1, "delta": 2.5}
    assert a.vocab_size == b.vocab_size == teacher.vocab_size and a.key_id != b.key_id
    scheme = a.scheme_object()
    assert isinstance(scheme, ParityScheme) and scheme.context_width == 2
    # the parser lists the new scheme and rejects parameters it does not have
    assert main(["keygen", "--scheme", NAME, "--vocab-size", "100", "--out", str(keys[0].parent / "x.json"),
                 "--gamma", "0.3"]) == 2
    assert "does not apply" in capsys.readouterr().err
    assert main(["keygen", "--scheme", NAME, "--vocab-size", "100", "--out", str(keys[0].parent / "y.json"),
                 "--param", "delta=-1"]) == 2
    assert "delta" in capsys.readouterr().err


def test_embedded_text_is_green_and_plain_text_is_not(keys, corpora):
    key = FingerprintKey.load(keys[0])
    *_, marked, plain = corpora
    r = verify(marked, keys=key, options=VerifyOptions(n_decoys=10)).results[0]
    assert r.verdict == "detected" and r.test.test == "binomial" and r.test.null_rate == 0.5
    assert r.test.effect.value > 0.15
    n = verify(plain, keys=key, options=VerifyOptions(n_decoys=10)).results[0]
    assert n.verdict == "not detected" and abs(n.test.effect.value) < 0.05


def run_cli_verify(path, keys, teacher, out, capsys):
    rc = main(["verify", str(path), "--key", str(keys[0]), "--key", str(keys[1]), "--tokenizer",
               teacher.tokenizer.source, "--decoys", "30", "-q", "--json", f"{out}.json", "--markdown", f"{out}.md",
               "--html", f"{out}.html"])
    stdout, stderr = capsys.readouterr()
    assert rc == 0, stderr
    doc = json.loads(open(f"{out}.json", encoding="utf-8").read())
    md = open(f"{out}.md", encoding="utf-8").read()
    html = open(f"{out}.html", encoding="utf-8").read()
    return stdout, doc, md, html


def test_cli_verify_with_two_keys_decoys_and_reports(keys, corpora, teacher, workdir, capsys):
    marked_file, plain_file, *_ = corpora
    stdout, doc, md, html = run_cli_verify(marked_file, keys, teacher, workdir / "marked-report", capsys)
    assert doc["verdict"] == "detected" and "verdict: detected" in stdout
    assert doc["holm_applied"] is True and "Holm" in stdout
    first, second = doc["results"]
    assert first["scheme"] == second["scheme"] == NAME
    assert first["verdict"] == "detected" and second["verdict"] == "not detected"
    assert first["holm_log10_pvalue"] >= first["log10_pvalue"] and first["log10_pvalue"] < -10
    for r in doc["results"]:
        assert r["decoys"]["k"] == 30 and r["decoys"]["passed"] is True
        assert r["test"] == "binomial" and r["null_rate"] == 0.5
    for text in (stdout, md, html):
        assert NAME in text
    secrets = [json.loads(open(k, encoding="utf-8").read())["secret"] for k in keys]
    for text in (json.dumps(doc), md, html):
        assert not any(s in text for s in secrets)

    stdout, doc, md, html = run_cli_verify(plain_file, keys, teacher, workdir / "plain-report", capsys)
    assert doc["verdict"] == "not detected" and "verdict: not detected" in stdout
    for r in doc["results"]:
        assert r["verdict"] == "not detected" and r["decoys"]["passed"] is True and r["scheme"] == NAME
    assert NAME in md and NAME in html


def test_strength_metrics(keys, corpora, teacher):
    from fingerprint.strength import measure_strength

    key = FingerprintKey.load(keys[0])
    marked_file, plain_file, *_ = corpora
    m = measure_strength(read_exchanges([marked_file]), teacher.tokenizer, key, radioactivity=None)
    assert m.scheme == NAME and m.key_id == key.key_id
    assert m.radioactivity_log10_pvalue is None
    assert m.n_responses == 60 and m.n_scored > 2000
    assert m.effect > 0.3 and m.effect_ci_low > 0.25 and m.log10_pvalue < -100
    assert m.unmarked_share < 0.1 and m.detectable_share > 0.8 and np.isfinite(m.tokens_to_detect_median)
    p = measure_strength(read_exchanges([plain_file]), teacher.tokenizer, key)
    assert abs(p.effect) < 0.05 and p.log10_pvalue > -6
    assert p.unmarked_share > 0.5 and p.detectable_share == 0.0 and not np.isfinite(p.tokens_to_detect_median)


def test_transformers_adapter_applies_warp_logits(keys, teacher):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from fingerprint.interop.hf import FingerprintLogitsProcessor

    key = FingerprintKey.load(keys[0])
    scheme = key.scheme_object()
    v = key.vocab_size
    rng = np.random.default_rng(3)
    scores = torch.from_numpy(rng.normal(size=(3, v)).astype(np.float32))
    ids = torch.from_numpy(rng.integers(0, v, size=(3, 6)))
    processor = FingerprintLogitsProcessor(key, seed=0)
    out = processor(ids, scores.clone()).numpy()
    expected = scheme.warp_logits(scores.numpy().astype(np.float64), ids.numpy()[:, -2:], rng)
    assert np.allclose(out, expected, atol=1e-5)
    diff = out - scores.numpy()
    green = np.stack([scheme.tuple_scores(np.repeat(row[None, -2:], v, axis=0), np.arange(v)) == 1
                      for row in ids.numpy()])
    assert np.allclose(diff[green], 4.0, atol=1e-5) and np.allclose(diff[~green], 0.0)
    assert 0.4 < green.mean() < 0.6
    # fewer than h tokens so far: rows are left as they are
    short = processor(ids[:, :1], scores.clone()).numpy()
    assert np.array_equal(short, scores.numpy())
    # a processor built from the scheme object itself does the same
    assert np.allclose(FingerprintLogitsProcessor(scheme)(ids, scores.clone()).numpy(), out)
    with pytest.raises(ParameterError):
        processor(ids, scores[:, :-1].clone())


def test_unregistered_name_is_unknown_after_the_module(registered):
    """While registered the name resolves; the fixture's finalizer removes it (checked there)."""
    assert SCHEMES[NAME] is ParityScheme
    with pytest.raises(ParameterError, match="already registered"):
        register_scheme(type("Other", (ParityScheme,), {}))
