"""transformers interop: fingerprint schemes embedded in model.generate() through the adapter."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from fingerprint.interop.hf import FingerprintLogitsProcessor  # noqa: E402
from fingerprint.keys import FingerprintKey  # noqa: E402
from fingerprint.apps.roundtrip import score_responses  # noqa: E402


@pytest.mark.parametrize("name,params", [("greenlist", {"delta": 2.0}), ("gumbel", {}), ("tournament", {}),
                                         ("greenlist", {"context_width": 4, "delta": 2.0})])
def test_adapter_text_is_detected_within_400_tokens(tiny_gpt2, teacher, name, params):
    key = FingerprintKey.generate(name, vocab_size=teacher.vocab_size, **params)
    prompts = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i] + 8] for i in (3, 300, 3000, 13000)]
    processor = transformers.LogitsProcessorList([FingerprintLogitsProcessor(key, seed=1)])
    torch.manual_seed(1)
    out = tiny_gpt2.generate(torch.from_numpy(np.stack(prompts)), do_sample=True, max_new_tokens=100,
                             logits_processor=processor, pad_token_id=0, top_k=0)
    marked = [row[8:].numpy() for row in out]
    assert sum(m.size for m in marked) == 400
    result_kr = score_responses(key, prompts, marked)
    result, counts = result_kr.test, result_kr.counts
    assert result.log10_pvalue < -10, result
    torch.manual_seed(2)
    plain = tiny_gpt2.generate(torch.from_numpy(np.stack(prompts)), do_sample=True, max_new_tokens=100,
                               pad_token_id=0, top_k=0)
    null = score_responses(key, prompts, [row[8:].numpy() for row in plain]).test
    assert null.log10_pvalue > -3


def test_adapter_matches_the_numpy_embed_side(teacher):
    key = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size, delta=2.5)
    scheme = key.scheme_object()
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(0, teacher.vocab_size, size=(3, 5)))
    scores = torch.from_numpy(rng.normal(size=(3, teacher.vocab_size)).astype(np.float32))
    got = FingerprintLogitsProcessor(key)(ids, scores).numpy()
    want = scheme.bias_logits(scores.numpy().astype(np.float64), ids.numpy()[:, -2:])
    assert np.allclose(got, want, atol=1e-5)
    with pytest.raises(Exception, match="vocab_size"):
        FingerprintLogitsProcessor(key)(ids, scores[:, :100])
