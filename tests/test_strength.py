"""`fingerprint strength`: the CI guard passes a fingerprinted release and flags regressions."""

from __future__ import annotations

import ast
import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import fingerprint.strength as strength_module
from fingerprint.cli import build_parser
from fingerprint.corpus import read_exchanges
from fingerprint.errors import ParameterError
from fingerprint.keys import FingerprintKey
from fingerprint.report import format_pvalue, render_strength_junit, render_strength_markdown
from fingerprint.sim.distill import corpus_prompts
from fingerprint.sim.generate import generate
from fingerprint.stats import BinomialNull, GammaNull, WeightedBernoulliNull
from fingerprint.strength import Thresholds, evaluate, measure_strength
from fingerprint.verify import VerifyOptions, verify


@pytest.fixture(scope="module")
def release(teacher, tmp_path_factory):
    d = tmp_path_factory.mktemp("strength")
    # A fixed secret: the proxy's log10 p varies with the key (over 12 keys at this release size:
    # -6.96 to -14.41, median -10.7; one OS-drawn key gave -4.98), and a test must not depend on the draw.
    secret = bytes(range(1, 33))
    key = FingerprintKey(secret, "greenlist", {"context_width": 2, "gamma": 0.25, "delta": 3.0}, teacher.vocab_size)
    key_path = key.save(d / "key.json")
    halved = FingerprintKey(secret, "greenlist", {"context_width": 2, "gamma": 0.25, "delta": 1.5},
                            teacher.vocab_size)
    rng = np.random.default_rng(0)
    prompts, _ = corpus_prompts(teacher, 250, length=12, rng=rng)
    outs = {"fingerprinted": generate(teacher.model, prompts, 120, rng, scheme=key.scheme_object(), batch_size=250),
            "halved": generate(teacher.model, prompts, 120, rng, scheme=halved.scheme_object(), batch_size=250),
            "plain": generate(teacher.model, prompts, 120, rng, batch_size=250)}
    outs["bypassed"] = [p if i % 10 < 3 else f for i, (f, p) in enumerate(zip(outs["fingerprinted"], outs["plain"]))]
    files = {}
    for name, answers in outs.items():
        path = d / f"{name}.jsonl"
        with open(path, "w") as fh:
            for i, (p, a) in enumerate(zip(prompts, answers)):
                fh.write(json.dumps({"id": i, "prompt": teacher.tokenizer.decode(p),
                                     "response": teacher.tokenizer.decode(a)}) + "\n")
        files[name] = path
    return d, key_path, files, teacher.tokenizer.source


def strength(release, name, *extra):
    d, key_path, files, tok = release
    return subprocess.run([sys.executable, "-m", "fingerprint.cli", "strength", str(files[name]), "--key",
                           str(key_path), "--tokenizer", tok, "--quiet", *map(str, extra)],
                          capture_output=True, text=True, timeout=600)


def test_fingerprinted_release_passes_with_the_distillation_proxy(release):
    d = release[0]
    res = strength(release, "fingerprinted", "--json", d / "fp.json", "--junit", d / "fp.xml",
                   "--markdown", d / "fp.md")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads((d / "fp.json").read_text())
    m = doc["metrics"]
    assert doc["passed"] and m["detectable_share"] > 0.9 and m["unmarked_share"] < 0.02
    assert m["radioactivity_log10_pvalue"] < -6
    assert m["tokens_to_detect_p10"] <= m["tokens_to_detect_median"] <= m["tokens_to_detect_p90"] < 120
    suite = ET.parse(d / "fp.xml").getroot()
    assert suite.get("failures") == "0" and int(suite.get("tests")) == len(doc["checks"]) >= 5
    md = (d / "fp.md").read_text()
    assert "PASS" in md and m["radioactivity_rho"] == 0.05
    # the log10 p-value metrics carry their p-value, formatted as in every report
    assert f"(p = {format_pvalue(m['log10_pvalue'])})" in md
    assert f"(p = {format_pvalue(m['radioactivity_log10_pvalue'])})" in md


def test_unfingerprinted_release_fails_naming_the_metrics(release):
    d = release[0]
    res = strength(release, "plain", "--no-radioactivity", "--junit", d / "plain.xml")
    assert res.returncode == 1
    for metric in ("effect_ci_low", "tokens_to_detect_median", "detectable_share", "unmarked_share"):
        assert f"[FAIL] {metric} = " in res.stdout, metric
    suite = ET.parse(d / "plain.xml").getroot()
    assert int(suite.get("failures")) == 4


def test_halved_delta_fails_model_thresholds_and_baseline(release):
    d = release[0]
    config = d / "strength.toml"
    config.write_text("[thresholds]\nmax_tokens_to_detect_median = 40\nmin_effect_ci_low = 0.4\n"
                      "[tolerances]\neffect_relative_drop = 0.1\n")
    base = strength(release, "fingerprinted", "--no-radioactivity", "--config", config, "--json", d / "base.json")
    assert base.returncode == 0, base.stdout
    res = strength(release, "halved", "--no-radioactivity", "--config", config)
    assert res.returncode == 1
    assert "[FAIL] tokens_to_detect_median = " in res.stdout and "[FAIL] effect_ci_low = " in res.stdout
    res = strength(release, "halved", "--no-radioactivity", "--baseline", d / "base.json")
    assert res.returncode == 1
    assert "[FAIL] effect = " in res.stdout and "baseline limit" in res.stdout
    assert "[FAIL] tokens_to_detect_median = " in res.stdout


def test_bypassed_decoding_path_shows_as_unmarked_share(release):
    d = release[0]
    res = strength(release, "bypassed", "--no-radioactivity", "--json", d / "bypass.json")
    m = json.loads((d / "bypass.json").read_text())["metrics"]
    assert 0.2 < m["unmarked_share"] < 0.4
    assert res.returncode == 1 and "[FAIL] unmarked_share" in res.stdout


def test_deterministic_under_a_fixed_seed(release):
    d = release[0]
    a = strength(release, "halved", "--seed", 3, "--json", d / "a.json", "--radioactivity-tokens", 10000)
    b = strength(release, "halved", "--seed", 3, "--json", d / "b.json", "--radioactivity-tokens", 10000)
    assert json.loads((d / "a.json").read_text()) == json.loads((d / "b.json").read_text())
    assert a.stdout == b.stdout


def test_bad_config_exits_2(release):
    d = release[0]
    bad = d / "bad.toml"
    bad.write_text("[thresholds]\nmax_median = 3\n")
    res = strength(release, "plain", "--no-radioactivity", "--config", bad)
    assert res.returncode == 2 and "[thresholds] max_median: unknown setting" in res.stderr


# ---- the library API -------------------------------------------------------------------------

def _fingerprint_imports(path: Path) -> list[str]:
    """Modules of the ``fingerprint`` package a source file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = "fingerprint"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == package]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package if node.level == 1 else None  # strength.py sits in the package root
                assert base is not None, f"unexpected import level {node.level}"
                mod = f"{base}.{node.module}" if node.module else base
                out += [mod] if node.module else [f"{base}.{a.name}" for a in node.names]
            elif node.module and node.module.split(".")[0] == package:
                out.append(node.module)
    return out


def test_strength_imports_neither_sim_nor_apps():
    path = Path(strength_module.__file__)
    imported = _fingerprint_imports(path)
    assert "fingerprint.verify" in imported and "fingerprint.stats" in imported  # the parser sees them
    bad = [m for m in imported if m.split(".")[:2] in (["fingerprint", "sim"], ["fingerprint", "apps"])]
    assert bad == []
    assert "scheme.name" not in path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def fingerprinted(release):
    d, key_path, files, tok = release
    from fingerprint.tokenize import load_tokenizer

    return (read_exchanges([files["fingerprinted"]], require_prompt=False), load_tokenizer(tok),
            FingerprintKey.load(key_path))


class _Proxy:
    """A stand-in distillation proxy that records what it was given."""

    rho = 0.2
    seed = 7
    description = "stand-in"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, key, tokens, offsets) -> float:
        self.calls.append((key.key_id, int(tokens.size), int(offsets.size)))
        return -12.5


def test_measure_strength_uses_the_pipeline_and_the_given_proxy(fingerprinted):
    responses, tokenizer, key = fingerprinted
    proxy = _Proxy()
    m = measure_strength(responses, tokenizer, key, radioactivity=proxy)
    tokens, offsets = tokenizer.encode_batch(responses.responses)
    assert proxy.calls == [(key.key_id, tokens.size, len(responses.exchanges) + 1)]
    assert (m.radioactivity_log10_pvalue, m.radioactivity_rho, m.seed) == (-12.5, 0.2, 7)
    p_tokens, p_offsets = tokenizer.encode_batch(responses.prompts)
    ref = verify(tokens, offsets, keys=key, prompt_tokens=p_tokens, prompt_offsets=p_offsets,
                 options=VerifyOptions(n_decoys=0)).results[0]
    assert m.log10_pvalue == ref.test.log10_pvalue < -100
    assert m.n_scored == ref.counts.scored and m.effect == ref.test.effect.value
    # delta = 3 at gamma = 0.25 puts the green rate near 0.7: an excess far above the 0.05 threshold
    assert 0.3 < m.effect_ci_low < m.effect < m.effect_ci_high < 0.6
    assert m.detectable_share > 0.9 and m.unmarked_share < 0.02
    skipped = measure_strength(responses, tokenizer, key, seed=3)
    assert skipped.radioactivity_log10_pvalue is None and skipped.radioactivity_rho is None and skipped.seed == 3
    assert skipped.log10_pvalue == m.log10_pvalue and skipped.unmarked_share == m.unmarked_share


def test_strength_renderers_show_pvalues_and_checks(fingerprinted):
    responses, tokenizer, key = fingerprinted
    m = measure_strength(responses, tokenizer, key, radioactivity=_Proxy())
    result = evaluate(m, Thresholds(min_detectable_share=1.01))
    md = render_strength_markdown(result)
    assert md.startswith("## fingerprint strength: REGRESSION")
    assert f"| log10_pvalue | {m.log10_pvalue:.4g} (p = {format_pvalue(m.log10_pvalue)}) |" in md
    assert "| radioactivity_log10_pvalue | -12.5 (p = 3.2e-13) |" in md
    # a limit on a log10 p-value also shows the p-value it stands for
    assert "| radioactivity_log10_pvalue (threshold) | -6 (p = 1e-6) |" in md
    assert "rho = 0.2" in md and "**FAIL**: detectable_share = " in md
    suite = ET.fromstring(render_strength_junit(result))
    assert suite.get("tests") == "5" and suite.get("failures") == "1"
    failed = [c for c in suite if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["detectable_share (threshold)"]


def _mixture(rng, null_share, n, marked, unmarked):
    is_null = rng.random(n.size) < null_share
    return np.where(is_null, unmarked(n), marked(n)).astype(np.float64), float(is_null.mean())


@pytest.mark.parametrize("name", ["greenlist", "tournament", "gumbel"])
def test_unmarked_share_recovers_the_null_weight_from_the_null_object(name):
    rng = np.random.default_rng(5)
    n = rng.integers(40, 160, 2000)
    if name == "greenlist":
        null = BinomialNull(0, 0.25)
        marked, unmarked = (lambda k: rng.binomial(k, 0.55)), (lambda k: rng.binomial(k, 0.25))
    elif name == "tournament":
        null = BinomialNull(0, 0.5, trials_per_item=30)
        marked, unmarked = (lambda k: rng.binomial(30 * k, 0.6)), (lambda k: rng.binomial(30 * k, 0.5))
    else:
        null = GammaNull(0)
        marked, unmarked = (lambda k: rng.gamma(k, 1.5)), (lambda k: rng.gamma(k, 1.0))
    for share in (0.0, 0.3):
        totals, truth = _mixture(rng, share, n, marked, unmarked)
        est = strength_module._unmarked_share(null, totals, n)
        assert abs(est - truth) < 0.03, (share, est, truth)
    # all responses unmarked: the fingerprinted component cannot collapse onto the null
    totals, _ = _mixture(rng, 1.0, n, marked, unmarked)
    assert strength_module._unmarked_share(null, totals, n) > 0.95


def test_separation_rule_is_the_documented_one():
    ref = strength_module.MIN_SEPARATION / strength_module.REFERENCE_TRIAL_SD
    assert BinomialNull(0, 0.25).trial_sd() * ref == pytest.approx(0.05)
    assert BinomialNull(0, 0.5, 30).trial_sd() * ref == pytest.approx(0.0577, abs=1e-4)
    assert GammaNull(0).trial_sd() * ref == pytest.approx(0.1155, abs=1e-4)


def test_null_likelihoods_match_their_families():
    b = BinomialNull(0, 0.25, trials_per_item=3)
    assert b.log_likelihood(np.array([7.0]), np.array([4]), 0.5)[0] == pytest.approx(math.log(792 / 4096))
    assert b.rate_mle(np.array([6.0, 3.0]), np.array([2, 4]), np.array([1.0, 0.0])) == pytest.approx(1.0, abs=1e-8)
    assert b.rate_mle(np.array([0.0]), np.array([5]), at_least=0.3) == 0.3
    g = GammaNull(0)
    assert g.log_likelihood(np.array([2.0]), np.array([1]), 2.0)[0] == pytest.approx(math.log(0.5 * math.exp(-1)))
    assert g.rate_mle(np.array([3.0, 10.0]), np.array([2, 4])) == pytest.approx(13 / 6)
    with pytest.raises(ParameterError):
        WeightedBernoulliNull(np.ones(3), 0.25).log_likelihood(np.array([1.0]), np.array([3]), 0.5)


def test_every_threshold_flag_states_its_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["strength", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in Thresholds.__dataclass_fields__:
        flag = "--" + name.replace("_", "-")
        default = re.escape(str(getattr(Thresholds(), name)))
        assert re.search(rf"{flag} X [^()]*\(default {default}, or the --config value\)", text), flag
