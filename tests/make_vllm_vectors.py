"""Reference vectors from vLLM's own watermarking code, for ``tests/test_vllm.py``.

Writes ``tests/data/vllm_watermark_vectors.npz`` from vLLM 0.33.0's native watermark
(``vllm/v1/watermarking/``: ``prfs/philox.py``, ``prfs/base.py``, ``gumbel.py``, ``detector.py``
and ``derive_watermark_key`` in ``vllm/config/watermarking.py``), run on the CPU torch.

How vLLM is run: the wheel is downloaded without dependencies and unpacked into a scratch folder
outside the repository (nothing of it is copied into the project)::

    pip download vllm==0.33.0 --no-deps -d /tmp/vllm-wheel
    python tests/make_vllm_vectors.py --wheel-dir /tmp/vllm-wheel --scratch /tmp/vllm-src

Importing the ``vllm`` package pulls in most of its (GPU-serving) dependencies, so the script
loads the watermarking source files themselves with importlib. Their imports of the package's
infrastructure are answered by empty parent packages and three small stand-ins that no
watermark computation goes through: ``vllm.logger.init_logger`` (a stdlib logger),
``vllm.config.utils.config`` (the config-class decorator, identity here) and
``vllm.v1.worker.gpu.sample.gumbel.gumbel_sample`` (the GPU random sampler; raises if
called). The PRF, the uint32-to-uniform conversion, the key derivation, the detectors and the
CPU Gumbel-max sampler are vLLM's own code, unmodified. The uint32 words are read by wrapping
``uint32_to_uniform`` in ``philox.py``'s namespace with a function that records its argument and
calls the original.

What is stored:

* ``raw_*``: a few thousand (context, token) pairs over several keys and context widths 1-16
  (with -1 padding as vLLM's detector pads the first tokens of a text, tokens up to 2**32 - 1),
  vLLM's uint32 word, uniform (float32) and detector score ``-log1p(-u)`` (float64) each;
* ``digest_*``: for every (key, width) with widths 1-16, the SHA-256 of vLLM's uint32 words and
  of its float32 uniforms over :func:`seeded_pairs` (about 1.1M pairs in all; the test
  regenerates the same pairs and compares digests);
* ``mantissa_uniform_sha256``: vLLM's ``uint32_to_uniform`` over all 2**24 mantissas;
* ``derived_a`` / ``derived_b``: ``derive_watermark_key(key, b"key_a" / b"key_b")``, the dual-key
  (speculative decoding) keys;
* ``detect_*``: vLLM's ``GumbelWatermarkDetector`` and ``DualKeyGumbelWatermarkDetector`` on a
  few token sequences (score, p-value, scored tokens) and the contexts/targets its
  ``_prepare_inputs`` keeps (context de-duplication);
* ``sample_*``: vLLM's CPU ``GumbelWatermarker`` choices on random logits.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np

VLLM_VERSION = "0.33.0"
PRF_VERSION = "philox4x32-10-v1"
#: vLLM keys the vectors are made with (64-bit; vLLM's ``WatermarkConfig.key``).
KEYS = (0, 1, 15485863, 0x0123456789ABCDEF, 0xFEDCBA9876543210, 2**64 - 1)
#: Keys of the 1M-pair digests (four of the above).
DIGEST_KEY_INDICES = (0, 2, 3, 5)
WIDTHS = tuple(range(1, 17))
#: Pairs per (digest key, width): 4 keys x 16 widths x 17,000 = 1,088,000 pairs.
DIGEST_PAIRS = 17_000
RAW_PAIRS = 40  # per (key, width): 6 x 16 x 40 = 3,840 raw vectors
OUT = Path(__file__).parent / "data" / "vllm_watermark_vectors.npz"


def seeded_pairs(key_index: int, width: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The (context, token) pairs of one digest: contexts ``(n, width)`` and tokens ``(n,)`` int64.

    Mostly independent ids below 2**17; every 16th block of 8 rows shares one context with 8
    consecutive tokens (the 4 tokens of a Philox group share one call in vLLM); 1 row in 32 is
    padded on the left with -1 as vLLM's detector pads a text's first tokens; 1 row in 64 has ids
    up to 2**32 - 1 (vLLM masks ids to 32 bits).
    """
    rng = np.random.default_rng([0x766C6C6D, key_index, width])
    contexts = rng.integers(0, 1 << 17, size=(n, width), dtype=np.int64)
    tokens = rng.integers(0, 1 << 17, size=n, dtype=np.int64)
    for start in range(0, n - 8, 128):
        contexts[start:start + 8] = contexts[start]
        tokens[start:start + 8] = (tokens[start] & ~7) + np.arange(8)
    pad = np.flatnonzero(rng.random(n) < 1 / 32)
    cut = rng.integers(1, width + 1, size=pad.size)
    cols = np.arange(width)[None, :]
    contexts[pad] = np.where(cols < cut[:, None], -1, contexts[pad])
    big = np.flatnonzero(rng.random(n) < 1 / 64)
    contexts[big] = rng.integers(0, 1 << 32, size=(big.size, width), dtype=np.int64)
    tokens[big] = rng.integers(0, 1 << 32, size=big.size, dtype=np.int64)
    return contexts, tokens


def detect_texts() -> list[np.ndarray]:
    """Token sequences for the detector vectors: random, and with repeated stretches (so
    contexts repeat with the same and with other next tokens)."""
    rng = np.random.default_rng(20261129)
    texts = [rng.integers(0, 5000, size=300)]
    motif = rng.integers(0, 40, size=12)
    texts.append(np.concatenate([rng.integers(0, 40, size=60), motif, rng.integers(0, 40, size=30), motif,
                                 motif[:7], rng.integers(0, 40, size=80)]))
    texts.append(np.tile(rng.integers(0, 30, size=9), 25))
    texts.append(rng.integers(0, 6, size=200))  # tiny alphabet: many repeated contexts
    texts.append(rng.integers(0, 50_000, size=3))  # shorter than most context widths
    return [t.astype(np.int64) for t in texts]


DETECT_WIDTHS = (1, 2, 4, 5, 8)
DETECT_ALPHAS = (0.1, 0.2, 0.5)
SAMPLE_ROWS, SAMPLE_VOCAB = 48, 1003


# ---- running vLLM's code ------------------------------------------------------------------

def unpack_wheel(wheel_dir: Path, scratch: Path) -> Path:
    """Download (if needed) and unpack the vLLM wheel's Python files into ``scratch``."""
    wheels = sorted(wheel_dir.glob(f"vllm-{VLLM_VERSION}-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", f"vllm=={VLLM_VERSION}", "--no-deps",
                        "-d", str(wheel_dir)], check=True)
        wheels = sorted(wheel_dir.glob(f"vllm-{VLLM_VERSION}-*.whl"))
    root = scratch.resolve()
    repo = Path(__file__).resolve().parent.parent
    if root == repo or repo in root.parents:
        raise SystemExit(f"the scratch folder {root} must be outside the repository")
    marker = root / "vllm" / "v1" / "watermarking" / "prfs" / "philox.py"
    if not marker.exists():
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extractall(root, [n for n in zf.namelist() if n.endswith(".py") or n.endswith("METADATA")])
    meta = next(root.glob("vllm-*.dist-info/METADATA")).read_text()
    version = next(line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Version:"))
    if version != VLLM_VERSION:
        raise SystemExit(f"{root} holds vLLM {version}, not {VLLM_VERSION}")
    return root


def load_vllm(root: Path) -> dict[str, types.ModuleType]:
    """vLLM's watermarking modules, loaded from their source files (see the module docstring)."""
    def package(name: str, path: Path | None = None) -> None:
        if name not in sys.modules:
            mod = types.ModuleType(name)
            mod.__path__ = [str(path)] if path else []
            sys.modules[name] = mod

    def load(name: str, rel: str) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(name, root / rel)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod

    for name in ("vllm", "vllm.config", "vllm.v1", "vllm.v1.watermarking", "vllm.v1.watermarking.prfs",
                 "vllm.v1.worker", "vllm.v1.worker.gpu", "vllm.v1.worker.gpu.sample"):
        package(name, root / name.replace(".", "/"))
    logger = types.ModuleType("vllm.logger")
    logger.init_logger = logging.getLogger  # type: ignore[attr-defined]
    sys.modules["vllm.logger"] = logger
    cfg_utils = types.ModuleType("vllm.config.utils")
    cfg_utils.config = lambda cls: cls  # type: ignore[attr-defined]
    sys.modules["vllm.config.utils"] = cfg_utils
    gpu_gumbel = types.ModuleType("vllm.v1.worker.gpu.sample.gumbel")

    def gumbel_sample(*args, **kwargs):
        raise NotImplementedError("vLLM's GPU random sampler is not part of these vectors")

    gpu_gumbel.gumbel_sample = gumbel_sample  # type: ignore[attr-defined]
    sys.modules["vllm.v1.worker.gpu.sample.gumbel"] = gpu_gumbel

    mods = {
        "config": load("vllm.config.watermarking", "vllm/config/watermarking.py"),
        "base": load("vllm.v1.watermarking.prfs.base", "vllm/v1/watermarking/prfs/base.py"),
        "philox": load("vllm.v1.watermarking.prfs.philox", "vllm/v1/watermarking/prfs/philox.py"),
    }
    prfs = load("vllm.v1.watermarking.prfs", "vllm/v1/watermarking/prfs/__init__.py")
    mods["prfs"] = prfs
    mods["detector"] = load("vllm.v1.watermarking.detector", "vllm/v1/watermarking/detector.py")
    mods["watermarker"] = load("vllm.v1.watermarking.watermarker", "vllm/v1/watermarking/watermarker.py")
    mods["gumbel"] = load("vllm.v1.watermarking.gumbel", "vllm/v1/watermarking/gumbel.py")
    return mods


class WordTap:
    """Records the uint32 words vLLM's ``_philox_uniform`` hands to ``uint32_to_uniform``."""

    def __init__(self, philox: types.ModuleType) -> None:
        self.original = philox.uint32_to_uniform
        self.words: list = []
        philox.uint32_to_uniform = self

    def __call__(self, values):
        self.words.append(values.clone())
        return self.original(values)


def vllm_words_uniforms(mods, tap: WordTap, key: int, contexts: np.ndarray, tokens: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """vLLM's ``PhiloxPRF(key).uniform(contexts, tokens[:, None])``: uint32 words and float32 uniforms."""
    import torch

    prf = mods["philox"].PhiloxPRF(key)
    tap.words.clear()
    u = prf.uniform(torch.from_numpy(contexts), torch.from_numpy(tokens)[:, None])
    (words,) = tap.words
    return (words.squeeze(-1).numpy().astype(np.uint32), u.squeeze(-1).numpy().astype(np.float32))


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def build(root: Path) -> dict[str, np.ndarray]:
    import torch

    mods = load_vllm(root)
    tap = WordTap(mods["philox"])
    out: dict[str, np.ndarray] = {"vllm_version": np.array(VLLM_VERSION), "prf_version":
                                  np.array(mods["philox"].PhiloxPRF.version),
                                  "keys": np.array(KEYS, dtype=np.uint64)}
    assert str(out["prf_version"]) == PRF_VERSION

    # raw vectors
    rk, rw, rc, rt, rwords, ru, rs = [], [], [], [], [], [], []
    for ki, key in enumerate(KEYS):
        for w in WIDTHS:
            ctx, tok = seeded_pairs(1000 + ki, w, RAW_PAIRS)
            words, u = vllm_words_uniforms(mods, tap, key, ctx, tok)
            det = mods["gumbel"].GumbelWatermarkDetector(key, context_width=w)
            scores = det._score_tokens(torch.from_numpy(ctx), torch.from_numpy(tok)).numpy()
            padded = np.zeros((RAW_PAIRS, max(WIDTHS)), dtype=np.int64)
            padded[:, :w] = ctx
            rk.append(np.full(RAW_PAIRS, ki))
            rw.append(np.full(RAW_PAIRS, w))
            rc.append(padded)
            rt.append(tok)
            rwords.append(words)
            ru.append(u)
            rs.append(scores)
    out.update(raw_key_index=np.concatenate(rk).astype(np.int8), raw_width=np.concatenate(rw).astype(np.int8),
               raw_contexts=np.concatenate(rc), raw_tokens=np.concatenate(rt), raw_words=np.concatenate(rwords),
               raw_uniforms=np.concatenate(ru), raw_scores=np.concatenate(rs))

    # digests over ~1.1M seeded pairs
    dk, dw, dwords, du = [], [], [], []
    for ki in DIGEST_KEY_INDICES:
        for w in WIDTHS:
            ctx, tok = seeded_pairs(ki, w, DIGEST_PAIRS)
            words, u = vllm_words_uniforms(mods, tap, KEYS[ki], ctx, tok)
            dk.append(ki)
            dw.append(w)
            dwords.append(sha256(words.astype("<u4")))
            du.append(sha256(u.astype("<f4")))
        print(f"digests: key {ki} done", flush=True)
    out.update(digest_key_index=np.array(dk, dtype=np.int8), digest_width=np.array(dw, dtype=np.int8),
               digest_pairs=np.array(DIGEST_PAIRS), digest_words_sha256=np.array(dwords),
               digest_uniforms_sha256=np.array(du))

    # the uint32 -> uniform conversion over every 24-bit mantissa (low byte set to 0xA5)
    m = torch.arange(1 << 24, dtype=torch.int64)
    u = mods["base"].uint32_to_uniform((m << 8) | 0xA5).numpy().astype("<f4")
    out["mantissa_uniform_sha256"] = np.array(sha256(u))
    out["mantissa_uniform_samples"] = u[::4099].copy()

    # dual-key derivation
    derive = mods["config"].derive_watermark_key
    out["derived_a"] = np.array([derive(k, b"key_a") for k in KEYS], dtype=np.uint64)
    out["derived_b"] = np.array([derive(k, b"key_b") for k in KEYS], dtype=np.uint64)

    # detectors: scores, p-values and the (de-duplicated) contexts they score
    texts = detect_texts()
    out["detect_tokens"] = np.concatenate(texts)
    out["detect_offsets"] = np.concatenate(([0], np.cumsum([t.size for t in texts]))).astype(np.int64)
    rows, kept = [], []
    g = mods["gumbel"]
    for ki in (2, 4):
        key = KEYS[ki]
        for w in DETECT_WIDTHS:
            for dedup in (True, False):
                for ti, text in enumerate(texts):
                    det = g.GumbelWatermarkDetector(key, context_width=w, deduplicate_contexts=dedup)
                    r = det.detect(text.tolist())
                    ctx, tgt = det._prepare_inputs(text.tolist())
                    keep = np.zeros(text.size, dtype=bool)
                    # positions kept: vLLM keeps targets in order; recover them by replaying
                    keep[_kept_positions(text, w, dedup)] = True
                    assert np.array_equal(text[keep], tgt.numpy())
                    padded = np.concatenate([np.full(w, -1), text])
                    windows = np.stack([padded[np.flatnonzero(keep) + j] for j in range(w)], axis=1)
                    assert np.array_equal(windows.reshape(ctx.shape), ctx.numpy())
                    kept.append(keep)
                    rows.append((ki, w, int(dedup), ti, -1.0, r.score, r.p_value, r.num_scored_tokens))
                    if dedup:
                        for alpha in DETECT_ALPHAS:
                            dd = g.DualKeyGumbelWatermarkDetector(key, context_width=w, alpha=alpha)
                            rd = dd.detect(text.tolist())
                            rows.append((ki, w, 1, ti, alpha, rd.score, rd.p_value, rd.num_scored_tokens))
    out["detect_rows"] = np.array(rows, dtype=np.float64)
    # one row per (key, width, dedup): the kept positions over the concatenated texts
    out["detect_kept"] = np.concatenate(kept).reshape(-1, out["detect_tokens"].size)

    # vLLM's CPU Gumbel-max sampler (GumbelWatermarker._sample_watermarked)
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((SAMPLE_ROWS, SAMPLE_VOCAB)) * 2.0).astype(np.float32)
    contexts = rng.integers(0, SAMPLE_VOCAB, size=(SAMPLE_ROWS, 4), dtype=np.int64)
    wm = g.GumbelWatermarker(KEYS[3], context_width=4)
    chosen = wm._sample_watermarked(torch.from_numpy(logits), torch.from_numpy(contexts)).token_ids.numpy()
    out.update(sample_logits=logits, sample_contexts=contexts, sample_key_index=np.array(3),
               sample_tokens=chosen.astype(np.int64))
    return out


def _kept_positions(text: np.ndarray, width: int, dedup: bool) -> np.ndarray:
    """Positions of ``text`` that vLLM's detector scores (``_prepare_inputs``' rule, replayed
    to know where its targets came from; its targets are checked against these)."""
    seen, keep = set(), []
    prefix = [-1] * width
    for i, t in enumerate(text.tolist()):
        ctx = tuple(prefix[-width:])
        if not dedup or ctx not in seen:
            seen.add(ctx)
            keep.append(i)
        prefix.append(t)
    return np.array(keep, dtype=np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel-dir", type=Path, default=Path("/tmp/vllm-wheel"))
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/vllm-src"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    root = unpack_wheel(args.wheel_dir, args.scratch)
    data = build(root)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **data)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) from vLLM {VLLM_VERSION}")


if __name__ == "__main__":
    main()
