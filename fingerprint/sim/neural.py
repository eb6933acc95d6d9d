"""A small causal transformer language model on torch (CPU): the optional ``[neural]`` extra.

Same interface as the n-gram model (``vocab_size``, ``context_size``, batched
``next_logprobs``), so it plugs into :func:`fingerprint.sim.generate.generate`, the schemes'
embed side and the local server. Used by ``python -m eval.neural``: a teacher trained on the
corpus, a student base trained on clean text and fine-tuned on the teacher's fingerprinted
answers, and a control fine-tuned on clean text only.

torch is imported here and only here; nothing in the core imports this module.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("fingerprint.sim.neural needs torch: pip install 'fingerprint[neural]'") from exc

from ..windows import check_tokens

__all__ = ["TinyTransformerLM"]


class _Net(nn.Module):
    def __init__(self, vocab: int, context: int, d_model: int, n_layers: int, n_heads: int) -> None:
        super().__init__()
        self.pad = vocab  # id of the left padding (unknown context)
        self.embed = nn.Embedding(vocab + 1, d_model)
        self.pos = nn.Parameter(torch.zeros(context, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c) token ids -> (b, c, V) next-token logits at every position."""
        c = x.shape[1]
        h = self.embed(x) + self.pos[:c]
        mask: torch.Tensor = self.mask  # type: ignore[assignment]
        h = self.blocks(h, mask=mask[:c, :c], is_causal=True)
        return self.head(self.norm(h))


class TinyTransformerLM:
    """A few-layer causal transformer over ``vocab_size`` ids with a fixed context window."""

    def __init__(self, vocab_size: int, *, context_size: int = 32, d_model: int = 128, n_layers: int = 2,
                 n_heads: int = 4, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.vocab_size = int(vocab_size)
        self._context = int(context_size)
        self.net = _Net(self.vocab_size, self._context, d_model, n_layers, n_heads)
        self.net.eval()
        self._rng = np.random.default_rng(seed)

    @property
    def context_size(self) -> int:
        return self._context

    def copy(self) -> "TinyTransformerLM":
        other = copy.copy(self)
        other.net = copy.deepcopy(self.net)
        other._rng = np.random.default_rng(int(self._rng.integers(2**63)))
        return other

    def fit(self, tokens: np.ndarray, offsets: np.ndarray, *, steps: int, batch_size: int = 64, lr: float = 3e-3,
            progress: Callable[[int, float], None] | None = None) -> list[float]:
        """Train on random windows of the texts (``(N,)`` tokens, ``(T + 1,)`` offsets); returns
        the loss of every step (nats per token)."""
        tokens, offsets = check_tokens(tokens, offsets, self.vocab_size)
        c = self._context
        lengths = np.diff(offsets)
        usable = np.flatnonzero(lengths >= 2)
        if usable.size == 0:
            raise ValueError("no text of two or more tokens to train on")
        weights = lengths[usable] / lengths[usable].sum()
        opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 *
                                                   (1 + math.cos(math.pi * min(s, steps) / steps)))
        losses = []
        self.net.train()
        for step in range(steps):
            texts = self._rng.choice(usable, size=batch_size, p=weights)
            x = np.full((batch_size, c + 1), -1, dtype=np.int64)
            for r, t in enumerate(texts):
                start, end = offsets[t], offsets[t + 1]
                # windows may start before the text (left padding), as contexts at generation do
                s = int(self._rng.integers(start - c + 1, max(start - c + 2, end - 1)))
                lo = max(s, start)
                hi = min(s + c + 1, end)
                x[r, lo - s:hi - s] = tokens[lo:hi]
            inp = torch.from_numpy(np.where(x[:, :-1] < 0, self.vocab_size, x[:, :-1]))
            target = torch.from_numpy(x[:, 1:])
            logits = self.net(inp)
            loss = nn.functional.cross_entropy(logits.reshape(-1, self.vocab_size), target.reshape(-1),
                                               ignore_index=-1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if progress and (step + 1) % 50 == 0:
                progress(step + 1, float(np.mean(losses[-50:])))
        self.net.eval()
        return losses

    @torch.no_grad()
    def next_logprobs(self, contexts: np.ndarray) -> np.ndarray:
        """``(b, context_size)`` previous ids (``-1`` unknown, left) -> ``(b, V)`` float64 log-probs."""
        ctx = np.asarray(contexts, dtype=np.int64)
        if ctx.ndim != 2 or ctx.shape[1] != self._context:
            raise ValueError(f"contexts must have shape (b, {self._context}), got {ctx.shape}")
        x = torch.from_numpy(np.where(ctx < 0, self.vocab_size, ctx))
        logits = self.net(x)[:, -1, :]
        return torch.log_softmax(logits.double(), dim=-1).numpy()

    def save(self, path: str) -> None:
        torch.save({"state": self.net.state_dict(), "vocab": self.vocab_size, "context": self._context}, path)

    def load_state(self, path: str) -> None:
        blob = torch.load(path, weights_only=True)
        self.net.load_state_dict(blob["state"])
        self.net.eval()
