"""transformers interop with a keyring: each batch row fingerprinted with its cohort's key."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from fingerprint.errors import ParameterError  # noqa: E402
from fingerprint.interop.hf import FingerprintLogitsProcessor, KeyringLogitsProcessor  # noqa: E402
from fingerprint.keyring import Keyring  # noqa: E402
from fingerprint.verify.keyring import verify_keyring_tokens  # noqa: E402
from fingerprint.verify.result import VerifyOptions  # noqa: E402

COHORTS = ["acme", "globex", "initech", "umbrella"]


@pytest.fixture(scope="module")
def ring(teacher):
    return Keyring.from_seed("test-keyring-hf", "greenlist", vocab_size=teacher.vocab_size, cohorts=COHORTS,
                             delta=3.0)


def test_rows_are_identified_by_their_cohort(tiny_gpt2, teacher, ring):
    """Eight prompts, two per cohort, in one generate() call: each cohort's rows flag that cohort alone."""
    starts = (3, 300, 3000, 13000, 50, 700, 5000, 9000)
    prompts = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i] + 8] for i in starts]
    row_cohorts = COHORTS * 2
    processor = transformers.LogitsProcessorList([KeyringLogitsProcessor(ring, row_cohorts, seed=1)])
    torch.manual_seed(1)
    out = tiny_gpt2.generate(torch.from_numpy(np.stack(prompts)), do_sample=True, max_new_tokens=100,
                             logits_processor=processor, pad_token_id=0, top_k=0)
    for cohort in COHORTS:
        rows = [i for i, c in enumerate(row_cohorts) if c == cohort]
        result = verify_keyring_tokens([out[i, 8:].numpy() for i in rows], ring=ring,
                                       prompt_tokens=[prompts[i] for i in rows], options=VerifyOptions(n_decoys=20))
        assert result.flagged == (cohort,), (cohort, [(c.cohort, c.test.log10_pvalue) for c in result.cohorts])
        assert result.detected, result.reason


def test_processor_matches_the_single_key_processor_row_by_row(teacher, ring):
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(0, teacher.vocab_size, size=(6, 5)))
    scores = torch.from_numpy(rng.normal(size=(6, teacher.vocab_size)).astype(np.float32))
    per_row = ["acme", "globex", "acme", "umbrella", "initech", "globex"]
    got = KeyringLogitsProcessor(ring, per_row)(ids, scores).numpy()
    for i, c in enumerate(per_row):
        want = FingerprintLogitsProcessor(ring.cohort_key(c))(ids[i:i + 1], scores[i:i + 1]).numpy()
        assert np.allclose(got[i], want[0], atol=1e-5), (i, c)
    assert not np.allclose(got[0], got[1])  # different cohorts, different green lists
    # one cohort for every row; three cohorts for six rows: two consecutive rows per prompt
    one = KeyringLogitsProcessor(ring, "initech")(ids, scores).numpy()
    assert np.allclose(one, FingerprintLogitsProcessor(ring.cohort_key("initech"))(ids, scores).numpy(), atol=1e-5)
    proc = KeyringLogitsProcessor(ring, ["acme", "globex", "umbrella"])
    assert proc.row_cohorts(6) == ["acme", "acme", "globex", "globex", "umbrella", "umbrella"]
    proc.set_cohorts(["globex"] * 6)
    assert np.allclose(proc(ids, scores).numpy(),
                       FingerprintLogitsProcessor(ring.cohort_key("globex"))(ids, scores).numpy(), atol=1e-5)


def test_processor_errors_name_the_problem(teacher, ring):
    ids = torch.zeros((4, 3), dtype=torch.long)
    scores = torch.zeros((4, teacher.vocab_size))
    with pytest.raises(ParameterError, match="'hooli'"):
        KeyringLogitsProcessor(ring, ["acme", "hooli"])
    with pytest.raises(ParameterError, match="4 rows but 3 cohorts"):
        KeyringLogitsProcessor(ring, ["acme", "globex", "initech"])(ids, scores)
    with pytest.raises(ParameterError, match="keyring's vocab_size"):
        KeyringLogitsProcessor(ring, "acme")(ids, scores[:, :100])
    with pytest.raises(ParameterError, match="cohort id"):
        KeyringLogitsProcessor(ring, [])
