"""Radioactivity with a neural teacher and student (the optional [neural] extra, torch on CPU).

A small causal transformer teacher is trained on the corpus; it answers prompts through the
greenlist fingerprint (h = 2, gamma = 0.25, delta = 3). A student base (another small
transformer) is trained on half of the corpus; the **student** is that base fine-tuned on a
mixture where a fraction rho of the tokens are the teacher's fingerprinted answers, the
**control** is the same base fine-tuned on clean text only. Both answer fresh prompts; the
verify pipeline (``fingerprint.verify``, no decoys) tests their answers text-only and supervised
(scoring restricted to windows of the teacher's served answers).

Run (about 10-15 minutes of CPU): ``python -m eval.neural``. Writes eval/results/neural.md/.csv.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from fingerprint.keys import FingerprintKey
from fingerprint.sim.distill import corpus_prompts, mixture
from fingerprint.sim.distill import FingerprintedData
from fingerprint.sim.generate import generate
from fingerprint.sim.neural import TinyTransformerLM
from fingerprint.sim.teacher import build_teacher
from fingerprint.verify import VerifyOptions, text_evidence, verify_evidence
from fingerprint.windows import WindowFilter

RESULTS = Path(__file__).parent / "results"


def _flat(arrays):
    return np.concatenate(arrays), np.concatenate(([0], np.cumsum([a.size for a in arrays]))).astype(np.int64)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher-steps", type=int, default=1500)
    ap.add_argument("--base-steps", type=int, default=1000)
    ap.add_argument("--finetune-steps", type=int, default=600)
    ap.add_argument("--rho", type=float, default=0.5, help="fingerprinted fraction of the fine-tuning data")
    ap.add_argument("--fingerprinted-tokens", type=int, default=60_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--answer-tokens", type=int, default=150)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def say(msg: str) -> None:
        print(f"  [{time.time() - t0:5.0f}s] {msg}", file=sys.stderr, flush=True)

    teacher_data = build_teacher()
    vocab = teacher_data.vocab_size
    rng = np.random.default_rng(args.seed)
    say(f"teacher transformer: {args.teacher_steps} steps on {teacher_data.tokens.size:,} tokens")
    teacher = TinyTransformerLM(vocab, d_model=args.d_model, seed=args.seed)
    t_loss = teacher.fit(teacher_data.tokens, teacher_data.offsets, steps=args.teacher_steps, batch_size=32)
    key = FingerprintKey.generate("greenlist", vocab_size=vocab, context_width=2, gamma=0.25, delta=3.0)
    scheme = key.scheme_object()
    n_fp = -(-args.fingerprinted_tokens // 150)
    prompts, _ = corpus_prompts(teacher_data, n_fp, length=8, rng=rng)
    say(f"teacher answers {n_fp} prompts through the fingerprint")
    answers = generate(teacher, prompts, 150, rng, scheme=scheme, batch_size=256)
    data = FingerprintedData(prompts, answers)

    n_par = teacher_data.offsets.size - 1
    half = np.sort(rng.choice(n_par, size=n_par // 2, replace=False))
    clean_tokens, clean_offsets = _flat([teacher_data.tokens[teacher_data.offsets[i]:teacher_data.offsets[i + 1]]
                                         for i in half])
    say(f"student base: {args.base_steps} steps on half of the corpus")
    base = TinyTransformerLM(vocab, d_model=args.d_model, seed=args.seed + 1)
    base.fit(clean_tokens, clean_offsets, steps=args.base_steps, batch_size=32)
    # fine-tuning data: the fingerprinted answers are a fraction rho of it
    n_clean = int(data.n_tokens * (1 - args.rho) / args.rho)
    cut = int(np.searchsorted(clean_offsets, n_clean))
    ft_clean = (clean_tokens[:clean_offsets[cut]], clean_offsets[:cut + 1])
    mix_tokens, mix_offsets, reached = mixture(*ft_clean, data, args.rho)
    rows = []
    served = WindowFilter.from_tokens(*_flat(answers), 2, vocab_size=vocab)
    queries, _ = corpus_prompts(teacher_data, args.queries, length=12, rng=rng)
    q_tokens, q_offsets = _flat(queries)
    for name, (tok, off) in (("student", (mix_tokens, mix_offsets)), ("control", ft_clean)):
        say(f"{name}: fine-tuning {args.finetune_steps} steps")
        model = base.copy()
        model.fit(tok, off, steps=args.finetune_steps, batch_size=32, lr=1e-3)
        say(f"{name}: answering {args.queries} x {args.answer_tokens} tokens")
        ans = generate(model, queries, args.answer_tokens, rng, batch_size=256)
        a_tokens, a_offsets = _flat(ans)
        for mode, wf in (("text", None), ("supervised", served)):
            ev = text_evidence(a_tokens, a_offsets, context_width=2, vocab_size=vocab, prompt_tokens=q_tokens,
                               prompt_offsets=q_offsets, window_filter=wf)
            res = verify_evidence(ev, key, options=VerifyOptions(n_decoys=0)).results[0]
            rows.append({"suspect": name, "rho": args.rho if name == "student" else 0.0, "mode": mode,
                         "tokens": res.counts.tokens_read, "n_scored": res.counts.scored,
                         "log10_p": res.test.log10_pvalue, "effect": res.test.effect.value})
            say(f"{name} {mode}: log10 p = {res.test.log10_pvalue:.1f} ({res.counts.scored:,} tuples)")
    with open(out / "neural.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"Transformer teacher (d={args.d_model}, 2 layers, {args.teacher_steps} steps, final loss "
             f"{np.mean(t_loss[-50:]):.2f} nats/token); student base fine-tuned {args.finetune_steps} steps with "
             f"rho = {reached:.0%} fingerprinted tokens, control fine-tuned on clean text.", "",
             "| suspect | access | suspect tokens | tuples | log10 p | green-rate excess |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['suspect']} | {r['mode']} | {r['tokens']:,} | {r['n_scored']:,} | {r['log10_p']:.1f} | "
                     f"{r['effect']:+.4f} |")
    (out / "neural.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}/neural.csv/.md in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
