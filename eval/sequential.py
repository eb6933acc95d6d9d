"""Anytime-valid evidence: what peeking does to a fixed-n p-value, and what validity costs.

1. **Null runs.** Under H0 the scores of distinct tuples are independent draws of the scheme's
   null (green flags Bernoulli(gamma); Gumbel scores Exp(1)), so the null of a monitored
   collection can be simulated exactly without text: ``--null-runs`` runs, a look every
   ``--look-every`` tuples up to ``--max-tuples``. At each look an investigator who peeks checks
   the fixed-n p-value; the anytime-valid p-value comes from the same e-process ``verify`` uses
   (:meth:`fingerprint.stats.NullModel.log10_eprocess`). The false-positive rate of "stop at
   the first look with p <= alpha" is reported for both, at alpha = 1e-2 and 1e-3, with 99%
   binomial intervals.
2. **Cost of validity.** Trigram students distilled with rho = 5% and 10% fingerprinted data (as
   in ``eval/power.py``) answer fresh prompts; the pipeline's trajectory (``verify_evidence``,
   fine-grained marks) gives the suspect tokens the e-process needs to reach 1e-6 and the tokens
   the fixed-n test needs at its best n (the first n where it reaches 1e-6, an oracle no valid
   sequential procedure can beat). Target: at most 1.5x.

Run (18 minutes on a busy 2-core machine):

    python -m eval.sequential

Writes eval/results/sequential.csv, sequential.md and sequential.png.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from fingerprint.keys import FingerprintKey
from fingerprint.sim.distill import corpus_prompts, distill_student, fingerprinted_responses
from fingerprint.sim.generate import generate
from fingerprint.sim.teacher import build_teacher
from fingerprint.stats import BinomialNull, GammaNull, NullModel
from fingerprint.verify import VerifyOptions, verify

#: The sampling batch the recorded results in eval/results/ were made with (the rows a step
#: samples decide the order of the random draws): kept so that a rerun reproduces them.
RECORDED_BATCH = 512

RESULTS = Path(__file__).parent / "results"
ALPHAS = (1e-2, 1e-3)


def null_runs(null: NullModel, sampler, runs: int, look_every: int, max_tuples: int,
              rng: np.random.Generator, chunk: int = 500) -> dict[str, np.ndarray]:
    """Smallest fixed-n and anytime-valid log10 p-value over the looks of each null run: ``(runs,)``."""
    looks = np.arange(look_every, max_tuples + 1, look_every)
    min_fixed = np.empty(runs)
    min_anytime = np.empty(runs)
    for lo in range(0, runs, chunk):
        r = min(chunk, runs - lo)
        # per look, the sum of look_every fresh scores; totals at the looks
        totals = np.cumsum(sampler(rng, (r, looks.size), look_every), axis=1)
        fixed = null.log10_sf_prefixes(totals.ravel(), np.tile(looks, r)).reshape(r, looks.size)
        min_fixed[lo:lo + r] = fixed.min(axis=1)
        # the e-process at the looks: the same mixture the null's log10_eprocess uses, evaluated at
        # the looks only (a subset of times, so its sup is at most the full sup: still valid)
        log10_e = _eprocess_at(null, totals, looks)
        min_anytime[lo:lo + r] = np.minimum(0.0, -log10_e.max(axis=1))
    return {"fixed": min_fixed, "anytime": min_anytime}


def _eprocess_at(null: NullModel, totals: np.ndarray, looks: np.ndarray) -> np.ndarray:
    from fingerprint.stats.sequential import binomial_mixture_log10_e, gamma_mixture_log10_e

    n = np.broadcast_to(looks, totals.shape)
    if isinstance(null, BinomialNull):
        return binomial_mixture_log10_e(totals, n * null.trials_per_item, null.p)
    return gamma_mixture_log10_e(totals, n)


def _check_same_as_pipeline(null: NullModel, sampler, rng: np.random.Generator) -> None:
    """The look-wise evaluation equals the null's own e-process at those times."""
    scores = sampler(rng, (1, 3000), 1)[0]
    full = null.log10_eprocess(scores)
    looks = np.array([1000, 2000, 3000])
    at = _eprocess_at(null, np.cumsum(scores)[looks - 1][None, :], looks)[0]
    if not np.allclose(full[looks - 1], at, rtol=0, atol=1e-9):
        raise AssertionError("look-wise e-values differ from NullModel.log10_eprocess")


def binomial_sampler(p: float):
    return lambda rng, shape, k: rng.binomial(k, p, size=shape).astype(np.float64)


def gamma_sampler():
    return lambda rng, shape, k: rng.gamma(k, 1.0, size=shape)


def cost_of_validity(seeds: int, rhos: list[float], budget: int, response_tokens: int) -> list[dict]:
    teacher = build_teacher()
    rows = []
    for seed in range(seeds):
        rng = np.random.default_rng(5000 + seed)
        key = FingerprintKey.generate("greenlist", vocab_size=teacher.vocab_size, context_width=2, gamma=0.25,
                                      delta=3.0)
        n_par = teacher.offsets.size - 1
        clean_par = np.sort(rng.choice(n_par, size=n_par // 2, replace=False))
        clean = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i + 1]] for i in clean_par]
        clean_tokens = np.concatenate(clean)
        clean_offsets = np.concatenate(([0], np.cumsum([c.size for c in clean]))).astype(np.int64)
        need = int(math.ceil(max(rhos) * clean_tokens.size / (1 - max(rhos))))
        pool = fingerprinted_responses(teacher, key.scheme_object(), need, rng=rng, batch_size=RECORDED_BATCH)
        for rho in rhos:
            student, _ = distill_student(clean_tokens, clean_offsets, pool, rho, vocab_size=teacher.vocab_size)
            queries, _ = corpus_prompts(teacher, -(-budget // response_tokens), length=12, rng=rng)
            answers = generate(student, queries, response_tokens, rng, batch_size=1000)
            res = verify(answers, keys=key, prompt_tokens=queries,
                         options=VerifyOptions(n_decoys=0, trajectory_points=600)).results[0]
            tokens = np.array([p.tokens_read for p in res.trajectory])
            fixed = np.array([p.log10_pvalue for p in res.trajectory])
            anytime = np.array([p.anytime_log10_pvalue for p in res.trajectory])

            def first(v: np.ndarray) -> float:
                hit = np.flatnonzero(v <= -6)
                return float(tokens[hit[0]]) if hit.size else math.inf

            row = {"seed": seed, "rho": rho, "tokens_fixed_best_n": first(fixed), "tokens_anytime": first(anytime),
                   "log10_p_fixed_at_budget": float(fixed[-1]), "log10_p_anytime_at_budget": float(anytime[-1])}
            row["ratio"] = row["tokens_anytime"] / row["tokens_fixed_best_n"]
            rows.append(row)
            print(f"  seed {seed} rho {rho:.0%}: 1e-6 after {row['tokens_fixed_best_n']:,.0f} tokens (fixed-n, best n) "
                  f"vs {row['tokens_anytime']:,.0f} (anytime-valid)", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--null-runs", type=int, default=10_000)
    ap.add_argument("--look-every", type=int, default=1_000)
    ap.add_argument("--max-tuples", type=int, default=200_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rhos", default="0.05,0.1")
    ap.add_argument("--budget", type=int, default=200_000, help="suspect tokens per student")
    ap.add_argument("--response-tokens", type=int, default=100)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    null_rows = []
    mins = {}
    for name, null, sampler in (("greenlist (binomial, gamma 0.25)", BinomialNull(0, 0.25), binomial_sampler(0.25)),
                                ("gumbel (gamma)", GammaNull(0), gamma_sampler())):
        _check_same_as_pipeline(null, sampler, rng)
        print(f"null runs: {name}", file=sys.stderr, flush=True)
        m = null_runs(null, sampler, args.null_runs, args.look_every, args.max_tuples, rng)
        mins[name] = m
        for alpha in ALPHAS:
            lo, hi = stats.binom.interval(0.99, args.null_runs, alpha)
            for kind in ("fixed", "anytime"):
                k = int((m[kind] <= math.log10(alpha)).sum())
                null_rows.append({"statistic": name, "alpha": alpha, "p_value": kind, "runs": args.null_runs,
                                  "looks": args.max_tuples // args.look_every, "false_positives": k,
                                  "fpr": k / args.null_runs, "ci99_low": lo / args.null_runs,
                                  "ci99_high": hi / args.null_runs})
    rhos = [float(x) for x in args.rhos.split(",")]
    cost_rows = cost_of_validity(args.seeds, rhos, args.budget, args.response_tokens) if args.seeds else []
    with open(out / "sequential.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(null_rows[0]))
        w.writeheader()
        w.writerows(null_rows)
    if cost_rows:
        with open(out / "sequential-cost.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(cost_rows[0]))
            w.writeheader()
            w.writerows(cost_rows)
    md = [f"Null runs: {args.null_runs:,} per statistic, a look every {args.look_every:,} tuples up to "
          f"{args.max_tuples:,}; a run is a false positive if the p-value is at most alpha at any look.", "",
          "| statistic | alpha | p-value checked at every look | false-positive rate | 99% interval for a valid test |",
          "|---|---|---|---|---|"]
    for r in null_rows:
        label = "fixed-n (peeking)" if r["p_value"] == "fixed" else "anytime-valid (e-process)"
        md.append(f"| {r['statistic']} | {r['alpha']:g} | {label} | {r['fpr']:.4f} ({r['false_positives']:,}) | "
                  f"[{r['ci99_low']:.4f}, {r['ci99_high']:.4f}] |")
    if cost_rows:
        md += ["", f"Cost of validity (greenlist h=2, delta=3; {args.seeds} seeds; suspect tokens to reach 1e-6):", "",
               "| rho | fixed-n at its best n (median) | anytime-valid (median) | ratio per seed | median ratio |",
               "|---|---|---|---|---|"]
        for rho in rhos:
            rr = [r for r in cost_rows if r["rho"] == rho]
            fx = np.median([r["tokens_fixed_best_n"] for r in rr])
            an = np.median([r["tokens_anytime"] for r in rr])
            ratios = [r["ratio"] for r in rr]
            md.append(f"| {rho:.0%} | {fx:,.0f} | {an:,.0f} | {', '.join(f'{x:.2f}' for x in ratios)} | "
                      f"{np.median(ratios):.2f} |")
    (out / "sequential.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    if not args.no_plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        grid = np.linspace(0, 4, 200)
        for name, m in mins.items():
            for kind, style in (("fixed", "--"), ("anytime", "-")):
                ax.plot(grid, [(m[kind] <= -g).mean() for g in grid], style,
                        label=f"{name.split(' ')[0]}: {'fixed-n, peeking' if kind == 'fixed' else 'anytime-valid'}")
        ax.plot(grid, 10 ** -grid, ":", color="black", label="alpha (valid)")
        ax.set_yscale("log")
        ax.set_xlabel("-log10 alpha")
        ax.set_ylabel("false-positive rate (any look)")
        ax.set_title(f"{args.null_runs:,} null runs, a look every {args.look_every:,} tuples")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "sequential.png", dpi=120)
    print(f"done in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
