"""Shared fixtures: a real teacher (BPE tokenizer + n-gram model on packaged English text)."""

from __future__ import annotations

import numpy as np
import pytest

from fingerprint.sim.teacher import Teacher, build_teacher


@pytest.fixture(scope="session")
def teacher() -> Teacher:
    return build_teacher()


@pytest.fixture(scope="session")
def human_text(teacher: Teacher) -> tuple[np.ndarray, np.ndarray]:
    """About 60k tokens of real English (fortunes and the Jargon File), as tokens + offsets."""
    paras = [p for p in teacher.paragraphs if not p.startswith(("Genesis", "Exodus"))][3000:4500]
    return teacher.tokenizer.encode_batch(paras)


@pytest.fixture(scope="session")
def distilled(teacher: Teacher):
    """A greenlist key (delta 3), the teacher's fingerprinted answers to distillation prompts (the
    pool, 120k tokens) and trigram students distilled from half of the corpus plus the pool at
    rho = 0 (the control) and rho = 10%: ``(key, pool, {rho: model})``. Shared by the access-level
    and sequential tests (building it is the slow part)."""
    from fingerprint.keys import FingerprintKey
    from fingerprint.sim.distill import distill_student, fingerprinted_responses

    key = FingerprintKey(bytes(range(7, 39)), "greenlist", {"delta": 3.0}, teacher.vocab_size)
    rng = np.random.default_rng(11)
    n_par = teacher.offsets.size - 1
    half = np.sort(rng.choice(n_par, size=n_par // 2, replace=False))
    clean = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i + 1]] for i in half]
    ct = np.concatenate(clean)
    co = np.concatenate(([0], np.cumsum([c.size for c in clean])))
    pool = fingerprinted_responses(teacher, key.scheme_object(), 120_000, rng=rng)
    students = {rho: distill_student(ct, co, pool, rho, vocab_size=teacher.vocab_size)[0] for rho in (0.0, 0.1)}
    return key, pool, students


def _seeded_token_bytes(name: str):
    import hashlib

    counter = iter(range(1 << 30))

    def token_bytes(n: int) -> bytes:
        return hashlib.shake_256(f"{name}:{next(counter)}".encode()).digest(n)

    return token_bytes


@pytest.fixture(scope="module", autouse=True)
def deterministic_module_key_secrets(request):
    """The same for keys made by module-scoped fixtures (set up before any test's own seeding):
    a stream seeded by the module's name. Without it a module fixture's key came from the OS and a
    test on it could fail one run in a thousand."""
    import fingerprint.keys as keys

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keys._secrets, "token_bytes", _seeded_token_bytes(request.node.nodeid))
        yield


@pytest.fixture(autouse=True)
def deterministic_key_secrets(request, monkeypatch):
    """Keys made in-process by a test come from a stream seeded by the test's name, so every run
    of the suite sees the same keys (and the same statistics). Keys made by subprocesses still
    use the OS CSPRNG."""
    import fingerprint.keys as keys

    monkeypatch.setattr(keys._secrets, "token_bytes", _seeded_token_bytes(request.node.nodeid))


@pytest.fixture(scope="session")
def tiny_gpt2(teacher):
    """A tiny GPT-2, randomly initialised and trained briefly here so its distributions are not uniform."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = transformers.GPT2Config(vocab_size=teacher.vocab_size, n_positions=256, n_embd=64, n_layer=2, n_head=2,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(120):
        starts = rng.integers(0, teacher.tokens.size - 65, size=16)
        batch = torch.from_numpy(np.stack([teacher.tokens[s:s + 64] for s in starts]))
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert loss.item() < 7.0  # well below ln(8192) = 9.0: no longer uniform
    return model
