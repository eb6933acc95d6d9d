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

The access modes. The logprob statistic and reading with the suspect's distributions weigh each
unit's g-value count with a fixed weight: the same shift argument gives the weighted null
(:class:`~fingerprint.stats.WeightedShiftNull`). Reading needs fed texts sampled without the key
(:meth:`HfSynthIdScheme.reading_problem` says why).

Limits: transformers skips watermarking when a context repeats within ``context_history_size``
steps, and pads the first ``ngram_len - 1`` contexts with zeros; verification needs neither
(it scores every distinct unit, and only tokens with a full window inside the text). The embed
side here is stateless (no repeated-context skip). CUDA generators draw different tables:
these schemes reproduce generation on CPU.
"""

from __future__ import annotations

import functools
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..stats import NullModel, ShiftNull, WeightedShiftNull
from .base import ReproducedScheme, apply_temperature_top_p, check_logits, sample_from_logp

__all__ = ["HfSynthIdScheme", "synthid_keys_secret", "torch_randint_bits"]

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


class HfSynthIdScheme(ReproducedScheme):
    """transformers' SynthID Text watermark; parameters ``depth`` (number of keys, 30),
    ``ngram_len`` (5), ``sampling_table_size`` (65536), ``sampling_table_seed`` (0),
    ``context_history_size`` (1024, generation only). ``vocab_size`` is the model's logits width."""

    name = "hf-synthid"
    defaults = {"depth": 30, "ngram_len": 5, "sampling_table_size": 65536, "sampling_table_seed": 0,
                "context_history_size": 1024}

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

    secret_options = {"synthid_keys": "transformers' SynthIDTextWatermarkingConfig keys, comma-separated (kept "
                                      "secret in the key file; default: depth random keys)"}

    @classmethod
    def secret_from_options(cls, params: dict[str, Any], options: dict[str, str]) -> tuple[bytes, dict[str, Any]]:
        raw = options["synthid_keys"]
        try:
            keys = [int(k) for k in raw.split(",")]
        except ValueError:
            raise ParameterError(f"SynthID keys must be comma-separated integers, got {raw!r}") from None
        return synthid_keys_secret(keys), {**params, "depth": len(keys)}

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
        """Number of 1-valued g-values of each tuple, ``(n,)`` int16 in ``[0, depth]``.

        A tuple's score depends on its unit ``u = h mod N`` alone (``sum_d G(u + keys[d])``), so
        for many tuples it is read from the table of all ``N`` unit scores (built once per key,
        ``N * depth`` lookups); a few tuples take their g-values directly, in chunks of 2**18
        tuples (memory near ``2**18 * depth * 16`` bytes). Both give the same scores."""
        tokens = np.asarray(tokens)
        windows = np.asarray(windows).reshape(tokens.size, self.context_width)
        if 4 * tokens.size >= self.params["sampling_table_size"]:
            units = self.ngram_hashes(windows, tokens) & self._mask
            return self._unit_scores[units.astype(np.int64)]
        out = np.empty(tokens.size, dtype=np.int16)
        step = 1 << 18
        for lo in range(0, tokens.size, step):
            out[lo:lo + step] = self.g_values(windows[lo:lo + step], tokens[lo:lo + step]).sum(axis=1, dtype=np.int16)
        return out

    @functools.cached_property
    def _unit_scores(self) -> np.ndarray:
        """The score of every unit ``u`` in ``[0, N)``, ``(N,)`` int16: ``sum_d G(u + keys[d])``."""
        units = np.arange(self.params["sampling_table_size"], dtype=np.uint64)
        out = np.zeros(units.size, dtype=np.int16)
        with np.errstate(over="ignore"):
            for key in self.keys:
                out += self.shift_g[((units + key) & self._mask).astype(np.int64)]
        return out

    def distinct_mask(self, blocks: np.ndarray) -> np.ndarray:
        """First occurrence of each unit (key-independent), ``(n,)`` bool."""
        from ..windows import first_occurrence_mask

        return first_occurrence_mask(self.units_of_blocks(blocks))

    def null(self, n_items: int, *, blocks: np.ndarray | None = None,
             weights: np.ndarray | None = None) -> NullModel:
        """The exact shift null for the distinct-unit tuples ``blocks`` (already de-duplicated);
        it depends on which units were scored, so ``blocks`` is required. With ``weights``
        ``(n,)`` (the logprob statistic, reading with distributions) the weighted shift null
        (:class:`~fingerprint.stats.WeightedShiftNull`: the same argument over the key's shifts,
        rounded up to a fine grid, conservative)."""
        if blocks is None or len(blocks) != n_items:
            raise ParameterError("hf-synthid's exact null depends on which units were scored: pass their blocks")
        if weights is not None:
            return WeightedShiftNull(self.units_of_blocks(blocks), weights, self.shift_g, self.params["depth"])
        return ShiftNull(self.units_of_blocks(blocks), self.shift_g, self.params["depth"])

    def reading_problem(self, *, fed_texts_clean: bool) -> str | None:
        """Texts fingerprinted with the key cannot be read: every g-value is an entry of one
        table read at ``unit + keys[d]``, so the entries that made the fed texts' tokens win
        their tournaments are read again by almost every other (window, token) pair at some
        other depth (with ``F`` fed tokens about ``depth**2 * F / N`` shared entries per pair),
        and under the shift null the key is no longer random once the fed texts are given (they
        identify it). Clean fed texts are independent of the key: the shift null is exact."""
        if fed_texts_clean:
            return None
        return ("hf-synthid: texts fingerprinted with this key cannot be read with a valid null: every g-value is an "
                "entry of one table read at (unit + key), and the entries that made the fed texts' tokens win "
                "their tournaments are read again by almost every other (window, token) pair, so no key-independent "
                "rule can keep the fed texts' bias out of the score (and they identify the key, which the exact "
                "null takes as random). Feed texts sampled without the fingerprint (--fed-texts-clean)")

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

    def warp_logits(self, logits: np.ndarray, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.bias_logits(logits, contexts)

    def sample(self, logits: np.ndarray, contexts: np.ndarray, rng: np.random.Generator, *,
               temperature: float = 1.0, top_p: float = 1.0) -> np.ndarray:
        tempered = apply_temperature_top_p(check_logits(logits, self.vocab_size), temperature, top_p)
        return sample_from_logp(self.bias_logits(tempered, contexts), rng)
