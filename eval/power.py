"""Power of the radioactivity test against the fraction rho of fingerprinted training data
and the number of suspect tokens, for text-only and supervised (served-window) access.

For each seed: a fresh key; the teacher answers distillation prompts through the
fingerprint (the pool); students (trigram) are trained on half of the corpus plus a fraction
rho of pool tokens; each student answers fresh corpus prompts; the verify pipeline
(``fingerprint.verify``, no decoys) runs on growing prefixes of its answers, each prefix being
what the owner holds after collecting that many tokens (:mod:`eval.collected`). The text-only
row is the published radioactivity test (Sander et al. 2024: exact binomial, (window, token)
de-duplication, prompt exclusion, text only), the baseline for every later improvement.

Run (about 15 minutes on 2 cores):

    python -m eval.power --seeds 5

Writes eval/results/power-<scheme>-h<h>.csv, .md and .png.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from eval.collected import token_prefix
from fingerprint.keys import FingerprintKey
from fingerprint.sim.distill import corpus_prompts, distill_student, fingerprinted_responses
from fingerprint.sim.generate import generate
from fingerprint.sim.teacher import build_teacher
from fingerprint.verify import VerifyOptions, text_evidence, verify_evidence
from fingerprint.windows import WindowFilter

#: The sampling batch the recorded results in eval/results/ were made with (the rows a step
#: samples decide the order of the random draws): kept so that a rerun reproduces them.
RECORDED_BATCH = 512

RESULTS = Path(__file__).parent / "results"
SCHEME_PARAMS = {"greenlist": {"gamma": 0.25, "delta": 3.0}, "gumbel": {}, "tournament": {},
                 # vLLM's native watermark (Gumbel-max with its Philox PRF), single and dual key
                 "vllm-gumbel": {}, "vllm-gumbel-dual": {"algorithm": "dual_key_gumbel"}}


def scheme_of(name: str) -> str:
    """The registered scheme behind a SCHEME_PARAMS entry (``vllm-gumbel-dual`` is ``vllm-gumbel``)."""
    return "vllm-gumbel" if name.startswith("vllm-gumbel") else name
#: The exact test only: decoys are the validity experiment's business (eval/validity.py).
OPTIONS = VerifyOptions(n_decoys=0)


def _flat(arrays):
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    return tokens, np.concatenate(([0], np.cumsum([a.size for a in arrays]))).astype(np.int64)


def run_seed(args: tuple) -> list[dict]:
    scheme_name, h, seed, rhos, budgets, response_tokens, *rest = args
    fraction = rest[0] if rest else 0.5
    teacher = build_teacher()
    rng = np.random.default_rng(1000 + seed)
    key = FingerprintKey.generate(scheme_of(scheme_name), vocab_size=teacher.vocab_size, context_width=h,
                                  **SCHEME_PARAMS[scheme_name])
    scheme = key.scheme_object()
    n_par = teacher.offsets.size - 1
    clean_par = np.sort(rng.choice(n_par, size=int(n_par * fraction), replace=False))
    clean = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i + 1]] for i in clean_par]
    clean_tokens, clean_offsets = _flat(clean)
    finite = [r for r in rhos if 0 < r < 1]
    need = max([int(math.ceil(r * clean_tokens.size / (1 - r))) for r in finite] or [0])
    if 1.0 in rhos:
        need = max(need, 100_000)
    pool = fingerprinted_responses(teacher, scheme, max(need, 1000), rng=rng, batch_size=RECORDED_BATCH)
    served = WindowFilter.from_tokens(*_flat(pool.responses), h, vocab_size=teacher.vocab_size)
    n_queries = -(-max(budgets) // response_tokens)
    rows = []
    for rho in rhos:
        student, reached = distill_student(clean_tokens, clean_offsets, pool, rho, vocab_size=teacher.vocab_size)
        queries, _ = corpus_prompts(teacher, n_queries, length=12, rng=rng)
        answers = generate(student, queries, response_tokens, rng, batch_size=1000)
        tokens, offsets = _flat(answers)
        prompts = _flat(queries)
        for mode, wf in (("text", None), ("supervised", served)):
            for b in budgets:
                # the pipeline on the first b suspect tokens (prompt exclusion, window filter,
                # de-duplication, the scheme's exact null), as `fingerprint verify` would run it
                t_b, o_b, pt_b, po_b = token_prefix(tokens, offsets, *prompts, b)
                ev = text_evidence(t_b, o_b, context_width=h, vocab_size=teacher.vocab_size, prompt_tokens=pt_b,
                                   prompt_offsets=po_b, window_filter=wf)
                res = verify_evidence(ev, key, options=OPTIONS).results[0]
                rows.append({"scheme": scheme_name, "h": h, "seed": seed, "rho": rho, "rho_reached": round(reached, 5),
                             "mode": mode, "tokens": b, "n_scored": res.counts.scored,
                             "log10_p": res.test.log10_pvalue, "effect": res.test.effect.value})
        print(f"  seed {seed} rho {rho:.3f}: text log10 p at {max(budgets):,} tokens = "
              f"{[r['log10_p'] for r in rows if r['rho'] == rho and r['mode'] == 'text'][-1]:.1f}",
              file=sys.stderr, flush=True)
    return rows


def summarize(rows: list[dict], budgets: list[int], rhos: list[float]) -> tuple[str, float | None]:
    lines = ["| access | rho | " + " | ".join(f"{b // 1000}k tokens" for b in budgets) + " |",
             "|---|---|" + "---|" * len(budgets)]
    smallest = None
    for mode in ("text", "supervised"):
        for rho in rhos:
            cells = []
            for b in budgets:
                v = np.array([r["log10_p"] for r in rows if r["mode"] == mode and r["rho"] == rho and r["tokens"] == b])
                q1, med, q3 = np.percentile(v, [25, 50, 75])
                cells.append(f"{med:.1f} [{q1:.1f}, {q3:.1f}]")
                if mode == "text" and b == max(budgets) and med < -6 and rho > 0 and (smallest is None or rho < smallest):
                    smallest = rho
            label = "text only (baseline: Sander et al. 2024)" if mode == "text" else "supervised (served windows)"
            lines.append(f"| {label} | {rho:.1%} | " + " | ".join(cells) + " |")
    return "\n".join(lines), smallest


def plot(rows: list[dict], budgets: list[int], rhos: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for mode, style in (("text", "-o"), ("supervised", "--s")):
        xs, med, lo, hi = [], [], [], []
        for rho in rhos:
            v = np.array([-r["log10_p"] for r in rows if r["mode"] == mode and r["rho"] == rho
                          and r["tokens"] == max(budgets)])
            xs.append(max(rho, 1e-3))
            med.append(np.median(v))
            lo.append(np.percentile(v, 25))
            hi.append(np.percentile(v, 75))
        axes[0].plot(xs, med, style, label=mode)
        axes[0].fill_between(xs, lo, hi, alpha=0.2)
    axes[0].axhline(6, color="k", ls=":", label="p = 1e-6")
    axes[0].set_xscale("log")
    axes[0].set_yscale("symlog", linthresh=10)
    axes[0].set_ylim(bottom=0)
    axes[0].set_xlabel("rho (fraction of fingerprinted training tokens; rho=0 drawn at 1e-3)")
    axes[0].set_ylabel(f"-log10 p at {max(budgets):,} suspect tokens (median, IQR)")
    axes[0].legend()
    for rho in rhos:
        med = [np.median([-r["log10_p"] for r in rows if r["mode"] == "text" and r["rho"] == rho and r["tokens"] == b])
               for b in budgets]
        axes[1].plot(budgets, med, "-o", label=f"rho {rho:.1%}")
    axes[1].axhline(6, color="k", ls=":")
    axes[1].set_xscale("log")
    axes[1].set_yscale("symlog", linthresh=10)
    axes[1].set_ylim(bottom=0)
    axes[1].set_xlabel("suspect tokens collected")
    axes[1].set_ylabel("-log10 p, text only (median over seeds)")
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scheme", default="greenlist", choices=sorted(SCHEME_PARAMS))
    ap.add_argument("-H", "--context-width", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rhos", default="0,0.005,0.01,0.02,0.05,0.1,1")
    ap.add_argument("--budgets", default="10000,20000,50000,100000,200000")
    ap.add_argument("--response-tokens", type=int, default=200)
    ap.add_argument("--corpus-fraction", type=float, default=0.5,
                    help="share of the corpus the students train on besides the pool (default 0.5; smaller "
                         "is quicker, for smoke runs)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    rhos = [float(x) for x in args.rhos.split(",")]
    budgets = [int(x) for x in args.budgets.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    jobs = [(args.scheme, args.context_width, s, rhos, budgets, args.response_tokens, args.corpus_fraction)
            for s in range(args.seeds)]
    rows: list[dict] = []
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as ex:
            for r in ex.map(run_seed, jobs):
                rows.extend(r)
    else:
        for j in jobs:
            rows.extend(run_seed(j))
    stem = out / f"power-{args.scheme}-h{args.context_width}"
    with open(f"{stem}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    table, smallest = summarize(rows, budgets, rhos)
    params = SCHEME_PARAMS[args.scheme]
    head = (f"log10 p, median [IQR] over {args.seeds} seeds; {args.scheme} h={args.context_width} {params}; "
            f"students: trigram on half the corpus + rho of fingerprinted teacher answers.\n\n")
    foot = (f"\n\nSmallest rho > 0 whose median text-only p at {max(budgets):,} suspect tokens is below 1e-6: "
            f"{'none' if smallest is None else f'{smallest:.1%}'}.\n")
    Path(f"{stem}.md").write_text(head + table + foot)
    plot(rows, budgets, rhos, Path(f"{stem}.png"), f"{args.scheme} h={args.context_width}: power vs rho and tokens")
    print(head + table + foot)
    print(f"wrote {stem}.csv/.md/.png in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
