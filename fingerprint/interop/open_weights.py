"""Open weights: a local transformers checkpoint's next-token distributions on the owner's texts.

:class:`OpenWeightsModel` loads a causal language model from a local checkpoint directory
(``config.json`` plus ``*.safetensors`` or ``*.bin`` weights; nothing is downloaded) and
teacher-forces the owner's fed texts through it. :meth:`OpenWeightsModel.read` keeps, at every
position of every text, the model's top-``K`` next-token candidates in the **owner's** token ids
(a :class:`~fingerprint.verify.distribution.PositionDistributions` per text), ready for
:func:`~fingerprint.verify.distribution.distribution_evidence` and the standard pipeline.

**Vocabularies.** When the checkpoint has no tokenizer, or one whose tokens have the same bytes
as the owner's under the same ids, the owner's token ids are fed as they are. Otherwise the
reading goes through bytes: the owner's text is encoded with the checkpoint's own tokenizer,
the model's distribution is read at each of its positions that starts at the same byte offset
as an owner token (an owner position the model's tokenization does not start a token at is
*unaligned*), and every candidate token is mapped to the owner id with the same bytes (a
candidate no single owner token spells is *unmapped*, id ``-1``). Both are counted
(:attr:`OpenWeightsReading.counts`) for the report.

**Reference.** ``read(..., reference=other)`` reads a second model (the owner's own, which never
saw the key) on the same texts and gathers its probabilities of the suspect's candidates,
through its own tokenizer in the same way: at the reference's aligned positions, for the owner
id's bytes as one reference token (probability 0 when no single reference token spells them).
An owner position the reference's tokenization does not align with gets ``NaN`` reference
probabilities, which :func:`~fingerprint.verify.distribution.distribution_evidence` does not score.

Texts longer than the model's positions (or ``max_length``) are read in overlapping windows
(each prediction keeps at least half a window of context). Top-k and gathers happen on the
model's device; only ``(b, T, K)`` arrays come back. CUDA is used when available (bfloat16),
otherwise the CPU (float32). Requires the ``[hf]`` extra (torch, transformers), imported here
only when a model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError, ParameterError
from ..tokenize import TokenizerWrapper, load_tokenizer, token_bytes_table
from ..verify.distribution import PositionDistributions

__all__ = ["OpenWeightsModel", "OpenWeightsReading", "weight_files"]

#: Files that hold a checkpoint's weights (hashed for the report).
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
#: Files whose presence means the checkpoint carries its own tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "merges.txt")


def _imports() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError:
        raise InputError("reading open weights needs torch and transformers: pip install 'fingerprint[hf]'") from None
    return torch, transformers


def weight_files(path: str | Path) -> list[tuple[str, str]]:
    """``(file name, sha256)`` of every weight file of a checkpoint directory, sorted by name."""
    from ..corpus import sha256_file

    root = Path(path)
    names = sorted({p.name for pat in WEIGHT_PATTERNS for p in root.glob(pat) if p.is_file()})
    return [(n, sha256_file(root / n)) for n in names]


def _byte_len_of_chars(text: str) -> np.ndarray:
    """``(len(text) + 1,)``: the UTF-8 byte offset of every character boundary."""
    cp = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
    n = 1 + (cp >= 0x80).astype(np.int64) + (cp >= 0x800) + (cp >= 0x10000)
    return np.concatenate(([0], np.cumsum(n))).astype(np.int64)


def _model_token_bytes(tok: TokenizerWrapper) -> list[bytes]:
    """The bytes of every id of a checkpoint's tokenizer: byte-level BPE as
    :func:`~fingerprint.tokenize.token_bytes_table` reads it; SentencePiece-style pieces with
    ``▁`` for a space and ``<0xNN>`` byte-fallback tokens decoded by those rules."""
    spec = json.loads(tok.backend.to_str())
    if "ByteLevel" in json.dumps(spec.get("decoder")) or "ByteLevel" in json.dumps(spec.get("pre_tokenizer")):
        return token_bytes_table(tok)
    backend = tok.backend
    out = []
    for i in range(tok.vocab_size):
        piece = backend.id_to_token(i)
        if piece is None:
            out.append(b"")
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):
            out.append(bytes([int(piece[3:5], 16)]))
        elif "\u2581" in piece:
            out.append(piece.replace("\u2581", " ").encode("utf-8"))
        else:
            out.append(tok.decode([i]).encode("utf-8"))
    return out


def _load_checkpoint_tokenizer(root: Path) -> TokenizerWrapper | None:
    if (root / "tokenizer.json").is_file():
        loaded = load_tokenizer(root / "tokenizer.json")
        assert isinstance(loaded, TokenizerWrapper)
        return loaded
    if not any((root / f).is_file() for f in TOKENIZER_FILES):
        return None
    _, transformers = _imports()
    try:
        hf = transformers.AutoTokenizer.from_pretrained(str(root), local_files_only=True, use_fast=True)
    except Exception as exc:  # transformers raises many kinds on a bad tokenizer directory
        raise InputError(f"{root}: the checkpoint's tokenizer does not load ({exc})") from None
    if not getattr(hf, "is_fast", False):
        raise InputError(f"{root}: the checkpoint's tokenizer has no fast (tokenizers) form; save it with "
                         f"tokenizer.json")
    return TokenizerWrapper(hf.backend_tokenizer, source=str(root))


@dataclass
class OpenWeightsReading:
    """What :meth:`OpenWeightsModel.read` returns.

    ``distributions``: one :class:`PositionDistributions` per text. ``counts``: ``positions``
    (owner tokens read), ``unaligned_positions`` (owner positions the model's tokenization has
    no token starting at), ``unmapped_candidates`` (candidates no single owner token spells),
    ``texts_not_byte_exact`` (texts whose owner tokens do not spell the text's bytes; read as
    unaligned), and the same with a ``reference_`` prefix for the reference model.
    ``mapping``: ``"ids"`` (the owner's ids fed as they are: same bytes per id), ``"assumed ids"``
    (the same, for a checkpoint without a tokenizer) or ``"bytes"``; ``reference_mapping`` the
    same for the reference (``"mixed"`` for several references read differently; None without
    one). With several references the ``reference_`` counts are summed over them.
    """

    distributions: list[PositionDistributions]
    counts: dict[str, int] = field(default_factory=dict)
    mapping: str = "ids"
    reference_mapping: str | None = None

    def notes(self) -> list[str]:
        """Sentences for a report: how the vocabularies were matched and what did not map."""
        c = self.counts
        out = []
        if self.mapping == "bytes":
            out.append(f"the suspect model has its own tokenizer: read through bytes; "
                       f"{c.get('unaligned_positions', 0):,} of {c.get('positions', 0):,} owner positions unaligned "
                       f"(no suspect token starts there), {c.get('unmapped_candidates', 0):,} suspect candidates "
                       f"unmapped (no single owner token has their bytes)")
        else:
            why = ("same bytes per id" if self.mapping == "ids" else
                   "the checkpoint has no tokenizer: its ids are taken to be the owner's")
            out.append(f"the suspect model reads the owner's token ids directly ({why}); "
                       f"{c.get('unmapped_candidates', 0):,} candidates outside the owner's vocabulary unmapped")
        if self.reference_mapping is not None:
            how = {"bytes": "through bytes", "mixed": "each in its own way (owner ids, assumed ids or bytes)"}.get(
                self.reference_mapping, "by the owner's token ids")
            out.append(f"reference model read {how}; "
                       f"{c.get('reference_unaligned_positions', 0):,} owner positions unaligned for it (not "
                       f"scored), {c.get('reference_unmapped_candidates', 0):,} candidates it has no single token "
                       f"for (reference probability 0)")
        if c.get("texts_not_byte_exact"):
            out.append(f"{c['texts_not_byte_exact']:,} texts whose owner tokens do not spell their bytes were "
                       f"read as unaligned")
        return out


@dataclass
class _Side:
    """One model's view of the owner's texts: its input ids per text and, per owner position,
    the index of the model token whose prediction it reads (-1: unaligned)."""

    seqs: list[np.ndarray]
    at: list[np.ndarray]
    mapping: str
    unaligned: int
    not_exact: int


class OpenWeightsModel:
    """A causal LM from a local transformers checkpoint directory, for reading distributions.

    Parameters
    ----------
    path:
        The checkpoint directory (``config.json`` and weights; a tokenizer there is used to map
        vocabularies, see the module).
    device:
        ``"cuda"``, ``"cpu"``, ... (default: CUDA when available).
    dtype:
        ``"float32"``, ``"bfloat16"``, ``"float16"`` (default: bfloat16 on CUDA, float32 on CPU).
    max_length:
        Window length for long texts (default: the model's positions, at most 2048).
    batch_tokens:
        Padded tokens per forward pass (default 16384 on CUDA, 4096 on CPU).
    logits_bytes:
        Memory allowed for one batch's logits and their float32 copies (default 4 GiB on CUDA,
        512 MiB on CPU); batches shrink to fit.
    prepend_bos:
        Feed the model's BOS token before every text (default: when the checkpoint's own
        tokenizer adds one).
    """

    def __init__(self, path: str | Path, *, device: str | None = None, dtype: str | None = None,
                 max_length: int | None = None, batch_tokens: int | None = None, logits_bytes: int | None = None,
                 prepend_bos: bool | None = None) -> None:
        torch, transformers = _imports()
        root = Path(path)
        if not (root / "config.json").is_file():
            raise InputError(f"{root}: not a checkpoint directory (no config.json)")
        if not any(root.glob(p) for p in WEIGHT_PATTERNS):
            raise InputError(f"{root}: no weight files ({', '.join(WEIGHT_PATTERNS)})")
        self.path = root
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        cuda = self.device.startswith("cuda")
        self.dtype = dtype or ("bfloat16" if cuda else "float32")
        torch_dtype = getattr(torch, self.dtype, None)
        if not isinstance(torch_dtype, torch.dtype):
            raise ParameterError(f"dtype must be a torch dtype name (float32, bfloat16, float16), got {self.dtype!r}")
        major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
        kw = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
        tlog = transformers.utils.logging
        bars = tlog.is_progress_bar_enabled()
        tlog.disable_progress_bar()  # no per-shard bars on stderr (verify prints its own progress)
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(str(root), local_files_only=True,
                                                                      **{kw: torch_dtype})
        except Exception as exc:  # transformers raises many kinds on a bad checkpoint
            raise InputError(f"{root}: not a loadable causal-LM checkpoint ({exc})") from None
        finally:
            if bars:
                tlog.enable_progress_bar()
        self._model = model.to(self.device).eval()
        self._torch = torch
        cfg = model.config
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        positions = next((int(getattr(cfg, a)) for a in ("max_position_embeddings", "n_positions", "n_ctx",
                                                         "seq_length") if getattr(cfg, a, None)), 2048)
        self.max_length = int(max_length) if max_length else min(positions, 2048)
        if self.max_length < 2:
            raise ParameterError(f"max_length must be >= 2, got {self.max_length}")
        self.batch_tokens = int(batch_tokens or (16384 if cuda else 4096))
        self.logits_bytes = int(logits_bytes or ((4 << 30) if cuda else (512 << 20)))
        self.tokenizer = _load_checkpoint_tokenizer(root)
        self._token_bytes: list[bytes] | None = None
        bos = getattr(cfg, "bos_token_id", None)
        if prepend_bos is None:
            prepend_bos = False
            if self.tokenizer is not None and bos is not None:
                ids = self.tokenizer.backend.encode("a", add_special_tokens=True).ids
                prepend_bos = bool(ids) and ids[0] == bos
        if prepend_bos and bos is None:
            raise ParameterError(f"{root}: prepend_bos asked but the model's config has no bos_token_id")
        self.bos: int | None = int(bos) if prepend_bos and bos is not None else None
        self._weights: list[tuple[str, str]] | None = None

    # ---- identity, for reports ------------------------------------------------------------------
    def weight_files(self) -> list[tuple[str, str]]:
        """``(file name, sha256)`` of the checkpoint's weight files (hashed once)."""
        if self._weights is None:
            self._weights = weight_files(self.path)
        return self._weights

    def weights_sha256(self) -> str:
        """One digest of the weights: the file's sha256 for a single file, else the sha256 of the
        ``sha256sum``-style listing ``"<sha256>  <name>\\n"`` of all weight files, sorted by name."""
        files = self.weight_files()
        if len(files) == 1:
            return files[0][1]
        return hashlib.sha256("".join(f"{d}  {n}\n" for n, d in files).encode()).hexdigest()

    def describe(self) -> str:
        """One line for a report: the directory, the weights' digest, device and dtype."""
        files = self.weight_files()
        what = (f"weights {files[0][0]} sha256 {files[0][1]}" if len(files) == 1 else
                f"{len(files)} weight files, sha256 of their sha256sum listing {self.weights_sha256()}")
        return f"{self.path} ({what}; read on {self.device} in {self.dtype})"

    def token_bytes(self) -> list[bytes] | None:
        """The bytes of every id of the checkpoint's tokenizer (None without one)."""
        if self.tokenizer is None:
            return None
        if self._token_bytes is None:
            self._token_bytes = _model_token_bytes(self.tokenizer)
        return self._token_bytes

    # ---- reading ---------------------------------------------------------------------------------
    def read(self, texts: Sequence[str] | Sequence[np.ndarray], owner_tokenizer, *, top_k: int = 64,
             reference: "OpenWeightsModel | Sequence[OpenWeightsModel] | None" = None) -> OpenWeightsReading:
        """Teacher-force the owner's texts and keep the top-``top_k`` candidates at every position.

        ``texts``: strings (tokenized with ``owner_tokenizer``) or the owner's token id arrays.
        Position ``j`` of a text holds the model's distribution of token ``j`` given the text
        before it (position 0 has none unless a BOS token is prepended). ``reference``: one
        model, or several whose probabilities of the candidates are averaged (NaN where any of
        them has no token starting at the position).
        """
        if reference is None:
            references: list[OpenWeightsModel] = []
        elif isinstance(reference, OpenWeightsModel):
            references = [reference]
        else:
            references = list(reference)
        if int(top_k) < 1:
            raise ParameterError(f"top_k must be >= 1, got {top_k}")
        k = int(top_k)
        strings: list[str] | None
        n_str = sum(isinstance(t, str) for t in texts)
        if 0 < n_str < len(texts):
            raise ParameterError("texts: give all strings or all token id arrays, not a mix")
        if n_str == len(texts):
            strings = [str(t) for t in texts]
            flat, offsets = owner_tokenizer.encode_batch(strings)
            owner = [flat[offsets[i]:offsets[i + 1]] for i in range(len(strings))]
        else:
            strings = None
            owner = [np.asarray(t, dtype=np.int64) for t in texts]
        owner_table = token_bytes_table(owner_tokenizer)
        ctx = _OwnerTexts(owner, strings, owner_tokenizer, owner_table)
        side = self._side(ctx)
        to_owner = self._to_owner(ctx, side.mapping)
        counts = {"positions": int(sum(o.size for o in owner)), "unaligned_positions": side.unaligned,
                  "unmapped_candidates": 0, "texts_not_byte_exact": side.not_exact}
        rows = self._run(side.seqs, top_k=min(k, self.vocab_size))
        cands_all, probs_all = [], []
        for o, at, (ids, lp) in zip(owner, side.at, rows):
            cands = np.full((o.size, k), -1, dtype=np.int64)
            probs = np.zeros((o.size, k))
            ok = at >= 0
            mids = ids[at[ok]]
            mapped = np.where(mids >= 0, to_owner[np.clip(mids, 0, None)], -1)
            counts["unmapped_candidates"] += int(((mids >= 0) & (mapped < 0)).sum())
            cands[ok, :mids.shape[1]] = mapped
            probs[ok, :mids.shape[1]] = np.where(mapped >= 0, np.exp(lp[at[ok]]), 0.0)
            cands_all.append(cands)
            probs_all.append(probs)
        ref_all: list[np.ndarray | None] = [None] * len(owner)
        ref_mapping = None
        if references:
            counts["reference_unaligned_positions"] = 0
            counts["reference_unmapped_candidates"] = 0
        for reference in references:
            rside = reference._side(ctx)
            ref_mapping = rside.mapping if ref_mapping in (None, rside.mapping) else "mixed"
            from_owner = reference._from_owner(ctx, rside.mapping)
            counts["reference_unaligned_positions"] += rside.unaligned
            gathers = []
            for seq, at, cands in zip(rside.seqs, rside.at, cands_all):
                g = np.full((seq.size, k), -1, dtype=np.int64)
                ok = at >= 0
                c = cands[ok]
                rid = np.where(c >= 0, from_owner[np.clip(c, 0, None)], -1)
                counts["reference_unmapped_candidates"] += int(((c >= 0) & (rid < 0)).sum())
                g[at[ok]] = rid
                gathers.append(g)
            rlp = reference._run(rside.seqs, gather=gathers)
            for i, (at, lp) in enumerate(zip(rside.at, rlp)):
                ref = np.full((at.size, k), np.nan)
                ok = at >= 0
                ref[ok] = np.exp(lp[at[ok]]) / len(references)  # the references' mean, summed up
                prev = ref_all[i]
                ref_all[i] = ref if prev is None else prev + ref
        out = [PositionDistributions(o, c, p, r) for o, c, p, r in zip(owner, cands_all, probs_all, ref_all)]
        return OpenWeightsReading(out, counts, side.mapping, ref_mapping)

    def _same_vocabulary(self, ctx: "_OwnerTexts") -> bool:
        table = self.token_bytes()
        if table is None:
            return True
        n = len(ctx.table)
        return len(table) >= n and table[:n] == ctx.table

    def _side(self, ctx: "_OwnerTexts") -> _Side:
        if self._same_vocabulary(ctx):
            top = max((int(o.max()) for o in ctx.owner if o.size), default=-1)
            low = min((int(o.min()) for o in ctx.owner if o.size), default=0)
            if top >= self.vocab_size or low < 0:
                raise InputError(f"{self.path}: the owner's token id {top if low >= 0 else low} is outside the "
                                 f"checkpoint's {self.vocab_size} logits (save the checkpoint with its own "
                                 f"tokenizer to read through bytes)")
            mapping = "ids" if self.tokenizer is not None else "assumed ids"
            return _Side(ctx.owner, [np.arange(o.size, dtype=np.int64) for o in ctx.owner], mapping, 0, 0)
        assert self.tokenizer is not None
        strings = ctx.strings()
        encs = self.tokenizer.backend.encode_batch(strings, add_special_tokens=False)
        m_len = np.array([len(b) for b in self.token_bytes() or []], dtype=np.int64)
        seqs, ats = [], []
        unaligned = not_exact = 0
        for o, text, enc in zip(ctx.owner, strings, encs):
            n_bytes = len(text.encode("utf-8", errors="surrogatepass"))
            ids = np.asarray(enc.ids, dtype=np.int64)
            if ids.size and int(ids.max()) >= self.vocab_size:
                raise InputError(f"{self.path}: its tokenizer gives id {int(ids.max())}, outside the model's "
                                 f"{self.vocab_size} logits")
            o_len = ctx.lengths[o]
            at = np.full(o.size, -1, dtype=np.int64)
            if int(o_len.sum()) != n_bytes:
                not_exact += 1
                unaligned += o.size
                seqs.append(ids)
                ats.append(at)
                continue
            owner_starts = np.concatenate(([0], np.cumsum(o_len)[:-1])).astype(np.int64)
            if ids.size and int(m_len[ids].sum()) == n_bytes:
                starts = np.concatenate(([0], np.cumsum(m_len[ids])[:-1])).astype(np.int64)
            elif ids.size:
                starts = np.maximum.accumulate(_byte_len_of_chars(text)[np.array([s for s, _ in enc.offsets])])
            else:
                starts = np.zeros(0, dtype=np.int64)
            if starts.size:
                idx = np.searchsorted(starts, owner_starts)
                hit = idx < starts.size
                hit[hit] = starts[idx[hit]] == owner_starts[hit]
                at[hit] = idx[hit]
            unaligned += int((at < 0).sum())
            seqs.append(ids)
            ats.append(at)
        return _Side(seqs, ats, "bytes", unaligned, not_exact)

    def _to_owner(self, ctx: "_OwnerTexts", mapping: str) -> np.ndarray:
        """``(vocab_size,)``: the owner id of every model id (-1: none)."""
        out = np.full(self.vocab_size, -1, dtype=np.int64)
        if mapping != "bytes":
            n = min(self.vocab_size, len(ctx.table))
            out[:n] = np.arange(n)
            return out
        index: dict[bytes, int] = {}
        for i, b in enumerate(ctx.table):
            index.setdefault(b, i)
        table = self.token_bytes() or []
        n = min(self.vocab_size, len(table))
        out[:n] = np.fromiter((index.get(b, -1) if b else -1 for b in table[:n]), dtype=np.int64, count=n)
        return out

    def _from_owner(self, ctx: "_OwnerTexts", mapping: str) -> np.ndarray:
        """``(owner vocab,)``: the model id of every owner id (-1: none)."""
        n_owner = len(ctx.table)
        if mapping != "bytes":
            return np.where(np.arange(n_owner) < self.vocab_size, np.arange(n_owner), -1)
        index: dict[bytes, int] = {}
        for i, b in enumerate((self.token_bytes() or [])[:self.vocab_size]):
            index.setdefault(b, i)
        return np.fromiter((index.get(b, -1) if b else -1 for b in ctx.table), dtype=np.int64, count=n_owner)

    # ---- the forward passes ------------------------------------------------------------------------
    def _run(self, seqs: Sequence[np.ndarray], *, top_k: int | None = None,
             gather: Sequence[np.ndarray] | None = None) -> list[Any]:
        """The model's predictions of every token of every sequence (its own ids).

        Row ``i`` of a sequence is the distribution of token ``i`` given the tokens before it
        (row 0 needs a BOS token; without one it stays empty). With ``top_k``: per sequence
        ``(ids (n, k), logprobs (n, k))``, ids ``-1`` / logprob ``-inf`` where there is no
        prediction. With ``gather`` (per sequence ``(n, k)`` model ids, ``-1`` for none): per
        sequence the ``(n, k)`` logprobs of those ids (``-inf`` for none).
        """
        torch = self._torch
        bos = self.bos
        off = 1 if bos is not None else 0
        W = self.max_length
        overlap = W // 2
        chunks = []  # (seq, start, end, keep_from) in input positions (BOS included)
        for s, seq in enumerate(seqs):
            n = seq.size + off
            start, keep_from = 0, 1
            while n >= 2:
                end = min(start + W, n)
                chunks.append((s, start, end, keep_from))
                if end == n:
                    break
                keep_from, start = end, end - overlap
        width = int(top_k or 1) if gather is None else (int(gather[0].shape[1]) if len(gather) else 1)
        out_ids = [np.full((q.size, width), -1, dtype=np.int64) for q in seqs] if gather is None else None
        out_lp = [np.full((q.size, width), -np.inf) for q in seqs]
        chunks.sort(key=lambda c: -(c[2] - c[1]))
        itemsize = torch.finfo(getattr(torch, self.dtype)).bits // 8
        i = 0
        with torch.no_grad():
            while i < len(chunks):
                T = chunks[i][2] - chunks[i][1]
                rows = max(1, min(self.batch_tokens // T, self.logits_bytes // (T * self.vocab_size * (itemsize + 8))))
                batch = chunks[i:i + rows]
                i += len(batch)
                x = np.zeros((len(batch), T), dtype=np.int64)
                mask = np.zeros((len(batch), T), dtype=np.int64)
                for r, (s, a, b, _) in enumerate(batch):
                    full = seqs[s] if bos is None else np.concatenate((np.array([bos], dtype=np.int64), seqs[s]))
                    x[r, :b - a] = full[a:b]
                    mask[r, :b - a] = 1
                logits = self._model(input_ids=torch.from_numpy(x).to(self.device),
                                     attention_mask=torch.from_numpy(mask).to(self.device), use_cache=False).logits
                logits = logits[..., :self.vocab_size]
                lse = torch.logsumexp(logits.float(), dim=-1, keepdim=True)
                if gather is None:
                    assert top_k is not None and out_ids is not None
                    vals, ids = torch.topk(logits, top_k, dim=-1)
                    lp_np = (vals.float() - lse).double().cpu().numpy()
                    ids_np = ids.cpu().numpy().astype(np.int64)
                else:
                    g = np.full((len(batch), T, width), -1, dtype=np.int64)
                    for r, (s, a, b, keep_from) in enumerate(batch):
                        g[r, keep_from - a - 1:b - a - 1] = gather[s][keep_from - off:b - off]
                    gt = torch.from_numpy(g).to(self.device)
                    vals = torch.gather(logits, -1, gt.clamp(min=0)).float() - lse
                    lp_np = torch.where(gt >= 0, vals, torch.full_like(vals, -np.inf)).double().cpu().numpy()
                for r, (s, a, b, keep_from) in enumerate(batch):
                    rows_in = slice(keep_from - a - 1, b - a - 1)  # logits row p predicts input position a + p + 1
                    rows_out = slice(keep_from - off, b - off)
                    out_lp[s][rows_out] = lp_np[r, rows_in]
                    if out_ids is not None:
                        out_ids[s][rows_out] = ids_np[r, rows_in]
        if out_ids is not None:
            return list(zip(out_ids, out_lp))
        return out_lp


class _OwnerTexts:
    """The owner's texts: token ids, and (lazily) the strings a model's own tokenizer encodes."""

    def __init__(self, owner: list[np.ndarray], strings: list[str] | None, tokenizer, table: list[bytes]) -> None:
        self.owner = owner
        self._strings = strings
        self.tokenizer = tokenizer
        self.table = table
        self.lengths = np.array([len(b) for b in table], dtype=np.int64)

    def strings(self) -> list[str]:
        if self._strings is None:
            self._strings = [b"".join(self.table[int(i)] for i in o).decode("utf-8", errors="replace")
                             for o in self.owner]
        return self._strings
