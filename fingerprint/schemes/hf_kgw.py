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

The access modes. The logprob statistic and reading with the suspect's distributions weigh the
flags of several candidates per window; those flags are negatively associated (one fixed-size
green list per seed), so the independent weighted Bernoulli(gamma) null is conservative in the
convex order (see :meth:`HfKgwScheme.null`). Reading texts fingerprinted with the key works for
lefthash (the fed pairs are not scored, and no other pair shares their flag); selfhash seeds
are shared across windows in a key-dependent way, so it reads clean fed texts only
(:meth:`HfKgwScheme.reading_problem`).

Speed. Verification asks only whether a few tokens per seed are green, so no green list is
built: :func:`torch_randperm_contains` traces each asked token through the shuffle's swap
targets (see the comment above it), which costs the ``k = int(V * ratio)`` MT19937 draws of the
seed and nothing per swap. The trace runs in a compiled kernel when numba is installed (the
``fast`` extra; about 1 ns per draw, seeds split over threads) and in numpy otherwise (about
10x slower, same answers); ``FINGERPRINT_HF_KGW_KERNEL=numpy|numba|auto`` chooses. The work
that does not depend on the key (the tuples decoded from the evidence, lefthash's distinct
(previous token, token) pairs) is shared by the key and its decoys.
"""

from __future__ import annotations

import os
import struct
import weakref
from functools import lru_cache
from typing import Any, ClassVar, NamedTuple

import numpy as np

from ..errors import ParameterError
from ..stats import BinomialNull, NullModel, WeightedBernoulliNull
from ..windows import first_occurrence_mask
from .base import ReproducedScheme, apply_temperature_top_p, sample_from_logp

__all__ = ["HfKgwScheme", "torch_randperm_prefix", "torch_randperm_contains", "lefthash_seeds32",
           "hashing_key_secret"]

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


# ---- green membership without the permutation ---------------------------------------------
#
# Whether value t ends in the first k entries of a forward Fisher-Yates shuffle depends only on
# the swap targets j_i = i + u32_i % (n - i) of steps i < k, and can be traced for t alone:
# t sits at position p (initially t); step i swaps positions i and j_i, so t moves when
# j_i == p (to position i, which no later step touches: green, as i < k) or when i == p (to
# j_i >= p; if j_i == p it stays at p = i: green). Active values are never behind the step
# (p >= i), so t is green iff some step i in [cur, min(p, k - 1)] has j_i == p, where cur is
# the step after t's last move (0 at first); otherwise t moves on at step p < k to
# j_p > p and the search repeats from cur = p + 1, or it stays at p >= k: not green. Each
# value's path depends on the swap targets alone, never on other values.
#
# The cost is the k swap targets per distinct seed (k MT19937 draws and a remainder), not
# k swaps of a materialised permutation; targets are looked up, never moved.

#: Environment variable choosing the membership kernel: ``auto`` (default; numba when it is
#: installed and the work is large enough to pay for its start-up), ``numba`` or ``numpy``.
KERNEL_ENV = "FINGERPRINT_HF_KGW_KERNEL"
#: Below this many traced steps (distinct seeds x green list size) ``auto`` keeps to numpy, until
#: the compiled kernel has been loaded once in this process (loading it costs about a second).
_NUMBA_MIN_STEPS = 2_000_000
#: Bytes of working arrays per chunk of seeds in the numpy kernel.
_NUMPY_CHUNK_BYTES = 32 << 20


def _group_by_seed(seeds: np.ndarray, tokens: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (seed, token) pairs grouped by seed: distinct seeds ``(G,)`` uint64, group starts
    ``(G + 1,)`` int64, each group's distinct tokens ``(P,)`` int64 (seed-major, ascending) and
    the pair index of every input ``(m,)`` int64."""
    packed = (np.asarray(seeds, dtype=np.uint64) & np.uint64(0xFFFFFFFF)) << np.uint64(32)
    packed |= np.asarray(tokens, dtype=np.int64).astype(np.uint64)
    pairs, inverse = np.unique(packed, return_inverse=True)
    pair_seeds = pairs >> np.uint64(32)
    first = np.flatnonzero(np.concatenate(([True], pair_seeds[1:] != pair_seeds[:-1])))
    starts = np.append(first, pairs.size).astype(np.int64)
    targets = (pairs & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return pair_seeds[first], starts, targets, inverse.reshape(-1).astype(np.int64)


def _green_numpy(seeds: np.ndarray, starts: np.ndarray, targets: np.ndarray, n: int, k: int) -> np.ndarray:
    """The membership trace in numpy, for groups laid out as :func:`_group_by_seed` returns.

    Per chunk of seeds: the ``(B, k)`` swap targets. A value's moves need no search (at step
    p < k it moves to j_p), so its path p_0 = t, p_1 = j_{p_0}, ... (while p < k and j_p != p)
    is followed first; segment m waits at p_m over steps [p_{m-1} + 1, min(p_m, k - 1)], and the
    value is green iff some segment sees a step there whose target is p_m (a hit after an earlier
    hit only repeats "green"). One pass over the chunk's swap targets reads a table of segments
    by (seed, position); segments that share a cell (two values at one position at different
    times) wait for a further pass."""
    out = np.zeros(targets.size, dtype=bool)
    if k == 0 or targets.size == 0:
        return out
    draw = _mt_drawer()
    steps = np.arange(k, dtype=np.uint32)
    span = (n - np.arange(k, dtype=np.int64)).astype(np.uint32)
    counts = np.diff(starts)
    per_chunk = max(1, min(_NUMPY_CHUNK_BYTES // (k * 13 + n * 4), (2**31 - 1) // n, seeds.size))
    table: np.ndarray | None = None  # (per_chunk * n,) int32: segment waiting at each cell, -1 if none
    for g0 in range(0, seeds.size, per_chunk):
        g1 = min(seeds.size, g0 + per_chunk)
        b = g1 - g0
        swap = np.empty((b, k), dtype=np.uint32)
        for r in range(b):
            swap[r] = draw(int(seeds[g0 + r]), k)
        np.remainder(swap, span, out=swap)
        swap += steps  # j_i, every row
        q0 = int(starts[g0])
        row = np.repeat(np.arange(b, dtype=np.int64), counts[g0:g1])
        # each value's path: segments (value, row, position, first step, last step)
        seg_q, seg_row, seg_pos, seg_lo = [], [], [], []
        q = np.arange(row.size, dtype=np.int64)
        pos = targets[q0:q0 + row.size].astype(np.int64)
        lo = np.zeros(row.size, dtype=np.int64)
        while q.size:
            seg_q.append(q)
            seg_row.append(row[q])
            seg_pos.append(pos)
            seg_lo.append(lo)
            early = pos < k
            q, pos = q[early], pos[early]
            nxt = swap[row[q], pos].astype(np.int64)
            moves = nxt != pos  # a value with j_p == p stays: its own segment sees that step
            q, lo, pos = q[moves], pos[moves] + 1, nxt[moves]
        sq, srow, spos, slo = (np.concatenate(a) for a in (seg_q, seg_row, seg_pos, seg_lo))
        shi = np.minimum(spos, k - 1)
        swap += (np.arange(b, dtype=np.uint32) * np.uint32(n))[:, None]  # now the (seed, position) cell
        cells = swap.reshape(-1)
        cell_of_seg = srow * n + spos
        if table is None:
            table = np.full(per_chunk * n, -1, dtype=np.int32)
        green = np.zeros(row.size, dtype=bool)
        waiting = np.arange(sq.size, dtype=np.int64)
        while waiting.size:
            first = first_occurrence_mask(cell_of_seg[waiting])
            now, waiting = waiting[first], waiting[~first]
            table[cell_of_seg[now]] = now
            rows = np.unique(srow[now])
            flat = cells if rows.size == b else cells.reshape(b, k)[rows].reshape(-1)
            hit = table.take(flat)
            at = np.flatnonzero(hit >= 0)
            seg = hit[at].astype(np.int64)
            step = at % k
            ok = (step >= slo[seg]) & (step <= shi[seg])
            green[sq[seg[ok]]] = True
            table[cell_of_seg[now]] = -1
        out[q0:q0 + row.size] = green
    return out


@lru_cache(maxsize=1)
def _numba_kernel() -> Any:
    """The compiled membership trace (numba, cached on disk), or None without numba.

    ``kernel(seeds, starts, targets, n, k, inv, out, g_lo, g_hi)`` traces the groups
    ``g_lo:g_hi`` and sets ``out`` for their values. Per seed: MT19937 seeded as
    ``init_genrand``, 624 outputs per twist, each tempered and reduced mod ``n - i`` with a
    float reciprocal and an exact correction (vectorised over the block); then the block's
    swap targets are checked against the traced values: in registers for up to 4 values, else
    through a byte mark per position. Releases the GIL (threads split the seeds)."""
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def kernel(seeds, starts, targets, n, k, inv, out, g_lo, g_hi):  # pragma: no cover - compiled
        mt = np.empty(624, np.uint32)
        jb = np.empty(624, np.uint64)
        mark = np.zeros(n, np.uint8)
        at = np.full(n, -1, np.int64)
        q_base = starts[g_lo]
        pos = np.empty(starts[g_hi] - q_base, np.int64)
        for g in range(g_lo, g_hi):
            lo = starts[g]
            hi = starts[g + 1]
            for q in range(lo, hi):
                t = targets[q]
                at[t] = q
                pos[q - q_base] = t
                mark[t] = 1
            active = hi - lo
            x = np.uint32(seeds[g] & np.uint64(0xFFFFFFFF))
            mt[0] = x
            for i in range(1, 624):
                x = np.uint32(np.uint32(1812433253) * (x ^ (x >> np.uint32(30))) + np.uint32(i))
                mt[i] = x
            small = active <= 4
            base = 0
            while base < k and active > 0:
                for i in range(227):
                    y = (mt[i] & np.uint32(0x80000000)) | (mt[i + 1] & np.uint32(0x7FFFFFFF))
                    mt[i] = mt[i + 397] ^ (y >> np.uint32(1)) ^ ((y & np.uint32(1)) * np.uint32(0x9908B0DF))
                for i in range(227, 623):
                    y = (mt[i] & np.uint32(0x80000000)) | (mt[i + 1] & np.uint32(0x7FFFFFFF))
                    mt[i] = mt[i - 227] ^ (y >> np.uint32(1)) ^ ((y & np.uint32(1)) * np.uint32(0x9908B0DF))
                y = (mt[623] & np.uint32(0x80000000)) | (mt[0] & np.uint32(0x7FFFFFFF))
                mt[623] = mt[396] ^ (y >> np.uint32(1)) ^ ((y & np.uint32(1)) * np.uint32(0x9908B0DF))
                m = min(624, k - base)
                scan = True
                if small:
                    p0 = p1 = p2 = p3 = -1
                    c = 0
                    moves = False
                    for q in range(lo, hi):
                        p = pos[q - q_base]
                        if at[p] != q:
                            continue  # settled
                        moves = moves or p < base + m
                        if c == 0:
                            p0 = p
                        elif c == 1:
                            p1 = p
                        elif c == 2:
                            p2 = p
                        else:
                            p3 = p
                        c += 1
                    hits = 0
                    for i in range(m):
                        y = mt[i]
                        y ^= y >> np.uint32(11)
                        y ^= (y << np.uint32(7)) & np.uint32(0x9D2C5680)
                        y ^= (y << np.uint32(15)) & np.uint32(0xEFC60000)
                        y ^= y >> np.uint32(18)
                        yi = np.int64(y)
                        d = n - base - i
                        r = yi - np.int64(yi * inv[base + i]) * d
                        r = r + d if r < 0 else r
                        r = r - d if r >= d else r
                        j = base + i + r
                        jb[i] = np.uint64(j)
                        hits |= (j == p0) | (j == p1) | (j == p2) | (j == p3)
                    scan = moves or hits != 0
                else:
                    for i in range(m):
                        y = mt[i]
                        y ^= y >> np.uint32(11)
                        y ^= (y << np.uint32(7)) & np.uint32(0x9D2C5680)
                        y ^= (y << np.uint32(15)) & np.uint32(0xEFC60000)
                        y ^= y >> np.uint32(18)
                        yi = np.int64(y)
                        d = n - base - i
                        r = yi - np.int64(yi * inv[base + i]) * d
                        r = r + d if r < 0 else r
                        r = r - d if r >= d else r
                        jb[i] = np.uint64(base + i + r)
                if scan:
                    for ii in range(m):
                        i = np.uint64(base + ii)
                        j = jb[ii]
                        if mark[i] | mark[j]:
                            a = at[i]
                            if a >= 0:  # the value at position i moves to j (or stays: green)
                                at[i] = -1
                                mark[i] = 0
                                if j == i:
                                    out[a] = True
                                    active -= 1
                                else:
                                    b = at[j]
                                    if b >= 0:  # the value at j moves to position i < k: green
                                        out[b] = True
                                        active -= 1
                                    at[j] = a
                                    mark[j] = 1
                                    pos[a - q_base] = np.int64(j)
                            else:
                                b = at[j]
                                out[b] = True
                                at[j] = -1
                                mark[j] = 0
                                active -= 1
                            if active == 0:
                                break
                base += 624
            for q in range(lo, hi):
                p = pos[q - q_base]
                if at[p] == q:
                    at[p] = -1
                    mark[p] = 0

    return kernel


_numba_loaded = False


def _green_numba(kernel: Any, seeds: np.ndarray, starts: np.ndarray, targets: np.ndarray, n: int,
                 k: int) -> np.ndarray:
    global _numba_loaded
    out = np.zeros(targets.size, dtype=np.bool_)
    if k == 0 or targets.size == 0:
        return out
    seeds = np.ascontiguousarray(seeds, dtype=np.uint64)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    targets = np.ascontiguousarray(targets, dtype=np.int64)
    inv = 1.0 / (n - np.arange(k, dtype=np.float64))
    g_total = seeds.size
    workers = min(_cpu_count(), max(1, g_total * k // 50_000_000))
    if workers == 1:
        kernel(seeds, starts, targets, n, k, inv, out, 0, g_total)
    else:
        from concurrent.futures import ThreadPoolExecutor

        parts = 4 * workers
        cuts = [g_total * i // parts for i in range(parts + 1)]
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda i: kernel(seeds, starts, targets, n, k, inv, out, cuts[i], cuts[i + 1]),
                          range(parts)))
    _numba_loaded = True
    return out


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _green_grouped(seeds: np.ndarray, starts: np.ndarray, targets: np.ndarray, n: int, k: int,
                   kernel: str | None = None) -> np.ndarray:
    """Green membership of grouped values (distinct within each seed's group), ``(P,)`` bool."""
    choice = (kernel or os.environ.get(KERNEL_ENV) or "auto").lower()
    if choice not in ("auto", "numba", "numpy"):
        raise ParameterError(f"{KERNEL_ENV} must be auto, numba or numpy, got {choice!r}")
    if not 0 <= k <= n < 2**31:
        raise ParameterError(f"need 0 <= k <= n < 2**31, got k={k}, n={n}")
    if choice != "numpy" and (choice == "numba" or _numba_loaded or seeds.size * k >= _NUMBA_MIN_STEPS):
        compiled = _numba_kernel()
        if compiled is not None:
            return _green_numba(compiled, seeds, starts, targets, n, k)
        if choice == "numba":
            raise ParameterError("the numba kernel needs numba: pip install 'fingerprint[fast]'")
    return _green_numpy(seeds, starts, targets, n, k)


def torch_randperm_contains(seeds: np.ndarray | list[int], tokens: np.ndarray | list[int], n: int, k: int, *,
                            kernel: str | None = None) -> np.ndarray:
    """Whether ``tokens[i]`` is among the first ``k`` entries of ``torch.randperm(n)`` on CPU
    after ``manual_seed(seeds[i])``: ``(m,)``, ``(m,)`` -> ``(m,)`` bool.

    Traces the tokens through the shuffle's swaps without building any permutation: the cost
    is ``k`` MT19937 draws per distinct seed however many tokens it is asked about.
    ``kernel``: ``"numba"``, ``"numpy"`` or ``"auto"`` (default: the environment variable
    ``FINGERPRINT_HF_KGW_KERNEL``, else auto); both give the same answer.
    """
    seeds = np.asarray([int(s) & 0xFFFFFFFF for s in seeds] if isinstance(seeds, list) else seeds)
    tokens = np.asarray(tokens, dtype=np.int64)
    if seeds.shape != tokens.shape or tokens.ndim != 1:
        raise ParameterError(f"seeds and tokens must have one shape (m,), got {seeds.shape} and {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= n):
        raise ParameterError(f"tokens must be in [0, {n}), got {int(tokens.min())}..{int(tokens.max())}")
    if tokens.size == 0:
        return np.zeros(0, dtype=bool)
    seeds = seeds.astype(np.uint64) & np.uint64(0xFFFFFFFF)
    distinct, starts, targets, inverse = _group_by_seed(seeds, tokens)
    return _green_grouped(distinct, starts, targets, n, k, kernel)[inverse]


def lefthash_seeds32(hashing_key: int, previous: np.ndarray) -> np.ndarray:
    """transformers' lefthash seed mod 2**32, ``((key * previous) mod (2**64 - 1)) mod 2**32``,
    in exact uint64 arithmetic: ``(m,)`` ids -> ``(m,)`` uint64. The product is at most 94 bits:
    its high and low 64-bit words are added (``2**64 = 1`` modulo ``2**64 - 1``)."""
    p = np.asarray(previous, dtype=np.int64)
    if p.size and p.min() < 0:
        raise ParameterError("previous token ids must be >= 0")
    p = p.astype(np.uint64)
    mask32 = np.uint64(0xFFFFFFFF)
    k_lo, k_hi = np.uint64(hashing_key & 0xFFFFFFFF), np.uint64(hashing_key >> 32)
    p_lo, p_hi = p & mask32, p >> np.uint64(32)
    with np.errstate(over="ignore"):
        # 128-bit product of key (< 2**63) and p (< 2**64) from 32-bit limbs
        ll, lh, hl, hh = k_lo * p_lo, k_lo * p_hi, k_hi * p_lo, k_hi * p_hi
        mid = (ll >> np.uint64(32)) + (lh & mask32) + (hl & mask32)
        low = (ll & mask32) | ((mid & mask32) << np.uint64(32))
        high = hh + (lh >> np.uint64(32)) + (hl >> np.uint64(32)) + (mid >> np.uint64(32))
        total = low + high
        total += (total < low).astype(np.uint64)  # the carry out of 2**64 counts 1
    total[total == np.uint64(_U64)] = 0
    return total & mask32


@lru_cache(maxsize=4)
def _fixed_table(hashing_key: int) -> np.ndarray:
    return full_randperm(hashing_key, TABLE_SIZE)


class _Prepared(NamedTuple):
    """Key-independent data of a blocks array: its tuples, and for lefthash the distinct
    (previous token, token) pairs grouped by previous token (values, starts, tokens, pair of each
    tuple, first occurrence of each pair)."""

    windows: np.ndarray
    tokens: np.ndarray
    lefthash: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None


class _BlockState(NamedTuple):
    """One key's view of a blocks array: distinct (seed, token) pairs grouped by seed, the pair
    of each tuple and the first occurrence of each pair."""

    ref: Any
    seeds: np.ndarray
    starts: np.ndarray
    targets: np.ndarray
    inverse: np.ndarray
    first: np.ndarray


def _forget_prepared(ref: Any) -> None:
    """Drop the shared key-independent data once its blocks are gone."""
    cached = HfKgwScheme._prepared
    if cached is not None and cached[0] is ref:
        HfKgwScheme._prepared = None


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
            # (key * previous token) % (2**64 - 1) as transformers computes it in Python ints
            return lefthash_seeds32(key, windows[:, -1])
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
        return torch_randperm_contains(seeds, tokens, self.vocab_size, self.greenlist_size)

    # ---- tuples encoded as blocks (what verify scores, once per key and per decoy key) -----
    #: The key-independent part of the last blocks seen (every key and decoy of one verify scores
    #: the same blocks): (weak reference to the blocks, seeding, context width, prepared data).
    #: Blocks are taken as immutable, as the pipeline's evidence is.
    _prepared: ClassVar[tuple[Any, str, int, "_Prepared"] | None] = None

    #: This key's view of the last blocks it scored (``scores_of_blocks`` and ``distinct_mask``
    #: are called on the same blocks).
    _state: "_BlockState | None" = None

    def _prepare(self, blocks: np.ndarray) -> "_Prepared":
        seeding, cw = self.params["seeding"], self.context_width
        cached = HfKgwScheme._prepared
        if cached is not None and cached[0]() is blocks and cached[1:3] == (seeding, cw):
            return cached[3]
        windows, tokens = self._tuples_of_blocks(blocks)
        groups = None
        if seeding == "lefthash" and tokens.size:
            # distinct (previous token, token) pairs grouped by previous token: one seed per group
            prev_values, starts, targets, inverse = _group_by_seed(windows[:, -1].astype(np.uint64), tokens)
            groups = (prev_values, starts, targets, inverse, first_occurrence_mask(inverse))
        prepared = _Prepared(windows, tokens, groups)
        HfKgwScheme._prepared = (weakref.ref(blocks, _forget_prepared), seeding, cw, prepared)
        return prepared

    def _block_state(self, blocks: np.ndarray) -> "_BlockState":
        """Seeds grouped for the membership trace, and the (seed, token) first occurrences, of
        ``blocks`` under this key (kept for the next call with the same blocks)."""
        state = self._state
        if state is not None and state.ref() is blocks:
            return state
        prep = self._prepare(blocks)
        groups = None
        if prep.lefthash is not None:
            prev_values, starts, targets, inverse, first = prep.lefthash
            seeds = lefthash_seeds32(self.hashing_key, prev_values)
            ordered = np.sort(seeds)
            if not (ordered[1:] == ordered[:-1]).any():  # distinct previous tokens keep distinct seeds
                groups = (seeds, starts, targets, inverse, first)
            else:  # some previous tokens share a seed (even keys fold them): regroup the pairs by seed
                pair_seeds = np.repeat(seeds, np.diff(starts))
                distinct, starts2, targets2, inverse2 = _group_by_seed(pair_seeds, targets)
                inverse2 = inverse2[inverse]
                groups = (distinct, starts2, targets2, inverse2, first_occurrence_mask(inverse2))
        if groups is None:
            seeds = self.seeds32(prep.windows, prep.tokens)
            distinct, starts, targets, inverse = _group_by_seed(seeds, prep.tokens)
            groups = (distinct, starts, targets, inverse, first_occurrence_mask(inverse))
        state = _BlockState(weakref.ref(blocks), *groups)
        self._state = state
        return state

    def scores_of_blocks(self, blocks: np.ndarray) -> np.ndarray:
        """Green flags ``(n,)`` int8 of tuples encoded as blocks (see :meth:`green_flags`)."""
        if len(blocks) == 0:
            return np.zeros(0, dtype=np.int8)
        s = self._block_state(blocks)
        green = _green_grouped(s.seeds, s.starts, s.targets, self.vocab_size, self.greenlist_size)
        return green[s.inverse].astype(np.int8)

    def distinct_mask(self, blocks: np.ndarray) -> np.ndarray:
        """First occurrence of each (seed, token) among tuples encoded as blocks, ``(n,)`` bool.

        A flag is a function of (seed, token), and distinct windows can share a seed (selfhash
        takes a minimum over the window; lefthash with an even hashing key folds previous
        tokens together), so (window, token) de-duplication alone would count one flag twice.
        """
        if len(blocks) == 0:
            return np.zeros(0, dtype=bool)
        return self._block_state(blocks).first

    # ---- score side -----------------------------------------------------------------------
    def tuple_scores(self, windows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        return self.green_flags(np.asarray(windows).reshape(len(tokens), self.context_width), tokens).astype(np.int8)

    def null(self, n_items: int, *, blocks: np.ndarray | None = None,
             weights: np.ndarray | None = None) -> NullModel:
        """Binom(n, green list size / V) over (seed, token)-distinct tuples; with ``weights``
        ``(n,)`` (the logprob statistic, reading with distributions) the weighted Bernoulli sum
        ``sum_i w_i B_i``, B_i iid Bernoulli(green list size / V), by its saddlepoint tail.

        Both are conservative, not exact. Under H0 each seed's green list is a uniformly random
        subset of exactly ``k = int(V * ratio)`` ids, independent across seeds, so the flags of
        (seed, token)-distinct items are negatively associated with marginals ``gamma = k / V``
        (indicators of a uniform fixed-size subset are; independent families of such stay so, and
        so do their products with non-negative weights). A sum of negatively associated variables
        is dominated in the convex order by the sum of independent copies with the same marginals
        (Shao 2000): its moment generating function is smaller at every point, so every Chernoff
        bound of the independent model holds for it, and its variance is smaller (for one window's
        ``m`` candidates by the finite-population factor ``(V - m) / (V - 1)``). The tests check
        both nulls against the exact sum-of-hypergeometrics null and decoy keys."""
        if weights is not None:
            return WeightedBernoulliNull(weights, self._gamma)
        return BinomialNull(n_items, self._gamma, sequential=False)

    def reading_problem(self, *, fed_texts_clean: bool) -> str | None:
        """Reading fingerprinted fed texts needs the fed pairs' flags to be the only ones they
        bias. Lefthash: a flag is a function of (previous token, token) when the hashing key maps
        distinct previous tokens to distinct seeds (a key with many trailing zero bits folds some
        together: refused). Selfhash: the seed is a minimum over the window and the token whose
        position depends on the key, so pairs at other windows share their seed and flag with a
        fed pair in a way no key-independent rule can find (refused; clean fed texts work)."""
        if fed_texts_clean:
            return None
        if self.params["seeding"] == "selfhash":
            return ("hf-kgw selfhash: a pair's seed is a minimum over its window and token whose position depends on "
                    "the key, so pairs at other windows share their seed and green flag with pairs of the "
                    "fingerprinted fed texts, and excluding the fed pairs (the only rule that can be applied before "
                    "the key is used) cannot remove them: the fed texts' bias would count as the suspect's. Feed "
                    "texts sampled without the fingerprint (--fed-texts-clean)")
        seeds = lefthash_seeds32(self.hashing_key, np.arange(self.vocab_size))
        if np.unique(seeds).size < self.vocab_size:
            return ("hf-kgw lefthash: this hashing key maps distinct previous tokens to one seed (it has many trailing "
                    "zero bits), so pairs at other windows share their green flag with pairs of the fingerprinted fed "
                    "texts, which excluding the fed pairs cannot remove. Feed texts sampled without the fingerprint "
                    "(--fed-texts-clean)")
        return None

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
