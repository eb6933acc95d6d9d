"""What every fingerprint scheme provides: an embed side and a score side sharing one PRF.

Order of operations on the embed side (documented once, for all schemes):

1. the model's logits are divided by the temperature;
2. top-p (nucleus) truncation is applied to the tempered distribution;
3. the fingerprint acts on what remains: greenlist adds ``delta`` to the (tempered) logits
   of green tokens, gumbel and tournament sample from the truncated distribution with
   keyed randomness.

So ``delta`` is measured in tempered logits, and top-p never removes the bias it is
meant to carry. Rows whose context has fewer than ``h`` known tokens (marked ``-1``) are
sampled without a fingerprint, matching the score side, which only scores tokens with a
full window inside the text.
"""

from __future__ import annotations

import abc
import functools
from typing import Any, ClassVar

import numpy as np

from ..errors import ParameterError, TokenError
from ..prf import KeyedPRF, MAX_CONTEXT_WIDTH
from ..stats import NullModel, TestResult
from ..windows import ScoredTuples, TupleTable, tuple_table

__all__ = ["Scheme", "ReproducedScheme", "check_logits", "check_contexts", "apply_temperature_top_p"]


class Scheme(abc.ABC):
    """A keyed fingerprint scheme.

    Subclasses define ``name``, ``defaults``, ``_validate``, ``_tuple_scores`` (or
    ``tuple_scores``), ``null`` and ``sample``. Adding a scheme touches only its own module (and
    the registry in ``schemes/__init__.py``, or :func:`register_scheme`).
    """

    name: ClassVar[str]
    #: Parameter names and defaults, in the order ``keygen`` shows them.
    defaults: ClassVar[dict[str, Any]]

    def __init__(self, secret: bytes, vocab_size: int, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ParameterError(
                f"scheme {self.name!r}: unknown parameter(s) {sorted(unknown)}; "
                f"known: {sorted(self.defaults)}")
        if not isinstance(vocab_size, (int, np.integer)) or isinstance(vocab_size, bool) or vocab_size < 2:
            raise ParameterError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
        merged = {**self.defaults, **params}
        self.params: dict[str, Any] = self.validate_params(merged)
        self.vocab_size = int(vocab_size)
        self.context_width: int = self.params.get("context_width", 0)
        self._secret = bytes(secret)

    @functools.cached_property
    def _prf(self) -> KeyedPRF:
        return KeyedPRF(self._secret)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, {self.params})"

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Check and normalise parameters; raise :class:`ParameterError` naming the bad one."""
        h = params.get("context_width")
        if not isinstance(h, (int, np.integer)) or isinstance(h, bool) or not 0 <= h <= MAX_CONTEXT_WIDTH:
            raise ParameterError(
                f"context_width (h) must be an integer in [0, {MAX_CONTEXT_WIDTH}], got {h!r}")
        out = dict(params)
        out["context_width"] = int(h)
        return cls._validate(out)

    @classmethod
    def secret_bytes(cls, params: dict[str, Any]) -> int:
        """Length of the key's secret for these (validated) parameters."""
        return 32

    #: ``keygen`` options that give the secret itself (another toolkit's own key), option name -> help.
    secret_options: ClassVar[dict[str, str]] = {}

    @classmethod
    def secret_from_options(cls, params: dict[str, Any], options: dict[str, str]) -> tuple[bytes, dict[str, Any]]:
        """The secret (and the parameters it implies) from ``secret_options`` given as typed;
        raises :class:`ParameterError` naming a bad value."""
        raise ParameterError(f"scheme {cls.name!r} takes no secret options")

    @classmethod
    @abc.abstractmethod
    def _validate(cls, params: dict[str, Any]) -> dict[str, Any]: ...

    # ---- score side -------------------------------------------------------------------
    def tuple_values(self, windows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Keyed uint64 values of tuples; windows ``(n, h)``, tokens ``(n,)`` -> ``(n,)``."""
        return self._prf.tuple_values(windows, tokens)

    def tuple_scores(self, windows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Per-tuple scores, shape ``(n,)``; meaning and null distribution depend on the scheme."""
        return self._tuple_scores(self.tuple_values(windows, tokens))

    @abc.abstractmethod
    def _tuple_scores(self, values: np.ndarray) -> np.ndarray: ...

    def score(self, tokens: np.ndarray, offsets: np.ndarray, *, allow_empty: bool = False) -> ScoredTuples:
        """Score every token that has a full context window inside its text.

        Parameters
        ----------
        tokens:
            Shape ``(N,)``, integer token ids of all texts concatenated.
        offsets:
            Shape ``(T + 1,)``, text ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``.
        allow_empty:
            Accept empty texts (and an empty corpus). By default they raise
            :class:`TokenError`: an empty response usually means a broken input.

        Returns
        -------
        ScoredTuples
            Positions, text indices, window and tuple ids (for de-duplication) and scores.
        """
        table = tuple_table(tokens, offsets, self.context_width, vocab_size=self.vocab_size)
        if not allow_empty:
            if table.n_texts == 0:
                raise TokenError("no texts to score (offsets has length 1)")
            empty = np.flatnonzero(np.diff(table.offsets) == 0)
            if empty.size:
                raise TokenError(f"text {int(empty[0])} is empty ({empty.size} empty text(s) in all; "
                                 f"pass allow_empty=True to score the others)")
        return self.score_table(table)

    def score_table(self, table: TupleTable) -> ScoredTuples:
        """Score the tuples of an already built :class:`TupleTable`."""
        scores = self._tuple_scores(self._prf.tuple_values(table.windows(), table.next_tokens()))
        return ScoredTuples(table=table, scores=scores)

    def scores_of_blocks(self, blocks: np.ndarray) -> np.ndarray:
        """Per-tuple scores ``(n,)`` of tuples encoded with :func:`fingerprint.prf.encode_tuples`."""
        return self._tuple_scores(self._prf.values_of_blocks(blocks))

    def total_of_blocks(self, blocks: np.ndarray) -> float:
        """The statistic (sum of per-tuple scores) of tuples encoded with
        :func:`fingerprint.prf.encode_tuples`: what many-key scoring (keyrings, decoys) needs."""
        return float(self.scores_of_blocks(blocks).sum(dtype=np.float64))

    #: True when every distinct (window, token) pair gets an independent score under H0, drawn
    #: from the scheme's per-item null, whatever the other pairs (same window or not). The strength
    #: guard's per-response metrics and the sequential (until detected) application rely on it.
    #: False for hf-kgw (a window's green list is a fixed-size permutation, shared by every window
    #: with the same seed) and hf-synthid. The access modes (logprobs, reading) do not need it:
    #: they need :meth:`null` with weights and :meth:`reading_problem`.
    independent_pairs: ClassVar[bool] = True

    def reading_problem(self, *, fed_texts_clean: bool) -> str | None:
        """Why this key's fingerprint cannot be tested in reading mode (the suspect's predictions
        at the windows of texts the owner fed it), or None when it can.

        Reading needs every scored pair's score to be independent of the fed texts, or at most
        biased downward by them: with fed texts produced with the key (``fed_texts_clean`` False)
        the pairs of the fed texts are not scored, and a scheme whose other pairs share a score
        with those in a way that cannot be found without the key says so here. With clean fed
        texts (sampled without the key) nothing in the evidence depends on the key. Schemes
        whose scores of distinct (window, token) pairs are independent (PRF schemes) have none."""
        return None

    def distinct_mask(self, blocks: np.ndarray) -> np.ndarray | None:
        """Which of the already (window, token)-distinct tuples ``blocks`` still repeat a score
        under this key, for schemes whose score depends on a keyed function of the window that
        can collide (``(n,)`` bool, True = keep); ``None`` when (window, token) is enough."""
        return None

    @abc.abstractmethod
    def null(self, n_items: int, *, blocks: np.ndarray | None = None,
             weights: np.ndarray | None = None) -> NullModel:
        """The exact null of this scheme's statistic over ``n_items`` distinct scored items.

        ``blocks`` ``(n_items, words)``: the items themselves (as :func:`fingerprint.prf.encode_tuples`
        lays them out), for schemes whose null depends on which items were scored; ``weights``
        ``(n_items,)``: fixed non-negative weights of a weighted statistic ``sum_i w_i s_i`` (the
        logprob statistic), ``None`` for the plain total. Raises :class:`ParameterError` for a
        statistic this scheme has no valid null for.
        """

    def test(self, scores: np.ndarray, *, confidence_level: float = 0.95) -> TestResult:
        """Exact test of H0 on de-duplicated scores ``(n,)`` (one per distinct tuple), for schemes
        whose null depends only on how many tuples were scored. ``fingerprint.verify`` is the
        whole pipeline (selection, de-duplication, decoys, verdict); this is its last step."""
        scores = np.asarray(scores)
        return self.null(int(scores.size)).test(float(scores.sum(dtype=np.float64)),
                                                confidence_level=confidence_level)

    def warp_logits(self, logits: np.ndarray, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Logits ``(b, V)`` whose plain sampling (temperature 1) draws the fingerprinted
        distribution of raw logits ``(b, V)`` after contexts ``(b, h)``: what a generation
        framework's logits processor returns. By default one keyed sample per row (every other
        logit at the float32 minimum); schemes that reshape the distribution override it."""
        logits = check_logits(logits, self.vocab_size)
        chosen = self.sample(logits, contexts, rng)
        out = np.full(logits.shape, np.finfo(np.float32).min, dtype=np.float64)
        out[np.arange(len(out)), chosen] = 0.0
        return out

    # ---- embed side -------------------------------------------------------------------
    @abc.abstractmethod
    def sample(self, logits: np.ndarray, contexts: np.ndarray, rng: np.random.Generator, *,
               temperature: float = 1.0, top_p: float = 1.0) -> np.ndarray:
        """Draw one fingerprinted token per row.

        Parameters
        ----------
        logits:
            Shape ``(b, V)``, the model's next-token logits (natural-log units).
        contexts:
            Shape ``(b, h)``, each row's previous ``h`` tokens, oldest first; ``-1`` where
            unknown (such rows are sampled without the fingerprint).
        rng:
            Source of the sampling randomness (the key supplies the fingerprint's).

        Returns
        -------
        numpy.ndarray
            Shape ``(b,)``, int64 token ids.
        """

    def _row_values(self, contexts: np.ndarray) -> np.ndarray:
        return self._prf.row_values(np.maximum(contexts, 0), self.vocab_size)


class ReproducedScheme(Scheme):
    """A scheme reproduced from another toolkit (hf-*): scores come from its own keyed rule,
    not from fingerprint's PRF. Subclasses define ``tuple_scores(windows, tokens)``."""

    independent_pairs = False

    @abc.abstractmethod
    def tuple_scores(self, windows: np.ndarray, tokens: np.ndarray) -> np.ndarray: ...

    def _tuple_scores(self, values: np.ndarray) -> np.ndarray:  # pragma: no cover - not PRF based
        raise NotImplementedError(f"{self.name} does not score PRF values")

    def score_table(self, table: TupleTable) -> ScoredTuples:
        return ScoredTuples(table=table, scores=self.tuple_scores(table.windows(), table.next_tokens()))

    def _tuples_of_blocks(self, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Windows ``(n, h)`` and tokens ``(n,)`` back from blocks laid out by ``encode_tuples``."""
        words = blocks.reshape(blocks.shape[0], int(np.prod(blocks.shape[1:]))).astype(np.int64)
        h = self.context_width
        return words[:, 1:h + 1], words[:, h + 1]

    def scores_of_blocks(self, blocks: np.ndarray) -> np.ndarray:
        return self.tuple_scores(*self._tuples_of_blocks(blocks))

    def _rows_with_context(self, logits: np.ndarray, contexts: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Checked float64 logits ``(b, V)``, int64 contexts ``(b, h)`` and the rows whose
        context is full (the only rows the embed side changes)."""
        logits = check_logits(logits, self.vocab_size)
        contexts, full = check_contexts(contexts, logits.shape[0], self.context_width, self.vocab_size)
        return logits, contexts, np.flatnonzero(full)


def check_logits(logits: np.ndarray, vocab_size: int) -> np.ndarray:
    """Validate logits of shape ``(b, V)``; return them as float64."""
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] != vocab_size:
        raise TokenError(f"logits must have shape (batch, {vocab_size}), got {logits.shape}")
    if not np.issubdtype(logits.dtype, np.floating):
        raise TokenError(f"logits must be floating point, got dtype {logits.dtype}")
    return logits.astype(np.float64, copy=False)


def check_contexts(contexts: np.ndarray, batch: int, h: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate contexts ``(b, h)``; return them as int64 and a ``(b,)`` mask of full windows."""
    contexts = np.asarray(contexts)
    if h == 0 and contexts.size == 0:
        contexts = contexts.reshape(batch, 0)
    if contexts.ndim != 2 or contexts.shape != (batch, h):
        raise TokenError(f"contexts must have shape ({batch}, {h}), got {contexts.shape}")
    if contexts.size and not np.issubdtype(contexts.dtype, np.integer):
        raise TokenError(f"contexts must be integer token ids, got dtype {contexts.dtype}")
    contexts = contexts.astype(np.int64, copy=False)
    if contexts.size and (contexts.max() >= vocab_size or contexts.min() < -1):
        bad = contexts[(contexts >= vocab_size) | (contexts < -1)][0]
        raise TokenError(f"context token id {bad} outside [0, {vocab_size}) (use -1 for unknown)")
    full = np.asarray((contexts >= 0).all(axis=1)) if h else np.ones(batch, dtype=bool)
    return contexts, full


def apply_temperature_top_p(logits: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    """Tempered, top-p truncated log-probabilities, shape ``(b, V)``; ``-inf`` outside the nucleus."""
    if not temperature > 0:
        raise ParameterError(f"temperature must be > 0, got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ParameterError(f"top_p must be in (0, 1], got {top_p!r}")
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    if top_p < 1:
        order = np.argsort(-logp, axis=1)
        sorted_p = np.exp(np.take_along_axis(logp, order, axis=1))
        cum = np.cumsum(sorted_p, axis=1)
        drop_sorted = (cum - sorted_p) >= top_p  # keep the smallest prefix reaching top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=1)
        logp = np.where(drop, -np.inf, logp)
        logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    return logp


def sample_from_logp(logp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of log-probabilities ``(b, V)`` -> ``(b,)`` int64."""
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    cum = np.cumsum(p, axis=1)
    u = rng.random(p.shape[0]) * cum[:, -1]
    idx = (cum < u[:, None]).sum(axis=1)
    return np.minimum(idx, p.shape[1] - 1).astype(np.int64)
