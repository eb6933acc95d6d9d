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

``KeyringLogitsProcessor(ring, cohorts)`` does the same with a key per cohort of a
:class:`~fingerprint.keyring.Keyring`: one cohort for the whole call, or one per batch row.

Requires the ``[hf]`` extra (torch, transformers).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from transformers import LogitsProcessor

from ..errors import ParameterError
from ..keyring import Keyring
from ..keys import FingerprintKey
from ..schemes import Scheme

__all__ = ["FingerprintLogitsProcessor", "KeyringLogitsProcessor"]


def _contexts(input_ids: torch.LongTensor, h: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``h`` ids of each row, ``(b, h)`` with -1 where a row is shorter, and the mask
    ``(b,)`` of rows with a full context."""
    ids = input_ids.detach().cpu().numpy().astype(np.int64)
    b, n = ids.shape
    ctx = np.full((b, h), -1, dtype=np.int64)
    if h:
        take = min(h, n)
        ctx[:, h - take:] = ids[:, n - take:]
    full = np.asarray((ctx >= 0).all(axis=1) if h else np.ones(b, dtype=bool), dtype=bool)
    return ctx, full


def _check_width(scores: torch.FloatTensor, vocab_size: int, what: str) -> None:
    if scores.shape[-1] != vocab_size:
        raise ParameterError(f"the model's logits have width {scores.shape[-1]} but the {what}'s vocab_size is "
                             f"{vocab_size}; make the {what} with --vocab-size {scores.shape[-1]}")


class FingerprintLogitsProcessor(LogitsProcessor):
    """Embeds a fingerprint scheme in ``generate()``; ``key`` is a :class:`FingerprintKey` or a scheme."""

    def __init__(self, key: FingerprintKey | Scheme, *, seed: int | None = None) -> None:
        self.scheme = key.scheme_object() if isinstance(key, FingerprintKey) else key
        self._rng = np.random.default_rng(seed)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.scheme
        _check_width(scores, s.vocab_size, "key")
        ctx, full = _contexts(input_ids, s.context_width)
        logits = scores.detach().float().cpu().numpy().astype(np.float64)
        out = logits.copy()
        if full.any():
            rows = np.flatnonzero(full)
            out[rows] = s.warp_logits(logits[rows], ctx[rows], self._rng)
        return torch.from_numpy(out).to(dtype=scores.dtype, device=scores.device)  # type: ignore[return-value]


class KeyringLogitsProcessor(LogitsProcessor):
    """Embeds each batch row's cohort key of a :class:`~fingerprint.keyring.Keyring` in ``generate()``.

    Parameters
    ----------
    ring:
        The keyring; its ``vocab_size`` must equal the model's logits width.
    cohorts:
        Cohort ids of ``ring`` (not account ids: map accounts with :meth:`Keyring.cohort_for`).
        A string: that cohort for every row of every call. A sequence of ``m`` ids: prompt ``j``
        of the batch is fingerprinted with ``cohorts[j]``. ``generate()`` calls the processor
        with ``input_ids`` of shape ``(b, t)`` and ``scores`` of shape ``(b, V)``; ``b`` must be
        ``m`` or a multiple ``k * m`` (``num_return_sequences=k`` or ``num_beams=k`` repeats each
        prompt in ``k`` consecutive rows), and row ``i`` then uses ``cohorts[i // k]``. Change
        the cohorts between calls with :meth:`set_cohorts` (or make one processor per call).
    seed:
        Seeds the draws of schemes that sample (shared by all rows).

    Rows are grouped by cohort and each group goes through its cohort scheme's
    :meth:`~fingerprint.schemes.Scheme.warp_logits`, exactly as :class:`FingerprintLogitsProcessor`
    does with that cohort's key; rows with fewer than ``h`` tokens are left unchanged.
    """

    def __init__(self, ring: Keyring, cohorts: str | Sequence[str], *, seed: int | None = None) -> None:
        self.ring = ring
        self._schemes: dict[str, Scheme] = {}
        self._rng = np.random.default_rng(seed)
        self.cohorts: tuple[str, ...] | str = ""
        self.set_cohorts(cohorts)

    def set_cohorts(self, cohorts: str | Sequence[str]) -> None:
        """Cohorts for the next calls: one id for every row, or one per prompt (see the class)."""
        ids = [cohorts] if isinstance(cohorts, str) else list(cohorts)
        if not ids:
            raise ParameterError("cohorts: give a cohort id, or one per prompt of the batch")
        for c in ids:
            if not isinstance(c, str):
                raise ParameterError(f"cohorts: each must be a cohort id (a string), got {c!r}")
            if c not in self._schemes:
                self._schemes[c] = self.ring.cohort_key(c).scheme_object()  # names an unknown id
        self.cohorts = cohorts if isinstance(cohorts, str) else tuple(ids)

    def row_cohorts(self, batch: int) -> list[str]:
        """The cohort of each of ``batch`` rows."""
        if isinstance(self.cohorts, str):
            return [self.cohorts] * batch
        m = len(self.cohorts)
        if batch % m:
            raise ParameterError(f"the batch has {batch} rows but {m} cohorts were given: give one cohort per "
                                 f"prompt (rows are a multiple of the prompts with num_return_sequences or beams)")
        k = batch // m
        return [self.cohorts[i // k] for i in range(batch)]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        _check_width(scores, self.ring.vocab_size, "keyring")
        row_cohorts = np.asarray(self.row_cohorts(int(scores.shape[0])), dtype=object)
        logits = scores.detach().float().cpu().numpy().astype(np.float64)
        out = logits.copy()
        for cohort in dict.fromkeys(row_cohorts.tolist()):
            s = self._schemes[cohort]
            ctx, full = _contexts(input_ids, s.context_width)
            rows = np.flatnonzero(full & (row_cohorts == cohort))
            if rows.size:
                out[rows] = s.warp_logits(logits[rows], ctx[rows], self._rng)
        return torch.from_numpy(out).to(dtype=scores.dtype, device=scores.device)  # type: ignore[return-value]
