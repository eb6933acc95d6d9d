"""The [neural] extra: a small transformer LM behind the same interface as the n-gram model."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the [neural] extra (torch==2.13.0) is in the test extra")

from fingerprint.keys import FingerprintKey  # noqa: E402
from fingerprint.sim.generate import generate  # noqa: E402
from fingerprint.sim.neural import TinyTransformerLM  # noqa: E402
from fingerprint.apps.roundtrip import score_responses  # noqa: E402


def test_tiny_transformer_trains_generates_and_carries_a_fingerprint(teacher, tmp_path):
    torch.set_num_threads(1)
    lm = TinyTransformerLM(teacher.vocab_size, context_size=16, d_model=32, n_layers=1, n_heads=2, seed=0)
    k = int(teacher.offsets.searchsorted(200_000))
    losses = lm.fit(teacher.tokens[:teacher.offsets[k]], teacher.offsets[:k + 1], steps=60, batch_size=16)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 1.0
    ctx = np.full((3, 16), -1)
    ctx[0, -2:] = teacher.tokens[:2]
    lp = lm.next_logprobs(ctx)
    assert lp.shape == (3, teacher.vocab_size) and np.allclose(np.exp(lp).sum(axis=1), 1.0)
    key = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size, delta=4.0)
    prompts = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i] + 6] for i in (5, 50, 500, 5000)]
    rng = np.random.default_rng(0)
    marked = generate(lm, prompts, 100, rng, scheme=key.scheme_object())
    plain = generate(lm, prompts, 100, rng)
    assert score_responses(key, prompts, marked).test.log10_pvalue < -10
    assert score_responses(key, prompts, plain).test.log10_pvalue > -3
    path = tmp_path / "lm.pt"
    lm.save(str(path))
    other = TinyTransformerLM(teacher.vocab_size, context_size=16, d_model=32, n_layers=1, n_heads=2, seed=5)
    other.load_state(str(path))
    assert np.allclose(other.next_logprobs(ctx), lp)
    student = lm.copy()
    k = int(teacher.offsets.searchsorted(50_000))
    student.fit(teacher.tokens[:teacher.offsets[k]], teacher.offsets[:k + 1], steps=5, batch_size=8)
    assert not np.allclose(student.next_logprobs(ctx), lp)  # the copy trains apart from the original
    assert np.allclose(lm.next_logprobs(ctx), lp)


def test_neural_power_smoke(tmp_path):
    """eval/neural_power end to end at toy size (3 seeds, so every mode has its shadows): every
    student is tested in every mode, the innocent students' decoy checks are recorded and pass,
    the tables are written, and the cache holds each model once."""
    import csv

    from eval import neural_power

    args = ["--smoke", "--seeds", "3", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")]
    assert neural_power.main(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "neural-power.csv")))
    cells = {(r["student"], r["rho"], r["seed"], r["mode"]) for r in rows}
    assert len(cells) == 3 * 3 * len(neural_power.MODES)  # corpus, control, rho = 1; 3 seeds; every mode
    checks = [r for r in rows if r.get("decoy_ks_pvalue")]
    assert {r["student"] for r in checks} == {"corpus", "control"}
    assert {r["mode"] for r in checks} >= {neural_power.SHADOWS_MODE, "open weights"}
    assert all(float(r["decoy_ks_pvalue"]) > 1e-4 for r in checks)
    assert all(float(r["log10_p"]) > -3 for r in rows if r["student"] != "student")
    md = (tmp_path / "neural-power.md").read_text()
    assert neural_power.SHADOWS_MODE in md and "smallest rho detected" in md
    assert (tmp_path / "neural-power.png").stat().st_size > 10_000
    # the cache: each model once, under its configuration's folder
    saved = sorted(p.name for p in (tmp_path / "cache").glob("*/*.pt"))
    assert len(saved) == 1 + 3 * (1 + 3)  # the teacher; per seed a base and three students
    # the reference / weighting comparison on the same (cached) models: every combination, every seed
    from eval import neural_weighting

    assert neural_weighting.main(["--smoke", "--cache", str(tmp_path / "cache"), "--budgets", "960",
                                  "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "neural-weighting.csv")))
    combos = {(r["reference"], r["weighting"]) for r in rows}
    assert combos == {(a, b) for a in neural_weighting.REFERENCES for b in neural_weighting.WEIGHTINGS}
    assert {r["student"] for r in rows} == {"corpus", "control", "student"} and len(rows) == 3 * 3 * len(combos)
    assert all(float(r["log10_p"]) > -3 for r in rows if r["student"] != "student")
    table = (tmp_path / "neural-weighting.md").read_text()
    assert table.count("\n| ") == 1 + len(combos)  # the header and one row per combination


@pytest.mark.slow  # superseded in the default run by eval/neural_power's smoke test
def test_neural_experiment_small(tmp_path, teacher):
    from eval import neural

    assert neural.main(["--teacher-steps", "20", "--base-steps", "10", "--finetune-steps", "5",
                        "--fingerprinted-tokens", "1500", "--queries", "10", "--answer-tokens", "20",
                        "--d-model", "32", "--out", str(tmp_path)]) == 0
    assert "| student | text |" in (tmp_path / "neural.md").read_text()


def test_neural_power_cache_saves_once_and_loads_the_same_model(tmp_path):
    from eval import neural_power

    calls = []

    def fit(m):
        calls.append(1)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.5)
        return 1.25

    model, loss = neural_power._trained(neural_power.gpt2(50, 8, 0, n_layer=1, n_embd=8, n_head=2), tmp_path, "m", fit)
    again, loss2 = neural_power._trained(neural_power.gpt2(50, 8, 0, n_layer=1, n_embd=8, n_head=2), tmp_path, "m",
                                         fit)
    assert calls == [1] and loss == loss2 == 1.25
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no half-written file left
    _, loss3 = neural_power._trained(neural_power.gpt2(50, 8, 0, n_layer=1, n_embd=8, n_head=2), None, "m", fit)
    assert calls == [1, 1] and loss3 == 1.25  # without a cache: trained every time
