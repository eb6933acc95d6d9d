"""False-positive rates over many keys, on text that never saw the key.

Two kinds of innocent suspect text: answers of a rho = 0 student (a trigram model trained
on half of the corpus, no fingerprinted data) and human text (corpus paragraphs). For each
scheme and context width, 2,000 keys (decoys from a fixed seed) test the same text through
the verify pipeline (``fingerprint.verify``: prompt exclusion, de-duplication, the scheme's
exact null); the evidence is built once per text and setting and every key is tested on it.
The false-positive rate of the keys' p-values (unadjusted: one call per key) at alpha = 1e-2
and 1e-3 must lie in its 99% binomial interval around alpha.

Run (about 15 CPU-minutes, over ``--workers`` processes, 2 by default): ``python -m eval.validity``.
Writes eval/results/validity.csv/.md/.png.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
from scipy import stats

from fingerprint.keys import FingerprintKey
from fingerprint.sim.distill import FingerprintedData, corpus_prompts, distill_student
from fingerprint.sim.generate import generate
from fingerprint.sim.teacher import build_teacher
from fingerprint.verify import VerifyOptions, text_evidence, verify_evidence

RESULTS = Path(__file__).parent / "results"
SETTINGS = [("greenlist", 1), ("greenlist", 2), ("greenlist", 4), ("gumbel", 2), ("tournament", 2)]
ALPHAS = (1e-2, 1e-3)
#: Each key is tested alone (no Holm across keys); the keys are themselves the decoys here.
OPTIONS = VerifyOptions(n_decoys=0)


def _flat(arrays):
    tokens = np.concatenate(arrays)
    return tokens, np.concatenate(([0], np.cumsum([a.size for a in arrays]))).astype(np.int64)


def texts(teacher, n_tokens: int, seed: int):
    rng = np.random.default_rng(seed)
    n_par = teacher.offsets.size - 1
    half = np.sort(rng.choice(n_par, size=n_par // 2, replace=False))
    clean = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i + 1]] for i in half]
    student, _ = distill_student(*_flat(clean), FingerprintedData([], []), 0.0, vocab_size=teacher.vocab_size)
    queries, _ = corpus_prompts(teacher, n_tokens // 200, length=12, rng=rng)
    answers = generate(student, queries, 200, rng, batch_size=1000)
    others = np.setdiff1d(np.arange(n_par), half)
    human, total = [], 0
    for i in rng.permutation(others):
        human.append(teacher.tokens[teacher.offsets[i]:teacher.offsets[i + 1]])
        total += human[-1].size
        if total >= n_tokens:
            break
    return {"rho=0 student": (_flat(answers), _flat(queries)), "human text": (_flat(human), None)}


def key_pvalues(job: tuple) -> tuple[np.ndarray, int]:
    """log10 p-values ``(keys,)`` of ``n_keys`` keys (decoys of seed ``seed``) on one text, and the
    number of tuples scored; the evidence is built once and shared by all keys."""
    scheme_name, h, vocab, n_keys, seed, (tokens, offsets), prompts = job
    kw = {} if prompts is None else {"prompt_tokens": prompts[0], "prompt_offsets": prompts[1]}
    ev = text_evidence(tokens, offsets, context_width=h, vocab_size=vocab, **kw)
    # decoy keys depend on the seed, the scheme's parameters and the vocabulary only
    base = FingerprintKey.generate(scheme_name, vocab_size=vocab, context_width=h)
    lp = np.empty(n_keys)
    for i, key in enumerate(base.decoys(n_keys, seed=seed)):
        lp[i] = verify_evidence(ev, key, options=OPTIONS).results[0].test.log10_pvalue
    return lp, ev.counts.scored


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=2000)
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    teacher = build_teacher()
    corpora = texts(teacher, args.tokens, args.seed)
    jobs, labels = [], []
    for label, (text, prompts) in corpora.items():
        for scheme_name, h in SETTINGS:
            jobs.append((scheme_name, h, teacher.vocab_size, args.keys, args.seed + 17, text, prompts))
            labels.append((label, scheme_name, h))
    rows, pvals = [], {}
    with ProcessPoolExecutor(args.workers) if args.workers > 1 else nullcontext() as pool:
        results = pool.map(key_pvalues, jobs) if pool is not None else map(key_pvalues, jobs)
        for (label, scheme_name, h), (lp, n_tuples) in zip(labels, results):
            p = 10 ** lp
            pvals[(label, scheme_name, h)] = p
            for alpha in ALPHAS:
                fp = int((p <= alpha).sum())
                lo, hi = stats.binom.interval(0.99, args.keys, alpha)
                rows.append({"text": label, "scheme": scheme_name, "h": h, "keys": args.keys,
                             "tuples": n_tuples, "alpha": alpha, "false_positives": fp,
                             "fpr": fp / args.keys, "interval_low": lo / args.keys, "interval_high": hi / args.keys,
                             "inside": bool(lo <= fp <= hi), "ks_pvalue": float(stats.kstest(p, "uniform").pvalue)})
            print(f"  {label:<14} {scheme_name:<10} h={h}: FPR@1e-2 {rows[-2]['fpr']:.4f} FPR@1e-3 "
                  f"{rows[-1]['fpr']:.4f}", file=sys.stderr, flush=True)
    with open(out / "validity.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"False-positive rate over {args.keys:,} keys (99% binomial interval around alpha); "
             f"~{args.tokens // 1000}k tokens of each text.", "",
             "| text | scheme | h | tuples | FPR at 1e-2 [99% interval] | FPR at 1e-3 [99% interval] | inside |",
             "|---|---|---|---|---|---|---|"]
    for i in range(0, len(rows), 2):
        a, b = rows[i], rows[i + 1]
        lines.append(f"| {a['text']} | {a['scheme']} | {a['h']} | {a['tuples']:,} | {a['fpr']:.4f} "
                     f"[{a['interval_low']:.4f}, {a['interval_high']:.4f}] | {b['fpr']:.4f} "
                     f"[{b['interval_low']:.4f}, {b['interval_high']:.4f}] | "
                     f"{'yes' if a['inside'] and b['inside'] else 'NO'} |")
    (out / "validity.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    grid = (np.arange(args.keys) + 1) / (args.keys + 1)
    for (label, scheme_name, h), p in pvals.items():
        ax.plot(grid, np.sort(p), lw=1, label=f"{label}, {scheme_name} h={h}")
    ax.plot([1e-4, 1], [1e-4, 1], "k:", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("uniform quantile")
    ax.set_ylabel("sorted p-values over keys")
    ax.set_title("Null p-values over keys (QQ against uniform)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "validity.png", dpi=110)
    print("\n".join(lines))
    print(f"wrote {out}/validity.csv/.md/.png in {time.time() - t0:.0f}s")
    return 0 if all(r["inside"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
