"""`fingerprint strength`: the CI guard passes a fingerprinted release and flags regressions."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from fingerprint.keys import FingerprintKey
from fingerprint.sim.distill import corpus_prompts
from fingerprint.sim.generate import generate


@pytest.fixture(scope="module")
def release(teacher, tmp_path_factory):
    d = tmp_path_factory.mktemp("strength")
    key = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size, delta=3.0)
    key_path = key.save(d / "key.json")
    halved = FingerprintKey.from_dict({**json.loads(key_path.read_text()),
                                       "params": {"context_width": 2, "gamma": 0.25, "delta": 1.5}})
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
    assert "PASS" in (d / "fp.md").read_text()


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
