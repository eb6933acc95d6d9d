"""fingerprint schemes inside Hugging Face transformers' ``model.generate()``.

``FingerprintLogitsProcessor(key)`` is a transformers ``LogitsProcessor``: pass it as
``model.generate(..., do_sample=True, logits_processor=LogitsProcessorList([processor]))``.
It runs the same numpy embed code as fingerprint's own sampler, batched over the rows: each
scheme's :meth:`~fingerprint.schemes.Scheme.warp_logits` (greenlist and hf-kgw add their bias to
the green tokens; tournament and hf-synthid return the log of their exact output distribution,
so sample with temperature 1; gumbel keeps only the keyed argmax).

transformers applies logits processors before its temperature / top-k / top-p warpers, so the
fingerprint sees the model's raw distribution here (fingerprint's own sampler applies it after
them). Rows with fewer than ``h`` tokens so far are left unchanged, as in fingerprint's sampler.

Requires the ``[hf]`` extra (torch, transformers).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessor

from ..errors import ParameterError
from ..keys import FingerprintKey
from ..schemes import Scheme

__all__ = ["FingerprintLogitsProcessor"]


class FingerprintLogitsProcessor(LogitsProcessor):
    """Embeds a fingerprint scheme in ``generate()``; ``key`` is a :class:`FingerprintKey` or a scheme."""

    def __init__(self, key: FingerprintKey | Scheme, *, seed: int | None = None) -> None:
        self.scheme = key.scheme_object() if isinstance(key, FingerprintKey) else key
        self._rng = np.random.default_rng(seed)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.scheme
        if scores.shape[-1] != s.vocab_size:
            raise ParameterError(f"the model's logits have width {scores.shape[-1]} but the key's vocab_size is "
                                 f"{s.vocab_size}; make the key with --vocab-size {scores.shape[-1]}")
        ids = input_ids.detach().cpu().numpy().astype(np.int64)
        h = s.context_width
        b, n = ids.shape
        ctx = np.full((b, h), -1, dtype=np.int64)
        if h:
            take = min(h, n)
            ctx[:, h - take:] = ids[:, n - take:]
        full = (ctx >= 0).all(axis=1) if h else np.ones(b, dtype=bool)
        logits = scores.detach().float().cpu().numpy().astype(np.float64)
        out = logits.copy()
        if full.any():
            rows = np.flatnonzero(full)
            out[rows] = s.warp_logits(logits[rows], ctx[rows], self._rng)
        return torch.from_numpy(out).to(dtype=scores.dtype, device=scores.device)  # type: ignore[return-value]
