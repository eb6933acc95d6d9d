"""vLLM's native Gumbel-max watermark (``WatermarkConfig``, PRF ``philox4x32-10-v1``), reproduced in numpy.

Verifies text that vLLM watermarked, without torch or a GPU, bit for bit (checked against vLLM
0.33.0's own code, see ``tests/make_vllm_vectors.py``), and tests it with fingerprint's exact,
de-duplicated statistics.

How vLLM draws a token's uniform (``vllm/v1/watermarking/prfs/philox.py``; the GPU kernel in
``vllm/v1/worker/gpu/sample/watermark.py`` computes the same words):

* the 64-bit key splits into Philox key words ``k0 = key & 0xffffffff``, ``k1 = key >> 32``;
* the context (the ``context_width`` previous generated tokens, oldest first, each masked to 32
  bits; -1 where the response is shorter) is absorbed four tokens at a time: the state starts
  at ``(0x574D4358, width, 0, 0)``; each block of 4 (padded with ``0xffffffff - j`` at slot
  ``j``) is XORed into it and the state becomes Philox4x32-10 of that, keyed
  ``(k0 ^ offset, k1)`` with ``offset`` the block's first position;
* the candidate token ``t`` with the state ``(s0, s1, s2, s3)``: Philox4x32-10 of the counter
  ``(t >> 2, s0, s1, s2)`` keyed ``(k0 ^ s3, k1 ^ 0x574D544B)``; its output word ``t & 3`` is
  the token's uint32 (four consecutive tokens share one call);
* uniform ``u = float32((m + 1) / (2**24 + 1))`` with ``m = word >> 8`` (24 bits);
* sampling is Gumbel-max: ``argmax(logits - log(-log(u)))`` over the (tempered, top-k/top-p
  processed) logits.

The dual-key form (``dual_key_gumbel``, for speculative decoding) derives two keys,
``key_x = int.from_bytes(sha256(b"key_x" + key.to_bytes(8, "big"))[:8], "big")`` for
``x`` in ``a, b``, and samples each token with key b with probability ``alpha`` (default 0.1), else
with key a. Its detector scores ``(1 - alpha) s_a + alpha s_b``.

The score. vLLM's detector scores ``-log1p(-u)``; ``u`` is the float32 just below
``(m + 1) / 2**24``, so that score can exceed the ``-ln(1 - U)`` of the continuous uniform it
stands for, and a Gamma tail on its sum is not guaranteed. This scheme scores each tuple
``-ln(1 - m / 2**24)``: the lower end of the mantissa's interval, a monotone function of the same
24 bits (the same ranking of tokens), and below ``-ln(1 - U)`` for the ``U`` it was cut from. Its
tail at each of its values ``s`` is exactly ``e**-s`` (``P[m >= j] = 1 - j / 2**24``), so the total
over ``n`` distinct tuples is stochastically below Gamma(n, 1): the Gamma tail is exact up to
the rounding of each score down to its atom. The dual key's total is
``(1 - alpha) G_a + alpha G_b`` with independent Gamma(n, 1): its exact tail is
:class:`fingerprint.stats.nulls.GammaSumNull` (vLLM approximates it by a moment-matched Gamma
for weights other than 0, 0.5 and 1, :func:`vllm_detector_pvalue`).

De-duplication. vLLM's detector keeps the first occurrence of each context in a text and scores
the tokens of the first ``context_width`` positions with -1-padded contexts. Here, as for every
scheme, a tuple is scored once across the whole corpus (``deduplicate="tuple"``: a context
followed by another token is another, independent uniform); ``deduplicate="context"`` keeps
only the first tuple of each context across the corpus, vLLM's rule (key-independent, applied
through :meth:`VllmGumbelScheme.distinct_mask`). Only tokens whose full window lies inside the
text are scored (vLLM's padded first contexts are not). vLLM's contexts exclude the prompt;
fingerprint's windows run across the text read, and prompt windows are excluded from scoring.
:func:`vllm_detect` reproduces vLLM's own detector (its contexts, scores and p-value).

The key file's secret is the 64-bit vLLM key, 8 bytes big-endian (``keygen --vllm-key``).
"""

from __future__ import annotations

import hashlib
import math
import sys
import weakref
from typing import Any, ClassVar

import numpy as np
from scipy import special

from ..errors import ParameterError, TokenError
from ..stats import GammaNull, NullModel, WeightedExponentialNull
from ..stats.exact import log_gamma_sf
from ..stats.nulls import GammaSumNull, WeightedGammaSumNull
from ..windows import first_occurrence_mask, row_ids
from .base import ReproducedScheme, apply_temperature_top_p, check_contexts, check_logits, sample_from_logp

__all__ = ["VllmGumbelScheme", "vllm_key_secret", "derive_watermark_key", "philox_words", "vllm_uniforms",
           "vllm_detector_scores", "vllm_detector_pvalue", "vllm_detector_inputs", "vllm_detect",
           "scores_of_words", "VLLM_VERSION", "PRF_VERSION"]

#: The vLLM release the reproduction is checked against (``tests/make_vllm_vectors.py``).
VLLM_VERSION = "0.33.0"
PRF_VERSION = "philox4x32-10-v1"

_MASK = 0xFFFFFFFF
_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = 0x9E3779B9
_W1 = 0xBB67AE85
_CONTEXT_DOMAIN = 0x574D4358
_TOKEN_DOMAIN = 0x574D544B
#: Position of the low and high 32-bit halves in a uint64 viewed as two uint32.
_LO, _HI = (0, 1) if sys.byteorder == "little" else (1, 0)
#: Elements per vectorized Philox call: working arrays stay in cache.
_CHUNK = 1 << 15
_INV_2_24 = 2.0 ** -24


def vllm_key_secret(key: int) -> bytes:
    """The 8-byte key-file secret holding a vLLM watermark key (big-endian)."""
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not 0 <= int(key) < 2**64:
        raise ParameterError(f"vLLM watermark keys are integers in [0, 2**64), got {key!r}")
    return int(key).to_bytes(8, "big")


def derive_watermark_key(key: int, domain: bytes) -> int:
    """vLLM's ``derive_watermark_key``: the dual-key scheme's keys (``domain`` b"key_a" / b"key_b")."""
    return int.from_bytes(hashlib.sha256(domain + int(key).to_bytes(8, "big")).digest()[:8], "big")


# ---- Philox4x32-10 on arrays ----------------------------------------------------------------

def _philox(c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, c3: np.ndarray,
            k0: "np.ndarray | int", k1: "np.ndarray | int") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Philox4x32-10 of counters ``(m,)`` uint32 each, keys uint32 arrays ``(m,)`` or ints.

    Each round multiplies two words into uint64 products (read back as their uint32 halves,
    without masking) and XORs; the products alternate between two buffers, as the low halves of
    one round are read in the next.
    """
    m = c0.shape[0]
    prods = [(np.empty(m, np.uint64), np.empty(m, np.uint64)) for _ in range(2)]
    x0, x2 = np.empty(m, np.uint32), np.empty(m, np.uint32)
    key0 = np.empty(m, np.uint32) if isinstance(k0, np.ndarray) else None
    key1 = np.empty(m, np.uint32) if isinstance(k1, np.ndarray) else None
    for r in range(10):
        p0, p1 = prods[r & 1]
        np.multiply(c0, _M0, out=p0)
        np.multiply(c2, _M1, out=p1)
        h0, h1 = p0.view(np.uint32), p1.view(np.uint32)
        if key0 is not None:
            np.add(k0, np.uint32((r * _W0) & _MASK), out=key0)
            rk0: Any = key0
        else:
            rk0 = np.uint32((int(k0) + r * _W0) & _MASK)
        if key1 is not None:
            np.add(k1, np.uint32((r * _W1) & _MASK), out=key1)
            rk1: Any = key1
        else:
            rk1 = np.uint32((int(k1) + r * _W1) & _MASK)
        np.bitwise_xor(h1[_HI::2], c1, out=x0)
        np.bitwise_xor(x0, rk0, out=x0)
        np.bitwise_xor(h0[_HI::2], c3, out=x2)
        np.bitwise_xor(x2, rk1, out=x2)
        c0, c1, c2, c3 = x0, h1[_LO::2], x2, h0[_LO::2]
    return c0, np.ascontiguousarray(c1), c2, np.ascontiguousarray(c3)


def _context_state(windows: np.ndarray, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """vLLM's Philox state after absorbing each context: windows ``(m, w)`` uint32 -> 4 x ``(m,)`` uint32."""
    m, w = windows.shape
    state: list[Any] = [np.uint32(_CONTEXT_DOMAIN), np.uint32(w), np.uint32(0), np.uint32(0)]
    for offset in range(0, w, 4):
        counter = []
        for j in range(4):
            c = np.empty(m, dtype=np.uint32)
            np.bitwise_xor(windows[:, offset + j] if offset + j < w else np.uint32(_MASK - j), state[j], out=c)
            counter.append(c)
        state = list(_philox(counter[0], counter[1], counter[2], counter[3], (k0 ^ offset) & _MASK, k1))
    return state[0], state[1], state[2], state[3]


def _select_word(outputs: tuple[np.ndarray, ...], which: np.ndarray) -> np.ndarray:
    out = outputs[0].copy()
    for j in (1, 2, 3):
        np.copyto(out, outputs[j], where=which == j)
    return out


def _words_u32(windows: np.ndarray, tokens: np.ndarray, key: int) -> np.ndarray:
    """vLLM's uint32 word of each (context, token): windows ``(n, w)`` uint32, tokens ``(n,)`` uint32."""
    n = tokens.shape[0]
    k0, k1 = key & _MASK, key >> 32
    out = np.empty(n, dtype=np.uint32)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        s0, s1, s2, s3 = _context_state(windows[lo:hi], k0, k1)
        t = tokens[lo:hi]
        o = _philox(t >> np.uint32(2), s0, s1, s2, np.bitwise_xor(s3, np.uint32(k0)), (k1 ^ _TOKEN_DOMAIN) & _MASK)
        out[lo:hi] = _select_word(o, t & np.uint32(3))
    return out


def _as_u32(a: np.ndarray, what: str) -> np.ndarray:
    """Ids as uint32 the way vLLM masks them (``& 0xffffffff``); -1 becomes 0xffffffff."""
    a = np.asarray(a)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise TokenError(f"{what} must be integer token ids, got dtype {a.dtype}")
    if a.dtype == np.uint32:
        return a
    return (a.astype(np.int64) & _MASK).astype(np.uint32)


def philox_words(key: int, contexts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """vLLM's uint32 PRF word of each (context, token): contexts ``(n, w)``, tokens ``(n,)`` integer
    ids (masked to 32 bits as vLLM does, so -1 padding works) -> ``(n,)`` uint32."""
    tokens = _as_u32(tokens, "tokens").reshape(-1)
    contexts = _as_u32(contexts, "contexts")
    if contexts.ndim != 2 or contexts.shape[0] != tokens.shape[0] or contexts.shape[1] < 1:
        raise TokenError(f"contexts must have shape (n, w >= 1) with n = {tokens.shape[0]}, got {contexts.shape}")
    return _words_u32(contexts, tokens, int(key))


def vllm_uniforms(words: np.ndarray) -> np.ndarray:
    """vLLM's ``uint32_to_uniform``: ``float32((m + 1) / (2**24 + 1))``, ``m = word >> 8``; ``(n,)`` float32."""
    m = (np.asarray(words, dtype=np.uint32) >> np.uint32(8)).astype(np.float64)
    return ((m + 1.0) / (2**24 + 1)).astype(np.float32)


def vllm_detector_scores(words: np.ndarray) -> np.ndarray:
    """vLLM's detector score ``-log1p(-u)`` (float64 of the float32 uniform), ``(n,)`` float64."""
    return -np.log1p(-vllm_uniforms(words).astype(np.float64))


def scores_of_words(words: np.ndarray) -> np.ndarray:
    """This scheme's score ``-ln(1 - m / 2**24)``, ``m = word >> 8``: ``(n,)`` float64 (see the module
    docstring: its sum over n distinct tuples is stochastically below Gamma(n, 1))."""
    m = (np.asarray(words, dtype=np.uint32) >> np.uint32(8)).astype(np.float64)
    m *= -_INV_2_24
    return -np.log1p(m, out=m)


def vllm_detector_pvalue(score: float, n: int, alpha: float | None = None) -> float:
    """The p-value vLLM 0.33's detectors report for a total ``score`` over ``n`` scored tokens:
    ``GumbelWatermarkDetector`` (``alpha=None``): P[Gamma(n, 1) >= score]; the dual-key detector:
    a Gamma with the total's mean and variance, ``Q(n / v, score / v)``, ``v = (1 - alpha)**2 +
    alpha**2`` (shape rounded for alpha in 0, 0.5, 1). An approximation of the dual key's tail
    (:class:`~fingerprint.stats.nulls.GammaSumNull` is exact); float64, so 0 below 1e-308."""
    if n <= 0:
        return 1.0
    if alpha is None:
        return min(1.0, math.exp(min(0.0, log_gamma_sf(float(score), int(n))))) if score > 0 else 1.0
    v = (1 - alpha) ** 2 + alpha ** 2
    shape = float(round(n / v)) if alpha in (0, 0.5, 1) else n / v
    if shape <= 0 or score <= 0:
        return 1.0
    return float(special.gammaincc(shape, score / v))


def vllm_detector_inputs(tokens: np.ndarray, context_width: int = 4, *, deduplicate: bool = True
                         ) -> tuple[np.ndarray, np.ndarray]:
    """What vLLM's detector scores in one text's ids ``(L,)``: the positions ``(m,)`` it keeps and
    their contexts ``(m, w)`` (padded with -1 before the text's start; with ``deduplicate``, the
    first occurrence of each context only), as ``WatermarkDetector._prepare_inputs``."""
    tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
    w = int(context_width)
    if w < 1:
        raise ParameterError(f"context_width must be >= 1, got {context_width!r}")
    padded = np.concatenate([np.full(w, -1, dtype=np.int64), tokens])
    windows = np.lib.stride_tricks.sliding_window_view(padded, w)[:tokens.size]
    keep = first_occurrence_mask(row_ids(windows)) if deduplicate else np.ones(tokens.size, dtype=bool)
    positions = np.flatnonzero(keep)
    return positions, windows[positions]


def vllm_detect(tokens: np.ndarray, key: int, *, context_width: int = 4, alpha: float | None = None,
                deduplicate: bool = True) -> tuple[float, float, int]:
    """vLLM's own detector on one text's ids ``(L,)``: ``(score, p_value, scored_tokens)`` as
    ``GumbelWatermarkDetector.detect`` (``alpha=None``) or ``DualKeyGumbelWatermarkDetector.detect``
    returns them: the inputs of :func:`vllm_detector_inputs`, scores ``-log1p(-u)``, and vLLM's
    p-value (:func:`vllm_detector_pvalue`)."""
    tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
    positions, ctx = vllm_detector_inputs(tokens, context_width, deduplicate=deduplicate)
    if positions.size == 0:
        return 0.0, 1.0, 0
    tgt = tokens[positions]
    if alpha is None:
        scores = vllm_detector_scores(philox_words(key, ctx, tgt))
    else:
        sa = vllm_detector_scores(philox_words(derive_watermark_key(key, b"key_a"), ctx, tgt))
        sb = vllm_detector_scores(philox_words(derive_watermark_key(key, b"key_b"), ctx, tgt))
        scores = np.stack([sa, sb], axis=-1) @ np.array([1 - alpha, alpha])
    score = float(scores.sum())
    return score, vllm_detector_pvalue(score, int(tgt.size), alpha), int(tgt.size)


class VllmGumbelScheme(ReproducedScheme):
    """vLLM's native Gumbel-max watermark; parameters ``context_width`` (vLLM's, default 4),
    ``algorithm`` (``"gumbel"`` or ``"dual_key_gumbel"``), ``alpha`` (the dual key's weight of
    key b, default 0.1) and ``deduplicate`` (``"tuple"`` or vLLM's ``"context"``).
    ``vocab_size`` is the model's logits width."""

    name = "vllm-gumbel"
    #: Philox draws per (context, token): distinct pairs get independent uniforms.
    independent_pairs = True
    defaults = {"context_width": 4, "algorithm": "gumbel", "alpha": 0.1, "deduplicate": "tuple"}

    secret_options = {"vllm_key": "vLLM's WatermarkConfig key, a 64-bit integer (kept secret in the key file; "
                                  "default: a random key)"}

    def __init__(self, secret: bytes, vocab_size: int, **params: Any) -> None:
        super().__init__(secret, vocab_size, **params)
        self.vllm_key = int.from_bytes(bytes(secret)[:8], "big")
        self.dual = self.params["algorithm"] == "dual_key_gumbel"
        alpha = self.params["alpha"]
        if self.dual:
            # (key, weight) of each score term; a weight-0 term is left out
            terms = [(derive_watermark_key(self.vllm_key, b"key_a"), 1.0 - alpha),
                     (derive_watermark_key(self.vllm_key, b"key_b"), alpha)]
        else:
            terms = [(self.vllm_key, 1.0)]
        self._terms = [(k, wt) for k, wt in terms if wt > 0]

    @classmethod
    def secret_bytes(cls, params: dict[str, Any]) -> int:
        return 8

    @classmethod
    def secret_from_options(cls, params: dict[str, Any], options: dict[str, str]) -> tuple[bytes, dict[str, Any]]:
        raw = options["vllm_key"]
        try:
            value = raw if isinstance(raw, int) else int(str(raw), 0)
        except ValueError:
            raise ParameterError(f"vLLM key must be an integer, got {raw!r}") from None
        return vllm_key_secret(value), params

    @classmethod
    def _validate(cls, params: dict[str, Any]) -> dict[str, Any]:
        if params["context_width"] < 1:
            raise ParameterError(f"context_width must be >= 1 for vllm-gumbel, got {params['context_width']}")
        if params["algorithm"] not in ("gumbel", "dual_key_gumbel"):
            raise ParameterError(f"algorithm must be 'gumbel' or 'dual_key_gumbel', got {params['algorithm']!r}")
        a = params["alpha"]
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
            raise ParameterError(f"alpha must be a number in [0, 1], got {a!r}")
        if params["deduplicate"] not in ("tuple", "context"):
            raise ParameterError(f"deduplicate must be 'tuple' or 'context', got {params['deduplicate']!r}")
        return {**params, "alpha": float(a)}

    # ---- score side -----------------------------------------------------------------------
    def _scores_u32(self, windows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        out: np.ndarray | None = None
        for key, weight in self._terms:
            s = scores_of_words(_words_u32(windows, tokens, key))
            if weight != 1.0:
                s *= weight
            out = s if out is None else out + s
        assert out is not None
        return out

    def tuple_scores(self, windows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Per-tuple scores ``(n,)`` float64: ``-ln(1 - m / 2**24)``, or the dual key's weighted sum."""
        tokens = _as_u32(tokens, "tokens").reshape(-1)
        windows = _as_u32(windows, "windows").reshape(tokens.size, self.context_width)
        return self._scores_u32(windows, tokens)

    def scores_of_blocks(self, blocks: np.ndarray) -> np.ndarray:
        n = len(blocks)
        if n == 0:
            return np.zeros(0)
        words = np.asarray(blocks).reshape(n, -1)
        h = self.context_width
        return self._scores_u32(words[:, 1:h + 1].astype(np.uint32, copy=False),
                                np.ascontiguousarray(words[:, h + 1], dtype=np.uint32))

    #: vLLM's context de-duplication of the last blocks seen (weak reference, width, mask):
    #: key-independent, so every key and decoy key of one verify shares it.
    _context_first: ClassVar[tuple[Any, int, np.ndarray] | None] = None

    def distinct_mask(self, blocks: np.ndarray) -> np.ndarray | None:
        """With ``deduplicate="context"``: the first tuple of each context among the (already
        tuple-distinct, corpus-ordered) blocks, ``(n,)`` bool; ``None`` otherwise."""
        if self.params["deduplicate"] != "context":
            return None
        n = len(blocks)
        if n == 0:
            return np.zeros(0, dtype=bool)
        h = self.context_width
        cached = VllmGumbelScheme._context_first
        if cached is not None and cached[0]() is blocks and cached[1] == h:
            return cached[2]
        words = np.asarray(blocks).reshape(n, -1)
        mask = first_occurrence_mask(row_ids(words[:, 1:h + 1]))
        VllmGumbelScheme._context_first = (weakref.ref(blocks), h, mask)
        return mask

    def null(self, n_items: int, *, blocks: np.ndarray | None = None,
             weights: np.ndarray | None = None) -> NullModel:
        """Gamma(n, 1) for one key (conservative by the score's construction); for the dual key
        the exact tail of ``(1 - alpha) G_a + alpha G_b`` (:class:`GammaSumNull`). With weights
        (the logprob statistic): the weighted Exp(1) sums (saddlepoint)."""
        if len(self._terms) == 1:
            return GammaNull(n_items) if weights is None else WeightedExponentialNull(weights)
        scales = (self._terms[0][1], self._terms[1][1])
        return GammaSumNull(n_items, scales) if weights is None else WeightedGammaSumNull(weights, scales)

    # ---- embed side -----------------------------------------------------------------------
    def row_words(self, contexts: np.ndarray, key: int | None = None) -> np.ndarray:
        """vLLM's uint32 word of every candidate token after each context: ``(b, w)`` -> ``(b, V)``."""
        contexts = _as_u32(contexts, "contexts")
        b, v = contexts.shape[0], self.vocab_size
        key = self.vllm_key if key is None else key
        k0, k1 = key & _MASK, key >> 32
        groups = -(-v // 4)
        out = np.empty((b, groups * 4), dtype=np.uint32)
        rows_per = max(1, _CHUNK // groups)
        g = np.arange(groups, dtype=np.uint32)
        for lo in range(0, b, rows_per):
            hi = min(b, lo + rows_per)
            s0, s1, s2, s3 = (np.repeat(s, groups) for s in _context_state(contexts[lo:hi], k0, k1))
            counter = np.tile(g, hi - lo)
            o = _philox(counter, s0, s1, s2, np.bitwise_xor(s3, np.uint32(k0)), (k1 ^ _TOKEN_DOMAIN) & _MASK)
            out[lo:hi] = np.stack(o, axis=1).reshape(hi - lo, groups * 4)
        return out[:, :v]

    def sample(self, logits: np.ndarray, contexts: np.ndarray, rng: np.random.Generator, *,
               temperature: float = 1.0, top_p: float = 1.0) -> np.ndarray:
        """Gumbel-max with vLLM's uniforms, ``argmax(logp - log(-log(u)))``; the dual key samples
        a row with key b with probability ``alpha`` (drawn from ``rng``), else with key a. Rows
        without a full context are sampled without the watermark."""
        logits = check_logits(logits, self.vocab_size)
        logp = apply_temperature_top_p(logits, temperature, top_p)
        contexts, full = check_contexts(contexts, logits.shape[0], self.context_width, self.vocab_size)
        out = np.empty(logits.shape[0], dtype=np.int64)
        if (~full).any():
            out[~full] = sample_from_logp(logp[~full], rng)
        rows = np.flatnonzero(full)
        if rows.size == 0:
            return out
        if self.dual:
            use_b = rng.random(rows.size) < self.params["alpha"]
            keys = [derive_watermark_key(self.vllm_key, b"key_a"), derive_watermark_key(self.vllm_key, b"key_b")]
            groups = [(rows[~use_b], keys[0]), (rows[use_b], keys[1])]
        else:
            groups = [(rows, self.vllm_key)]
        tiny = np.finfo(np.float32).tiny
        for sel, key in groups:
            if sel.size == 0:
                continue
            u = np.maximum(vllm_uniforms(self.row_words(contexts[sel], key)), tiny).astype(np.float64)
            noise = -np.log(-np.log(u))
            out[sel] = (logp[sel] + noise).argmax(axis=1)
        return out
