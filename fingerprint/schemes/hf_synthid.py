"""transformers' SynthID Text watermark (``SynthIDTextWatermarkingConfig``), reproduced in numpy.

Verifies text watermarked by transformers' ``SynthIDTextWatermarkLogitsProcessor`` without torch,
g-value for g-value on CPU, and tests it exactly.

How transformers computes a g-value (measured against torch 2.13 on CPU, see the tests):

* a hash runs over the ``ngram_len`` tokens (the ``ngram_len - 1`` previous ones, then the scored
  one), starting from 1: ``h = (h + token) * M + 1`` with ``M = 6364136223846793005``, in
  wrapping 64-bit arithmetic; then per depth ``d``: ``h_d = (h + keys[d]) * M + 1``;
* ``g_d = table[h_d mod sampling_table_size]`` with ``table = torch.randint(0, 2, (size,))`` after
  ``manual_seed(sampling_table_seed)``, which is the MT19937 stream (seed mod 2**32) mod 2.

The keys are the secret: the key file holds them in its ``secret`` field, 8 bytes each
(little-endian), so the secret is ``8 * depth`` bytes.

The test. With a power-of-two table (transformers' default is 65536 = 2**16), every g-value
of a tuple depends only on ``u = h mod N`` (``N`` the table size): ``g_d = G(u + keys[d])`` with
``G(x) = table[(x * M + 1) mod N]``. So tuples are de-duplicated on ``u`` (key-independent;
distinct tuples that share ``u`` share all their g-values), and the total over the distinct
units ``S`` is ``T = sum_d C(keys[d] mod N)`` with ``C(k) = sum_{u in S} G(u + k)``. Under H0
(the text is independent of the keys) with keys drawn at random, the ``keys[d] mod N`` are
independent and uniform, so the exact null of ``T`` is the ``depth``-fold convolution of the
histogram of ``C`` over all ``N`` shifts: no assumption that the (public) table is random, and
no independence assumed between units. ``C`` comes from one FFT cross-correlation; the
convolution is direct, so tail probabilities keep their relative precision. The smallest
reachable p-value is ``N ** -depth``. Other table sizes are refused (their g-values do not
reduce to shifts, and the units would collide in ways this test cannot count).

Limits: transformers skips watermarking when a context repeats within ``context_history_size``
steps, and pads the first ``ngram_len - 1`` contexts with zeros; verification needs neither
(it scores every distinct unit, and only tokens with a full window inside the text). The embed
side here is stateless (no repeated-context skip). CUDA generators draw different tables:
these schemes reproduce generation on CPU.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..stats import Effect, TestResult
from .base import ReproducedScheme, apply_temperature_top_p, check_logits, sample_from_logp

__all__ = ["HfSynthIdScheme", "ShiftNull", "synthid_keys_secret", "torch_randint_bits"]

MULTIPLIER = np.uint64(6364136223846793005)
_ONE = np.uint64(1)


def synthid_keys_secret(keys: list[int]) -> bytes:
    """The key-file secret holding transformers' SynthID ``keys`` (8 bytes each)."""
    if not keys:
        raise ParameterError("at least one SynthID key is needed")
    out = bytearray()
    for k in keys:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not -2**63 <= int(k) < 2**64:
            raise ParameterError(f"SynthID keys must be 64-bit integers, got {k!r}")
        out += (int(k) % 2**64).to_bytes(8, "little")
    return bytes(out)


@lru_cache(maxsize=8)
def torch_randint_bits(seed: int, size: int) -> np.ndarray:
    """``torch.randint(0, 2, (size,))`` on CPU after ``manual_seed(seed)``: ``(size,)`` uint8."""
    raw = np.random.RandomState(seed & 0xFFFFFFFF)._bit_generator.random_raw(size)
    return (raw & 1).astype(np.uint8)


class ShiftNull:
    """Exact null distribution of the SynthID total over the key space, for one set of units.

    ``units``: ``(s,)`` distinct values ``h mod N``; ``shift_g``: ``(N,)`` the g-value of
    position x, ``G(x)``; ``depth``: number of keys. ``n`` (g-bits) = ``s * depth``.
    """

    def __init__(self, units: np.ndarray, shift_g: np.ndarray, depth: int) -> None:
        size = shift_g.size
        self.n_units = int(units.size)
        self.depth = int(depth)
        self.n = self.n_units * self.depth
        indicator = np.zeros(size)
        indicator[np.asarray(units, dtype=np.int64)] = 1.0
        corr = np.fft.irfft(np.conj(np.fft.rfft(indicator)) * np.fft.rfft(shift_g.astype(np.float64)), n=size)
        self.correlation = np.rint(corr).astype(np.int64)  # C(k) for every shift k, (N,)
        low = int(self.correlation.min())
        single = np.bincount(self.correlation - low) / size
        pmf = np.ones(1)
        for _ in range(self.depth):
            pmf = np.convolve(pmf, single)
        self.offset = low * self.depth
        self.pmf = pmf  # P[T = offset + j]
        self.sf = np.cumsum(pmf[::-1])[::-1]  # P[T >= offset + j]
        self.null_mean = float(self.correlation.mean()) * self.depth

    @property
    def null_rate(self) -> float:
        """Expected share of 1-valued g-bits under H0."""
        return self.null_mean / self.n if self.n else math.nan

    def log10_sf(self, totals: np.ndarray) -> np.ndarray:
        """log10 P[T >= t] for each total, ``(r,)``."""
        j = np.rint(np.asarray(totals, dtype=np.float64)).astype(np.int64) - self.offset
        out = np.zeros(j.shape)
        inside = (j > 0) & (j < self.sf.size)
        with np.errstate(divide="ignore"):
            out[inside] = np.log10(np.maximum(self.sf[j[inside]], np.finfo(float).tiny))
        out[j >= self.sf.size] = math.log10(np.finfo(float).tiny)
        return np.minimum(out, 0.0)

    def randomized(self, totals: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``P[T > t] + u P[T = t]``, exactly U(0, 1) under H0, ``(r,)``."""
        j = np.rint(np.asarray(totals, dtype=np.float64)).astype(np.int64) - self.offset
        j = np.clip(j, 0, self.pmf.size - 1)
        return self.sf[j] - self.pmf[j] + u * self.pmf[j]

    def test(self, total: float, *, confidence_level: float = 0.95) -> TestResult:
        """The exact one-sided test of H0 for the observed total."""
        from scipy import stats

        log10_p = float(self.log10_sf(np.array([total]))[0])
        if self.n == 0:
            effect = Effect(math.nan, math.nan, math.nan, confidence_level, "clopper-pearson")
        else:
            ci = stats.binomtest(int(round(total)), self.n, 0.5).proportion_ci(confidence_level=confidence_level,
                                                                              method="exact")
            rate = self.null_rate
            effect = Effect(total / self.n - rate, ci.low - rate, ci.high - rate, confidence_level,
                            "clopper-pearson (descriptive: g-bits of one unit are not independent)")
        return TestResult("synthid-shift", float(total), self.n, self.null_rate, log10_p, effect)


class HfSynthIdScheme(ReproducedScheme):
    """transformers' SynthID Text watermark; parameters ``depth`` (number of keys, 30),
    ``ngram_len`` (5), ``sampling_table_size`` (65536), ``sampling_table_seed`` (0),
    ``context_history_size`` (1024, generation only). ``vocab_size`` is the model's logits width."""

    name = "hf-synthid"
    defaults = {"depth": 30, "ngram_len": 5, "sampling_table_size": 65536, "sampling_table_seed": 0,
                "context_history_size": 1024}
    #: The exact null depends on which units were scored, not only on how many.
    null_depends_on_tuples = True

    def __init__(self, secret: bytes, vocab_size: int, **params: Any) -> None:
        super().__init__(secret, vocab_size, **params)
        self.context_width = self.params["ngram_len"] - 1
        self.keys = np.frombuffer(bytes(secret), dtype="<u8").astype(np.uint64)
        if self.keys.size != self.params["depth"]:
            raise ParameterError(f"secret holds {self.keys.size} keys, depth is {self.params['depth']}")
        size = self.params["sampling_table_size"]
        self._mask = np.uint64(size - 1)
        self.table = torch_randint_bits(self.params["sampling_table_seed"], size)
        positions = np.arange(size, dtype=np.uint64)
        with np.errstate(over="ignore"):
            self.shift_g = self.table[((positions * MULTIPLIER + _ONE) & self._mask).astype(np.int64)]

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        out = dict(params)
        for name, low in (("depth", 1), ("ngram_len", 2), ("sampling_table_size", 2), ("sampling_table_seed", 0),
                          ("context_history_size", 1)):
            v = out[name]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ParameterError(f"{name} must be an integer >= {low}, got {v!r}")
            out[name] = int(v)
        size = out["sampling_table_size"]
        if size & (size - 1) or size > 2**24:
            raise ParameterError(f"sampling_table_size must be a power of two up to 2**24 for an exact test "
                                 f"(transformers' default is 65536), got {size}")
        if out["ngram_len"] - 1 > 16:
            raise ParameterError(f"ngram_len must be at most 17, got {out['ngram_len']}")
        return out

    @classmethod
    def _validate(cls, params: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - validate_params overrides
        return params

    @classmethod
    def secret_bytes(cls, params: dict[str, Any]) -> int:
        return 8 * params["depth"]

    # ---- hashes and g-values -----------------------------------------------------------
    def ngram_hashes(self, windows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """transformers' hash of each (window, token), before the keys: ``(n,)`` uint64."""
        tokens = np.asarray(tokens, dtype=np.int64)
        windows = np.asarray(windows, dtype=np.int64).reshape(tokens.size, self.context_width)
        h = np.ones(tokens.size, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for column in range(self.context_width):
                h = (h + windows[:, column].astype(np.uint64)) * MULTIPLIER + _ONE
            return (h + tokens.astype(np.uint64)) * MULTIPLIER + _ONE

    def g_values(self, windows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """transformers' g-values of each (window, token), ``(n, depth)`` uint8."""
        h = self.ngram_hashes(windows, tokens)
        with np.errstate(over="ignore"):
            keyed = (h[:, None] + self.keys[None, :]) * MULTIPLIER + _ONE
        return self.table[(keyed & self._mask).astype(np.int64)]

    def units_of_blocks(self, blocks: np.ndarray) -> np.ndarray:
        """The unit ``h mod N`` of each tuple, ``(n,)`` uint64: all its g-values depend on it alone."""
        return self.ngram_hashes(*self._tuples_of_blocks(blocks)) & self._mask

    # ---- score side --------------------------------------------------------------------
    def tuple_scores(self, windows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Number of 1-valued g-values of each tuple, ``(n,)`` int16 in ``[0, depth]``; in chunks
        of 2**18 tuples, so memory stays near ``2**18 * depth * 16`` bytes."""
        tokens = np.asarray(tokens)
        windows = np.asarray(windows).reshape(tokens.size, self.context_width)
        out = np.empty(tokens.size, dtype=np.int16)
        step = 1 << 18
        for lo in range(0, tokens.size, step):
            out[lo:lo + step] = self.g_values(windows[lo:lo + step], tokens[lo:lo + step]).sum(axis=1, dtype=np.int16)
        return out

    def distinct_mask(self, blocks: np.ndarray) -> np.ndarray:
        """First occurrence of each unit (key-independent), ``(n,)`` bool."""
        from ..windows import first_occurrence_mask

        return first_occurrence_mask(self.units_of_blocks(blocks))

    def set_null(self, blocks: np.ndarray) -> ShiftNull:
        """The exact null for the distinct-unit tuples ``blocks`` (already de-duplicated)."""
        return ShiftNull(self.units_of_blocks(blocks), self.shift_g, self.params["depth"])

    def test_totals(self, total: float, n_tuples: int, *, confidence_level: float = 0.95) -> TestResult:
        raise ParameterError("hf-synthid's exact test depends on which units were scored: use set_null(blocks)")

    def log10_pvalues(self, totals: np.ndarray, n_tuples: np.ndarray) -> np.ndarray:
        raise ParameterError("hf-synthid's exact test depends on which units were scored: use set_null(blocks)")

    def randomized_pvalues(self, totals: np.ndarray, n_tuples: int | np.ndarray, u: np.ndarray) -> np.ndarray:
        raise ParameterError("hf-synthid's exact test depends on which units were scored: use set_null(blocks)")

    @property
    def effect_prior_default(self) -> float:
        return 0.1

    def log10_bayes_factor(self, total: float, n_tuples: int, effect_max: float | None = None) -> float:
        from ..stats import log10_bayes_factor_binomial

        e = self.effect_prior_default if effect_max is None else effect_max
        bits = int(n_tuples) * self.params["depth"]
        return log10_bayes_factor_binomial(int(round(total)), bits, 0.5, e)

    # ---- embed side --------------------------------------------------------------------
    def bias_logits(self, logits: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        """transformers' ``update_scores``: log-probabilities after the depth tournament layers,
        ``(b, V)``; rows without a full context are returned unchanged (as logits)."""
        logits, contexts, rows = self._rows_with_context(logits, contexts)
        out = logits.copy()
        if rows.size == 0:
            return out
        v = self.vocab_size
        z = logits[rows] - logits[rows].max(axis=1, keepdims=True)
        probs = np.exp(z)
        probs /= probs.sum(axis=1, keepdims=True)
        g = self.g_values(np.repeat(contexts[rows], v, axis=0), np.tile(np.arange(v), rows.size))
        g = g.reshape(rows.size, v, -1).astype(np.float64)
        for d in range(g.shape[2]):
            mass = (g[:, :, d] * probs).sum(axis=1, keepdims=True)
            probs = probs * (1.0 + g[:, :, d] - mass)
        with np.errstate(divide="ignore"):
            out[rows] = np.where(probs > 0, np.log(probs), np.finfo(np.float64).min)
        return out

    def sample(self, logits: np.ndarray, contexts: np.ndarray, rng: np.random.Generator, *,
               temperature: float = 1.0, top_p: float = 1.0) -> np.ndarray:
        tempered = apply_temperature_top_p(check_logits(logits, self.vocab_size), temperature, top_p)
        return sample_from_logp(self.bias_logits(tempered, contexts), rng)
