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


def test_neural_experiment_small(tmp_path, teacher):
    from eval import neural

    assert neural.main(["--teacher-steps", "20", "--base-steps", "10", "--finetune-steps", "5",
                        "--fingerprinted-tokens", "1500", "--queries", "10", "--answer-tokens", "20",
                        "--d-model", "32", "--out", str(tmp_path)]) == 0
    assert "| student | text |" in (tmp_path / "neural.md").read_text()
