"""Radioactivity of neural students: power of every access mode against transformers GPT-2 students.

A GPT-2 teacher (transformers, trained here on the packaged corpus) serves answers to corpus
prompts through the greenlist fingerprint (h = 1 by default, gamma = 0.25, delta = 3) and, for
the control, the same prompts' answers without it. The students of a seed start from one base
(a GPT-2 pre-trained on the corpus: a rival distils into a model that already knows the
language) and are fine-tuned on one budget of tokens, a fraction rho of which are the teacher's
fingerprinted answers (the rest the corpus); the rho = 0 control trains on the teacher's
*unfingerprinted* answers at 10% (same style, no fingerprint: the key null), and a corpus-only
student never sees the teacher. Each student is then tested in every access mode:

* ``text``: its answers to fresh prompts (prompt windows excluded);
* ``served windows``: the same, scoring only windows of the teacher's served answers;
* ``logprobs top-5``: its top-5 logprobs on its own answers (the weighted statistic);
* ``reading top-5``: the teacher's served answers fed to it, its top-5 predictions at every
  position (what an OpenAI-compatible server returns with ``echo``/``prompt_logprobs``), with the
  owner's model (the teacher, which never saw the key: it samples through the fingerprint) as
  the reference;
* ``open weights``: the same with its top-64 distribution read from its weights, with the
  reference, and without it (``open weights, no reference``);
* ``open weights, clean fed texts``: the teacher's answers to the same prompts sampled *without*
  the fingerprint are fed instead (same windows, independent of the key: no pair is excluded and
  the null is exact), with the reference;
* ``open weights, clean, window means``: the same, each window read over all its positions
  (``aggregate="mean"``);
* ``open weights, clean, shadow reference``: the same with a shadow student as the reference:
  the owner's own model of the suspect's size trained on the corpus and the teacher's clean
  answers (here the next seed's control: its own base and initialisation), which never saw the
  key;
* ``open weights, clean, 2 shadows, sqrt-exposure``: the same with two shadows (the next two
  seeds' controls; their mean probabilities are the reference, so each one's own noise averages
  out) and every window weighted by the square root of its occurrences in the fed texts (the
  precision of its mean). Chosen on seeds' models before this table was made (the comparison of
  weightings is in the README); the null is exact for any key-free weights.

Validity on the neural benchmark: for the control and corpus students, 1,000 decoy keys on the
open-weights evidence (fed texts fingerprinted with the true key), and on the window-means and
shadow-reference evidence (clean fed texts), must give uniform randomized p-values, and the true
key must not detect.

Run: ``python -m eval.neural_power`` (the README gives the size run here and its time);
``--smoke`` is a tiny run (under a minute) that checks the whole chain. Writes
eval/results/neural-power.csv/.md/.png.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
SHADOWS_MODE = "open weights, clean, 2 shadows, sqrt-exposure"
MODES = ("text", "served windows", "logprobs top-5", "reading top-5", "open weights", "open weights, no reference",
         "open weights, clean fed texts", "open weights, clean, window means", "open weights, clean, shadow reference",
         SHADOWS_MODE)


def say(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def _flat(arrays):
    return np.concatenate(arrays), np.concatenate(([0], np.cumsum([a.size for a in arrays]))).astype(np.int64)


class Config:
    def __init__(self, smoke: bool) -> None:
        self.teacher = dict(n_layer=4, n_embd=192, n_head=4) if not smoke else dict(n_layer=2, n_embd=64, n_head=2)
        self.student = dict(n_layer=2, n_embd=128, n_head=4) if not smoke else dict(n_layer=1, n_embd=64, n_head=2)
        self.seq = 128 if not smoke else 64
        self.teacher_steps = 800 if not smoke else 20
        self.student_steps = 300 if not smoke else 10
        self.batch = 16 if not smoke else 8
        self.answers = 1200 if not smoke else 30
        self.answer_tokens = 96 if not smoke else 32
        self.queries = 150 if not smoke else 10
        self.fed_budgets = (20000, 60000, 115000) if not smoke else (960,)
        self.rhos = (0.0, 0.02, 0.05, 0.1, 1.0) if not smoke else (0.0, 1.0)
        self.decoys = 1000 if not smoke else 100
        self.top_k = 64 if not smoke else 16  # open-weights candidates per position
        self.context_width = 1
        self.student_lr = 1e-3
        self.base_steps = 300 if not smoke else 5


def gpt2(vocab: int, seq: int, seed: int, **shape):
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=seq, bos_token_id=0, eos_token_id=0, **shape)
    return transformers.GPT2LMHeadModel(cfg)


def train(model, streams: list[tuple[np.ndarray, float]], *, steps: int, batch: int, seq: int, seed: int,
          lr: float = 2e-3, progress: str | None = None) -> float:
    """Train on random windows of token streams, each row drawn from stream i with probability
    weight_i; returns the mean loss of the last 50 steps (nats per token)."""
    import torch

    rng = np.random.default_rng(seed)
    probs = np.array([w for _, w in streams], dtype=float)
    probs /= probs.sum()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    losses = []
    for _ in range(steps):
        which = rng.choice(len(streams), size=batch, p=probs)
        rows = []
        for i in which:
            s = streams[i][0]
            start = int(rng.integers(0, s.size - seq - 1))
            rows.append(s[start:start + seq])
        x = torch.from_numpy(np.stack(rows).astype(np.int64))
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress and (len(losses) % 100 == 0):
            say(f"{progress}: step {len(losses)}/{steps}, loss {np.mean(losses[-100:]):.2f}")
    model.eval()
    return float(np.mean(losses[-50:]))


def val_loss(model, stream: np.ndarray, seq: int, n: int = 64) -> float:
    import torch

    rng = np.random.default_rng(12345)
    starts = rng.integers(0, stream.size - seq - 1, size=n)
    x = torch.from_numpy(np.stack([stream[s:s + seq] for s in starts]).astype(np.int64))
    with torch.no_grad():
        return float(model(input_ids=x, labels=x).loss)


def answer(model, prompts: list[np.ndarray], max_new: int, *, key=None, seed: int, batch: int = 64) -> list[np.ndarray]:
    """Sampled continuations (temperature 1) of equal-length prompts, fingerprinted with ``key``."""
    import torch
    from transformers import LogitsProcessorList

    from fingerprint.interop.hf import FingerprintLogitsProcessor

    torch.manual_seed(seed)
    out = []
    for a in range(0, len(prompts), batch):
        x = torch.from_numpy(np.stack(prompts[a:a + batch]).astype(np.int64))
        procs = LogitsProcessorList([FingerprintLogitsProcessor(key, seed=seed + a)]) if key is not None else None
        with torch.no_grad():
            y = model.generate(x, attention_mask=torch.ones_like(x), do_sample=True, top_k=0, max_new_tokens=max_new,
                               min_new_tokens=max_new, logits_processor=procs, pad_token_id=0)
        out += [r for r in y[:, x.shape[1]:].numpy().astype(np.int64)]
    return out


def read(model, texts: list[np.ndarray], *, top_k: int, references: tuple = (), batch: int = 32) -> list[list]:
    """Teacher-forced top-``K`` next-token candidates of ``model`` at every position of each text
    (position 0 has none): one list of :class:`PositionDistributions` per reference (or one without
    a reference when ``references`` is empty), each with that reference's probabilities of the
    same candidates; every model reads each batch once."""
    import torch

    from fingerprint.verify.distribution import PositionDistributions

    out: list[list] = [[] for _ in (references or (None,))]
    for a in range(0, len(texts), batch):
        chunk = texts[a:a + batch]
        width = max(t.size for t in chunk)
        x = np.zeros((len(chunk), width), dtype=np.int64)
        for i, t in enumerate(chunk):
            x[i, :t.size] = t
        xt = torch.from_numpy(x)
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=xt).logits.float(), dim=-1)
            top_lp, top_id = lp.topk(top_k, dim=-1)
            refs = [torch.log_softmax(r(input_ids=xt).logits.float(), dim=-1).gather(-1, top_id).exp().numpy()
                    for r in references]
        top_lp, top_id = top_lp.numpy(), top_id.numpy()
        for i, t in enumerate(chunk):
            L = t.size
            cands = np.full((L, top_k), -1, dtype=np.int64)
            probs = np.zeros((L, top_k))
            cands[1:] = top_id[i, :L - 1]  # logits at j-1 predict token j
            probs[1:] = np.exp(top_lp[i, :L - 1])
            for o, ref in zip(out, refs or [None]):
                rp = None
                if ref is not None:
                    rp = np.zeros((L, top_k))
                    rp[1:] = ref[i, :L - 1]
                o.append(PositionDistributions(t, cands, probs, rp))
    return out


def mean_reference(reads: list[list]) -> list:
    """One model's readings with several references (``reads[j]``: the list :func:`read` gave
    for reference ``j``) as one reading whose reference is their mean probability (each
    shadow's own noise averages out)."""
    return [type(d)(d.tokens, d.candidates, d.probs, np.mean([r[i].reference_probs for r in reads], axis=0))
            for i, d in enumerate(reads[0])]


def shadows_of(trained: list[list[tuple]], seed: int, n: int = 2) -> list:
    """The shadow references of ``seed``: the controls of the next ``n`` seeds (each its own base
    and initialisation; never the seed's own), fewer when there are fewer other seeds."""
    return [m for other in range(1, min(n + 1, len(trained)))
            for name, _r, m, _l in trained[(seed + other) % len(trained)] if name == "control"]


def _pvalue(ev, key) -> tuple[float, int]:
    """log10 p of the key's total on ``ev`` under the scheme's null (the test ``verify`` runs,
    without its trajectory, effect and Bayes factor), and the items scored."""
    scheme = key.scheme_object()
    scores = scheme.scores_of_blocks(ev.blocks).astype(np.float64)
    total = float(scores.sum() if ev.weights is None else (scores * ev.weights).sum())
    null = scheme.null(len(ev), blocks=ev.blocks, weights=ev.weights)
    return float(null.log10_sf(np.array([total]))[0]), len(ev)


def decoy_check(ev, key, n: int, seed: int) -> tuple[float, float]:
    """KS p-value of ``n`` decoy keys' randomized p-values on ``ev``, and the fraction below 0.01."""
    from scipy import stats

    scheme = key.scheme_object()
    null = scheme.null(len(ev), blocks=ev.blocks, weights=ev.weights)
    totals = np.array([float(d.scheme_object().scores_of_blocks(ev.blocks).astype(np.float64) @ ev.weights)
                       for d in key.decoys(n, seed=seed)])
    p = null.randomized_pvalues(totals, np.random.default_rng(seed).random(n))
    return float(stats.kstest(p, "uniform").pvalue), float((p < 0.01).mean())


def evaluate(student, name: str, rho: float, seed: int, ctx: dict, cfg: Config) -> list[dict]:
    from fingerprint.verify.distribution import distribution_evidence, sqrt_exposure_weights
    from fingerprint.verify.evidence import text_evidence

    key, teacher_model, vocab = ctx["key"], ctx["teacher_model"], ctx["vocab"]
    rows = []

    def row(mode: str, tokens: int, lp: float, n: int, **extra) -> None:
        rows.append({"student": name, "rho": rho, "seed": seed, "mode": mode, "suspect_tokens": tokens,
                     "n_scored": n, "log10_p": round(lp, 3), **extra})

    answers = answer(student, ctx["queries"], cfg.answer_tokens, seed=seed + 77)
    a_tok, a_off = _flat(answers)
    for mode, wf in (("text", None), ("served windows", ctx["served_filter"])):
        ev = text_evidence(a_tok, a_off, context_width=cfg.context_width, vocab_size=vocab, prompt_tokens=ctx["q_tok"],
                           prompt_offsets=ctx["q_off"], window_filter=wf)
        row(mode, int(a_tok.size), *_pvalue(ev, key))
    own = read(student, [np.concatenate((q, a)) for q, a in zip(ctx["queries"], answers)], top_k=5)[0]
    for d, q in zip(own, ctx["queries"]):  # the prompt's positions are not the suspect's answer
        d.candidates[:q.size + cfg.context_width] = -1
    ev = distribution_evidence(own, context_width=cfg.context_width, vocab_size=vocab, exclude_fed_pairs=False)
    row("logprobs top-5", int(a_tok.size), *_pvalue(ev, key))
    # every model reads the largest budget once; a smaller budget is its first texts
    n_texts = max(1, cfg.fed_budgets[-1] // cfg.answer_tokens)
    fed_all = ctx["fed"][:n_texts]
    (full,) = read(student, fed_all, top_k=cfg.top_k, references=(teacher_model,))
    # the owner's model sampled WITHOUT the fingerprint on the same prompts: the same windows,
    # independent of the key, so no pair is excluded and the null is exact
    clean_all = ctx["clean"][:n_texts]
    shadows = ctx.get("shadows", [])  # the owner's own models of the suspect's size (see run)
    clean_reads = read(student, clean_all, top_k=cfg.top_k, references=(teacher_model, *shadows))
    if len(shadows) > 1:
        clean_reads.append(mean_reference(clean_reads[1:]))
    last = cfg.fed_budgets[-1]
    for budget in cfg.fed_budgets:
        n = max(1, budget // cfg.answer_tokens)
        n_fed = int(sum(t.size for t in fed_all[:n]))
        for mode, k, use_ref in (("reading top-5", 5, True), ("open weights", cfg.top_k, True),
                                 ("open weights, no reference", cfg.top_k, False)):
            dists = [type(d)(d.tokens, d.candidates[:, :k], d.probs[:, :k],
                             d.reference_probs[:, :k] if (use_ref and d.reference_probs is not None) else None)
                     for d in full[:n]]
            ev = distribution_evidence(dists, context_width=cfg.context_width, vocab_size=vocab)
            extra = {}
            if budget == last and name in ("control", "corpus") and mode == "open weights":
                ks, low = decoy_check(ev, key, cfg.decoys, seed)
                extra = {"decoy_ks_pvalue": round(ks, 4), "decoy_below_0.01": low}
            row(mode, n_fed, *_pvalue(ev, key), **extra)
        n_clean = int(sum(t.size for t in clean_all[:n]))
        for mode, which, aggregate, weighting in (
                ("open weights, clean fed texts", 0, "first", None),
                ("open weights, clean, window means", 0, "mean", None),
                ("open weights, clean, shadow reference", 1, "mean", None),
                (SHADOWS_MODE, len(shadows) + 1, "mean", sqrt_exposure_weights)):
            if which >= len(clean_reads):
                continue
            texts = clean_reads[which][:n]
            ev = distribution_evidence(texts, context_width=cfg.context_width, vocab_size=vocab,
                                       exclude_fed_pairs=False, aggregate=aggregate,
                                       window_weights=None if weighting is None else weighting(
                                           [d.tokens for d in texts], cfg.context_width))
            extra = {}
            if budget == last and name in ("control", "corpus") and aggregate == "mean":
                ks, low = decoy_check(ev, key, cfg.decoys, seed)
                extra = {"decoy_ks_pvalue": round(ks, 4), "decoy_below_0.01": low}
            row(mode, n_clean, *_pvalue(ev, key), **extra)
    return rows


def _trained(model, cache: Path | None, name: str, fit) -> tuple[object, float]:
    """``model`` trained by ``fit(model) -> loss``, or loaded from ``cache/name.pt`` where an
    earlier run with the same configuration saved it (the state dict and its loss)."""
    import torch

    path = cache / f"{name}.pt" if cache is not None else None
    if path is not None and path.exists():
        saved = torch.load(path, weights_only=True)
        model.load_state_dict(saved["state"])
        model.eval()
        return model, float(saved["loss"])
    loss = fit(model)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": model.state_dict(), "loss": loss}, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)  # never a half-written model
    return model, loss


def prepare(cfg: Config, seeds: int, cache: Path | None = None) -> tuple[dict, list[list[tuple]], dict]:
    """The teacher, its answers and every seed's students (trained, or loaded from ``cache``):
    ``(ctx, trained, info)``, ``trained[seed]`` a list of ``(name, rho, model, train_loss)``."""
    import hashlib
    import json

    import torch

    from fingerprint.keys import FingerprintKey
    from fingerprint.sim.distill import corpus_prompts
    from fingerprint.sim.teacher import build_teacher
    from fingerprint.windows import WindowFilter

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    if cache is not None:  # one folder per configuration: a changed setting never reuses a model
        # the models depend on the training settings only: another rho list or budget reuses them
        ignore = ("rhos", "fed_budgets", "decoys", "queries", "top_k")
        settings = {k: v for k, v in vars(cfg).items() if k not in ignore}
        cache = cache / hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    base = build_teacher()
    vocab = base.vocab_size
    rng = np.random.default_rng(0)
    n_par = base.offsets.size - 1
    held = np.zeros(n_par, bool)
    held[rng.choice(n_par, n_par // 10, replace=False)] = True
    corpus = np.concatenate([base.tokens[base.offsets[i]:base.offsets[i + 1]] for i in np.flatnonzero(~held)])
    valid = np.concatenate([base.tokens[base.offsets[i]:base.offsets[i + 1]] for i in np.flatnonzero(held)])
    say(f"teacher: GPT-2 {cfg.teacher}, {cfg.teacher_steps} steps on {corpus.size:,} corpus tokens")
    teacher_model, _ = _trained(
        gpt2(vocab, cfg.seq, 0, **cfg.teacher), cache, "teacher",
        lambda m: train(m, [(corpus, 1.0)], steps=cfg.teacher_steps, batch=cfg.batch, seq=cfg.seq, seed=0, lr=2e-3,
                        progress="teacher"))
    t_val = val_loss(teacher_model, valid, cfg.seq)
    say(f"teacher validation loss {t_val:.2f} nats/token ({time.perf_counter() - t0:.0f} s)")
    key = FingerprintKey(bytes(range(40, 72)), "greenlist", {"delta": 3.0, "context_width": cfg.context_width}, vocab)
    prompts, _ = corpus_prompts(base, cfg.answers, length=8, rng=rng)
    saved = cache / "answers.npz" if cache is not None else None
    if saved is not None and saved.exists():
        with np.load(saved) as z:
            fp, clean = list(z["fingerprinted"]), list(z["clean"])
    else:
        fp = answer(teacher_model, prompts, cfg.answer_tokens, key=key, seed=1)
        clean = answer(teacher_model, prompts, cfg.answer_tokens, seed=2)
        if saved is not None:
            np.savez(saved.with_suffix(".tmp.npz"), fingerprinted=np.stack(fp), clean=np.stack(clean))
            saved.with_suffix(".tmp.npz").replace(saved)
    say(f"teacher answers: {len(fp)} fingerprinted, {len(clean)} clean ({time.perf_counter() - t0:.0f} s)")
    fp_stream = np.concatenate([np.concatenate((p, a, [0])) for p, a in zip(prompts, fp)])
    clean_stream = np.concatenate([np.concatenate((p, a, [0])) for p, a in zip(prompts, clean)])
    queries, _ = corpus_prompts(base, cfg.queries, length=12, rng=np.random.default_rng(99))
    q_tok, q_off = _flat(queries)
    ctx = {"key": key, "teacher_model": teacher_model, "vocab": vocab, "queries": queries, "q_tok": q_tok,
           "q_off": q_off, "fed": fp, "clean": clean,
           "served_filter": WindowFilter.from_tokens(*_flat(fp), cfg.context_width, vocab_size=vocab)}
    students = [("corpus", 0.0, [(corpus, 1.0)])]
    for rho in cfg.rhos:
        if rho == 0.0:
            students.append(("control", 0.0, [(corpus, 0.9), (clean_stream, 0.1)]))
        elif rho >= 1.0:
            students.append(("student", 1.0, [(fp_stream, 1.0)]))
        else:
            students.append(("student", rho, [(corpus, 1 - rho), (fp_stream, rho)]))
    trained: list[list[tuple]] = []
    for seed in range(seeds):
        # every student of a seed starts from one base: pre-trained on the corpus for base_steps
        # (a rival distils into a model that already knows the language), then fine-tuned
        base_model, _ = _trained(
            gpt2(vocab, cfg.seq, 1000 + seed, **cfg.student), cache, f"base-{seed}",
            lambda m: train(m, [(corpus, 1.0)], steps=cfg.base_steps, batch=cfg.batch, seq=cfg.seq, seed=500 + seed,
                            progress=f"base {seed}") if cfg.base_steps else float("nan"))
        base_state = {k: v.clone() for k, v in base_model.state_dict().items()}
        trained.append([])
        for name, rho, streams in students:
            model = gpt2(vocab, cfg.seq, 1000 + seed, **cfg.student)
            model.load_state_dict(base_state)  # identical initialisation per seed
            model, loss = _trained(model, cache, f"{name}-{rho:g}-{seed}", lambda m, st=streams: train(
                m, st, steps=cfg.student_steps, batch=cfg.batch, seq=cfg.seq, seed=seed, lr=cfg.student_lr))
            trained[-1].append((name, rho, model, loss))
            say(f"seed {seed} {name} rho={rho:g} trained, loss {loss:.2f} ({time.perf_counter() - t0:.0f} s)")
    return ctx, trained, {"teacher_val_loss": t_val, "t0": t0}


def run(cfg: Config, seeds: int, cache: Path | None = None) -> tuple[list[dict], dict]:
    ctx, trained, prep = prepare(cfg, seeds, cache)
    t0 = prep["t0"]
    rows: list[dict] = []
    for seed, models in enumerate(trained):
        ctx["shadows"] = shadows_of(trained, seed)
        for name, rho, model, loss in models:
            new = evaluate(model, name, rho, seed, ctx, cfg)
            for r in new:
                r["train_loss"] = round(loss, 3)
            rows += new
            say(f"seed {seed} {name} rho={rho:g}: " + ", ".join(f"{r['mode']} {r['log10_p']:.1f}" for r in new
                                                              if r["suspect_tokens"] in (max(x['suspect_tokens'] for x in new if x['mode'] == r['mode']),))
                + f" ({time.perf_counter() - t0:.0f} s)")
    info = {"teacher_val_loss": prep["teacher_val_loss"], "seconds": time.perf_counter() - t0, "teacher": cfg.teacher,
            "student": cfg.student}
    return rows, info


def summarize(rows: list[dict], cfg: Config) -> list[str]:
    """Markdown: median log10 p per student and mode (largest budget), smallest rho detected per
    mode, fed tokens needed at rho = 10%, and the decoy checks."""
    lines = ["| student | rho | " + " | ".join(MODES) + " |", "|---|---|" + "---|" * len(MODES)]
    groups = sorted({(r["student"], r["rho"]) for r in rows}, key=lambda g: (g[0] != "corpus", g[0] != "control", g[1]))
    for name, rho in groups:
        cells = []
        for mode in MODES:
            sel = [r for r in rows if r["student"] == name and r["rho"] == rho and r["mode"] == mode]
            top = max((r["suspect_tokens"] for r in sel), default=0)
            vals = [r["log10_p"] for r in sel if r["suspect_tokens"] == top]
            cells.append(f"{np.median(vals):.1f}" if vals else "n/a")
        lines.append(f"| {name} | {rho:g} | " + " | ".join(cells) + " |")
    lines += ["", "| mode | smallest rho detected (median log10 p < -6 at some budget: tokens) | fed/suspect tokens "
              "needed at rho = 10% |", "|---|---|---|"]
    for mode in MODES:
        found = "none"
        for rho in sorted({r["rho"] for r in rows if r["student"] == "student"}):
            sel = [r for r in rows if r["student"] == "student" and r["rho"] == rho and r["mode"] == mode]
            hit = [b for b in sorted({r["suspect_tokens"] for r in sel})
                   if np.median([r["log10_p"] for r in sel if r["suspect_tokens"] == b]) < -6]
            if hit:
                found = f"{rho:g} ({hit[0]:,})"
                break
        need = "not reached"
        sel = [r for r in rows if r["student"] == "student" and r["rho"] == 0.1 and r["mode"] == mode]
        for budget in sorted({r["suspect_tokens"] for r in sel}):
            vals = [r["log10_p"] for r in sel if r["suspect_tokens"] == budget]
            if np.median(vals) < -6:
                need = f"{budget:,}"
                break
        lines.append(f"| {mode} | {found} | {need} |")
    checks = [r for r in rows if "decoy_ks_pvalue" in r]
    if checks:
        lines += ["", f"Null checks ({cfg.decoys} decoy keys each; `open weights`: fed texts fingerprinted with the "
                  f"true key; the others: clean fed texts): "
                  + "; ".join(f"{r['mode']}, {r['student']} seed {r['seed']}: KS p = {r['decoy_ks_pvalue']:.3f}, true "
                              f"key log10 p = {r['log10_p']:.2f}" for r in checks) + "."]
    return lines


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    rhos = sorted({r["rho"] for r in rows if r["student"] == "student"})
    for mode in MODES:
        ys = []
        for rho in rhos:
            sel = [r for r in rows if r["student"] == "student" and r["rho"] == rho and r["mode"] == mode]
            top = max((r["suspect_tokens"] for r in sel), default=0)
            ys.append(-np.median([r["log10_p"] for r in sel if r["suspect_tokens"] == top]) if sel else np.nan)
        ax.plot([100 * r for r in rhos], ys, marker="o", label=mode)
    ax.axhline(6, color="k", ls="--", lw=0.8, label="p = 1e-6")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_yscale("symlog", linthresh=10)
    ax.set_xlabel("rho: fingerprinted share of the student's training tokens (%)")
    ax.set_ylabel("-log10 p (median over seeds)")
    ax.set_title("Neural (GPT-2) students: detection by access mode")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="students per rho, each from its own initialisation (default 3)")
    ap.add_argument("--smoke", action="store_true", help="a tiny run for the test suite (under a minute)")
    ap.add_argument("--out", default=str(RESULTS), help="folder for neural-power.csv/.md/.png (default eval/results)")
    ap.add_argument("--teacher-steps", type=int, help="teacher training steps (default 800; smoke 20)")
    ap.add_argument("--student-steps", type=int, help="student training steps (default 300; smoke 10)")
    ap.add_argument("--rhos", help="comma-separated fingerprinted shares, 0 = the control (default 0,0.02,0.05,0.1,1)")
    ap.add_argument("--budgets", help="comma-separated fed-token budgets of the reading modes (default "
                                      "20000,60000,115000)")
    ap.add_argument("--batch", type=int, help="training rows per step (default 16; smoke 8)")
    ap.add_argument("--seq", type=int, help="training window and model context, tokens (default 128; smoke 64)")
    ap.add_argument("--context-width", type=int, help="the greenlist key's context width h (default 1)")
    ap.add_argument("--base-steps", type=int, help="corpus pre-training steps of the students' shared base "
                                                   "(default 300; smoke 5; 0: students from scratch)")
    ap.add_argument("--cache", help="folder that keeps the trained models of a configuration, so that a rerun "
                                    "(another rho list, budget or statistic) skips their training (default: none)")
    args = ap.parse_args(argv)
    cfg = Config(args.smoke)
    if args.batch:
        cfg.batch = args.batch
    if args.seq:
        cfg.seq = args.seq
    cfg.answer_tokens = min(cfg.answer_tokens, cfg.seq - 16)  # prompt + answer fit the models' context
    if args.teacher_steps:
        cfg.teacher_steps = args.teacher_steps
    if args.student_steps:
        cfg.student_steps = args.student_steps
    if args.context_width:
        cfg.context_width = args.context_width
    if args.base_steps is not None:
        cfg.base_steps = args.base_steps
    if args.rhos:
        cfg.rhos = tuple(float(x) for x in args.rhos.split(","))
    if args.budgets:
        cfg.fed_budgets = tuple(int(x) for x in args.budgets.split(","))
    rows, info = run(cfg, args.seeds, Path(args.cache) if args.cache else None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0]) + sorted({k for r in rows for k in r} - set(rows[0]))  # the same order every run
    with open(out / "neural-power.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    cmd = "python -m eval.neural_power" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    lines = [f"GPT-2 teacher {info['teacher']} (validation loss {info['teacher_val_loss']:.2f} nats/token), greenlist "
             f"key h = {cfg.context_width}, gamma 0.25, delta 3; students {info['student']} from one base per seed "
             f"({cfg.base_steps} corpus steps), then {cfg.student_steps} steps x {cfg.batch} x {cfg.seq} tokens of their "
             f"mixture; median log10 p over {args.seeds} seed(s), at the largest budget "
             f"({cfg.queries} answers x {cfg.answer_tokens} tokens for text/logprobs; {cfg.fed_budgets[-1]:,} fed tokens "
             f"for reading).", "", *summarize(rows, cfg), "",
             f"`{cmd}` ({info['seconds'] / 60:.1f} min on this machine)."]
    (out / "neural-power.md").write_text("\n".join(lines) + "\n")
    plot(rows, out / "neural-power.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
