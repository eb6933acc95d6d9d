"""transformers' KGW watermark (``WatermarkingConfig``: lefthash / selfhash), reproduced in numpy.

Verifies text watermarked by Hugging Face transformers' ``WatermarkLogitsProcessor`` without
torch, bit for bit on CPU, and tests it with fingerprint's exact, de-duplicated statistics.

How transformers draws a green list (measured against torch 2.13 on CPU, see the tests):

* ``torch.Generator().manual_seed(s)`` seeds MT19937 with ``s mod 2**32``; numpy's
  ``RandomState(s & 0xffffffff)`` bit generator yields the same 32-bit stream;
* ``torch.randperm(n, generator)`` is a forward Fisher-Yates shuffle, swapping position ``i``
  with ``i + u32 % (n - i)``; the green list is the first ``int(n * greenlist_ratio)`` entries,
  which are final after that many steps;
* lefthash: ``s = hashing_key * previous_token``; selfhash: ``s = min(hashing_key * a * b)``
  in wrapping int64 arithmetic, ``a = table[w] + 1`` over the last ``context_width`` tokens
  (the scored token included), ``b = table[token] + 1``, with ``table = randperm(1_000_003)``
  seeded by the hashing key; then ``manual_seed(s % (2**64 - 1))``.

CUDA generators draw different streams: these schemes reproduce generation on CPU.

The hashing key is the secret: it is kept in the key file's ``secret`` field (little-endian,
first 8 bytes), never in the public parameters.

In fingerprint's terms the window is what the seed depends on: the previous token for
lefthash (h = 1), the ``context_width - 1`` previous tokens for selfhash (the token itself is
part of the seed). Exactly ``int(V * ratio)`` tokens are green per window, so flags of
distinct tuples with one window are sampled without replacement; the binomial tail with
gamma = green list size / V is then conservative (tested against the exact
sum-of-hypergeometrics null for lefthash).

De-duplication: a flag is a function of (seed, token), and distinct windows can share a seed
(lefthash with an even hashing key folds previous tokens that differ by a multiple of
2**(32 - a), 2**a dividing the key, onto one seed; selfhash takes a minimum over the window,
which often falls on the scored token's own term). So beyond fingerprint's (window, token)
de-duplication the scheme keeps only the first tuple of each (seed, token)
(:meth:`HfKgwScheme.distinct_mask`, applied per key by ``verify``, decoys included; the extra
drops are counted as duplicate tuples). With it the exact null holds for both seedings and
any key (tested over many keys against the sum-of-hypergeometrics null).
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..stats import BinomialNull, NullModel
from .base import ReproducedScheme, apply_temperature_top_p, sample_from_logp

__all__ = ["HfKgwScheme", "torch_randperm_prefix", "hashing_key_secret"]

TABLE_SIZE = 1_000_003
_U64 = (1 << 64) - 1


def hashing_key_secret(hashing_key: int) -> bytes:
    """The 32-byte key-file secret holding a transformers hashing key."""
    if not 0 <= hashing_key < 2**63:
        raise ParameterError(f"hashing key must be in [0, 2**63), got {hashing_key}")
    return struct.pack("<Q", hashing_key) + bytes(24)


def _mt_stream(seed: int, count: int) -> np.ndarray:
    return np.random.RandomState(seed & 0xFFFFFFFF)._bit_generator.random_raw(count)


def _mt_drawer():
    """``draw(seed, count)``: the first ``count`` 32-bit outputs of MT19937 seeded like torch's
    ``manual_seed`` (init_genrand). Reseeds one generator (about 15x faster than a new
    ``RandomState`` per seed) where numpy exposes that."""
    bits = np.random.MT19937(0)
    if hasattr(bits, "_legacy_seeding"):
        def draw(seed: int, count: int) -> np.ndarray:
            bits._legacy_seeding(seed)
            return bits.random_raw(count)
        return draw
    return lambda seed, count: _mt_stream(seed, count)


#: Seeds per chunk of :func:`torch_randperm_prefix`: the ``(n, chunk)`` working permutation stays
#: near 100 MB at n = 50k, and each of the k steps touches ``chunk`` entries.
_CHUNK = 512


def torch_randperm_prefix(seeds: np.ndarray | list[int], n: int, k: int) -> np.ndarray:
    """The first ``k`` entries of ``torch.randperm(n)`` on CPU after ``manual_seed(seed)``, for
    many seeds at once: ``(B,)`` -> ``(B, k)`` int64.

    The shuffle is sequential in its steps but independent across seeds, so it runs k vectorized
    steps over chunks of seeds, on a position-major ``(n, chunk)`` permutation (step i reads one
    contiguous row). Cost: about ``B * k`` swaps, the same work torch does per call.
    """
    seeds = np.asarray([int(s) & 0xFFFFFFFF for s in seeds], dtype=np.uint64)
    out = np.empty((seeds.size, k), dtype=np.int64)
    if k == 0 or seeds.size == 0:
        return out
    if not 0 < k <= n < 2**31:
        raise ParameterError(f"need 0 < k <= n < 2**31, got k={k}, n={n}")
    draw = _mt_drawer()
    steps = np.arange(k, dtype=np.uint32)
    span = (n - steps)[:, None]
    for start in range(0, seeds.size, _CHUNK):
        chunk = seeds[start:start + _CHUNK]
        b = chunk.size
        swap = np.empty((k, b), dtype=np.uint32)
        for j, seed in enumerate(chunk):
            swap[:, j] = draw(int(seed), k)
        swap %= span
        swap += steps[:, None]
        cols = np.arange(b, dtype=np.int64)
        perm = np.repeat(np.arange(n, dtype=np.int32), b).reshape(n, b)
        flat = perm.reshape(-1)
        for i in range(k):
            target = swap[i] * np.int64(b) + cols
            held = perm[i].copy()
            perm[i] = flat.take(target)
            flat[target] = held
        out[start:start + b] = perm[:k].T
    return out


def full_randperm(seed: int, n: int) -> np.ndarray:
    """``torch.randperm(n)`` on CPU after ``manual_seed(seed)``, all of it: ``(n,)`` int64.

    Vectorized rather than n sequential swaps. With ``z_i`` the swap target of step i, position
    i's final entry is what position ``z_i`` holds just before step i: the entry moved there by
    the previous step with the same target, if any, else ``z_i`` itself. What position j holds
    just before step j follows the same rule one level down (the last earlier step that targeted
    j), so every entry is found by chasing pointers to a position nothing had touched.
    """
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    steps = np.arange(n - 1, dtype=np.int64)
    z = (_mt_stream(seed, n - 1).astype(np.int64) % (n - steps)) + steps
    order = np.argsort(z * n + steps)  # grouped by target, steps ascending within a group
    zs = z[order]
    same = np.concatenate(([False], zs[1:] == zs[:-1]))
    prev_same = np.full(n - 1, -1, dtype=np.int64)
    prev_same[order[same]] = order[np.flatnonzero(same) - 1]
    # last step before j that moved an entry into position j (self-swaps move nothing)
    moved = z != steps
    hits = order[moved[order]]
    target = z[hits]
    latest = np.ones(target.size, dtype=bool)
    latest[:-1] = target[1:] != target[:-1]
    last_hit = np.full(n, -1, dtype=np.int64)
    last_hit[target[latest]] = hits[latest]
    held = np.arange(n - 1, dtype=np.int64)  # what position j holds just before step j
    ptr = last_hit[:n - 1].copy()
    live = np.flatnonzero(ptr >= 0)
    while live.size:
        held[live] = ptr[live]
        ptr[live] = last_hit[ptr[live]]
        live = live[ptr[live] >= 0]
    perm = np.empty(n, dtype=np.int64)
    perm[:n - 1] = np.where(~moved, held, np.where(prev_same >= 0, held[np.maximum(prev_same, 0)], z))
    seen = np.zeros(n, dtype=bool)
    seen[perm[:n - 1]] = True
    perm[n - 1] = int(np.flatnonzero(~seen)[0])
    return perm


@lru_cache(maxsize=4)
def _fixed_table(hashing_key: int) -> np.ndarray:
    return full_randperm(hashing_key, TABLE_SIZE)


class HfKgwScheme(ReproducedScheme):
    """transformers' KGW watermark; parameters ``seeding`` (lefthash/selfhash),
    ``context_width`` (transformers' context width, default 1), ``greenlist_ratio`` (0.25),
    ``bias`` (2.0). ``vocab_size`` is the model's logits width."""

    name = "hf-kgw"
    defaults = {"seeding": "lefthash", "context_width": 1, "greenlist_ratio": 0.25, "bias": 2.0}

    def __init__(self, secret: bytes, vocab_size: int, **params: Any) -> None:
        super().__init__(secret, vocab_size, **params)
        self.hashing_key = struct.unpack("<Q", bytes(secret)[:8])[0] & (2**63 - 1)
        self.hf_context_width = self.params["context_width"]
        # fingerprint's window: what the seed depends on besides the scored token
        self.context_width = 1 if self.params["seeding"] == "lefthash" else self.hf_context_width - 1
        self.greenlist_size = int(self.vocab_size * self.params["greenlist_ratio"])
        self._gamma = self.greenlist_size / self.vocab_size

    secret_options = {"hashing_key": "transformers' WatermarkingConfig hashing_key (kept secret in the key file; "
                                     "default: a random 63-bit key)"}

    @classmethod
    def secret_from_options(cls, params: dict[str, Any], options: dict[str, str]) -> tuple[bytes, dict[str, Any]]:
        raw = options["hashing_key"]
        try:
            value = int(raw)
        except ValueError:
            raise ParameterError(f"hashing key must be an integer, got {raw!r}") from None
        return hashing_key_secret(value), params

    @classmethod
    def _validate(cls, params: dict[str, Any]) -> dict[str, Any]:
        if params["seeding"] not in ("lefthash", "selfhash"):
            raise ParameterError(f"seeding must be 'lefthash' or 'selfhash', got {params['seeding']!r}")
        if params["context_width"] < 1:
            raise ParameterError(f"context_width must be >= 1 for hf-kgw, got {params['context_width']}")
        r = params["greenlist_ratio"]
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < 1:
            raise ParameterError(f"greenlist_ratio must be in (0, 1), got {r!r}")
        b = params["bias"]
        if isinstance(b, bool) or not isinstance(b, (int, float)) or b < 0:
            raise ParameterError(f"bias must be a number >= 0, got {b!r}")
        return {**params, "greenlist_ratio": float(r), "bias": float(b)}

    # ---- seeds and green flags ------------------------------------------------------------
    def seeds32(self, windows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """transformers' generator seed mod 2**32 (all that MT19937 keeps) per tuple, ``(n,)``
        uint64; windows ``(n, h)``, tokens ``(n,)``."""
        key = self.hashing_key
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.size == 0:
            return np.zeros(0, dtype=np.uint64)
        windows = np.asarray(windows, dtype=np.int64).reshape(tokens.size, -1)
        if self.params["seeding"] == "lefthash":
            # Python-int product, as transformers computes it; one per distinct previous token
            prev = windows[:, -1]
            order = np.sort(prev)
            distinct = order[np.concatenate(([True], order[1:] != order[:-1]))]
            seeds = np.array([((key * int(p)) % _U64) & 0xFFFFFFFF for p in distinct], dtype=np.uint64)
            return seeds[np.searchsorted(distinct, prev)]
        table = _fixed_table(key)
        seq = np.concatenate([windows, tokens[:, None]], axis=1)
        with np.errstate(over="ignore"):
            a = table[seq % TABLE_SIZE] + 1
            b = (table[tokens % TABLE_SIZE] + 1)[:, None]
            low = ((np.int64(key) * a) * b).min(axis=1)  # wrapping int64, as torch computes it
        # low % (2**64 - 1) in Python terms: low if low >= 0, else low + 2**64 - 1
        return (low.view(np.uint64) - (low < 0).astype(np.uint64)) & np.uint64(0xFFFFFFFF)

    def green_flags(self, windows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """transformers' green flag of each (window, token), ``(n,)`` bool."""
        tokens = np.asarray(tokens, dtype=np.int64)
        return self._flags_of_seeds(self.seeds32(windows, tokens), tokens)

    def _flags_of_seeds(self, seeds: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        out = np.zeros(tokens.size, dtype=bool)
        if tokens.size == 0:
            return out
        order = np.argsort(seeds, kind="stable")
        sorted_seeds = seeds[order]
        starts = np.flatnonzero(np.concatenate(([True], sorted_seeds[1:] != sorted_seeds[:-1])))
        distinct = sorted_seeds[starts]
        group = np.repeat(np.arange(starts.size), np.diff(np.append(starts, seeds.size)))
        for lo in range(0, distinct.size, _CHUNK):
            hi = min(lo + _CHUNK, distinct.size)
            prefix = torch_randperm_prefix(distinct[lo:hi], self.vocab_size, self.greenlist_size)
            mask = np.zeros((hi - lo, self.vocab_size), dtype=bool)
            np.put_along_axis(mask, prefix, True, axis=1)
            a, b = starts[lo], (starts[hi] if hi < starts.size else seeds.size)
            rows = order[a:b]
            out[rows] = mask[group[a:b] - lo, tokens[rows]]
        return out

    def distinct_mask(self, blocks: np.ndarray) -> np.ndarray:
        """First occurrence of each (seed, token) among tuples encoded as blocks, ``(n,)`` bool.

        A flag is a function of (seed, token), and distinct windows can share a seed (selfhash
        takes a minimum over the window; lefthash with an even hashing key folds previous
        tokens together), so (window, token) de-duplication alone would count one flag twice.
        """
        from ..windows import first_occurrence_mask

        windows, tokens = self._tuples_of_blocks(blocks)
        return first_occurrence_mask((self.seeds32(windows, tokens) << np.uint64(32)) | tokens.astype(np.uint64))

    # ---- score side -----------------------------------------------------------------------
    def tuple_scores(self, windows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        return self.green_flags(np.asarray(windows).reshape(len(tokens), self.context_width), tokens).astype(np.int8)

    def null(self, n_items: int, *, blocks: np.ndarray | None = None,
             weights: np.ndarray | None = None) -> NullModel:
        """Binom(n, green list size / V) over (seed, token)-distinct tuples (conservative: flags of
        one window are drawn without replacement). A weighted statistic has no valid null here:
        the flags of a window's candidates are dependent (exactly ``int(V * ratio)`` are green)."""
        if weights is not None:
            raise ParameterError("hf-kgw: the weighted (logprob) statistic has no exact null for transformers' "
                                 "fixed-size green lists; use --mode text")
        return BinomialNull(n_items, self._gamma, sequential=False)

    # ---- embed side -----------------------------------------------------------------------
    def bias_logits(self, logits: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        """What transformers' processor does to raw logits ``(b, V)``; contexts ``(b, h)``."""
        logits, contexts, rows = self._rows_with_context(logits, contexts)
        out = logits.copy()
        if rows.size == 0:
            return out
        if self.params["seeding"] == "lefthash":
            seeds = self.seeds32(contexts[rows], np.zeros(rows.size, dtype=np.int64))
            prefix = torch_randperm_prefix(seeds, self.vocab_size, self.greenlist_size)
            for r, p in zip(rows, prefix):
                out[r, p] += self.params["bias"]
            return out
        # selfhash: transformers checks the 40 most likely candidates, each with its own green list
        top = np.argsort(-logits[rows], axis=1, kind="stable")[:, :40]
        win = np.repeat(contexts[rows], top.shape[1], axis=0)
        green = self.green_flags(win, top.ravel()).reshape(top.shape)
        for i, r in enumerate(rows):
            out[r, top[i, green[i]]] += self.params["bias"]
        return out

    def warp_logits(self, logits: np.ndarray, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.bias_logits(logits, contexts)

    def sample(self, logits: np.ndarray, contexts: np.ndarray, rng: np.random.Generator, *,
               temperature: float = 1.0, top_p: float = 1.0) -> np.ndarray:
        biased = self.bias_logits(logits, contexts)
        return sample_from_logp(apply_temperature_top_p(biased, temperature, top_p), rng)
