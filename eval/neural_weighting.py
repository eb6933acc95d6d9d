"""Which reference and window weighting detect a neural student with the fewest fed tokens.

The students of ``eval.neural_power`` (same configuration, loaded from its ``--cache`` or trained)
read the teacher's clean answers; each window is read over all its positions
(``aggregate="mean"``) and every combination of

* reference: the teacher, one shadow student (the next seed's control), or two shadows (the next
  two seeds' controls; their mean probabilities);
* window weights (:data:`fingerprint.verify.distribution.WINDOW_WEIGHTINGS`): uniform, exposure,
  sqrt-exposure, entropy

is tested at each fed-token budget. The table gives the median log10 p of the rho = 10% student
over seeds and the smallest log10 p of the control and corpus students (the null's worst case).
Every weighting is fixed before any key is used, so each row's null is exact; choosing the best
row on these seeds is what the README's benchmark then runs on its own table.

Run: ``python -m eval.neural_weighting --cache DIR`` (with the cache of an ``eval.neural_power``
run, only the reading runs). Writes eval/results/neural-weighting.csv/.md.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from eval.neural_power import Config, _pvalue, mean_reference, prepare, read, say, shadows_of

RESULTS = Path(__file__).parent / "results"
REFERENCES = ("teacher", "1 shadow", "2 shadows")
WEIGHTINGS = ("uniform", "exposure", "sqrt-exposure", "entropy")


def _weights(name: str, texts, h: int):
    from fingerprint.verify.distribution import entropy_weights, exposure_weights, sqrt_exposure_weights

    if name == "exposure":
        return exposure_weights([d.tokens for d in texts], h)
    if name == "sqrt-exposure":
        return sqrt_exposure_weights([d.tokens for d in texts], h)
    if name == "entropy":
        return entropy_weights(texts)
    return None


def run(cfg: Config, seeds: int, cache: Path | None) -> list[dict]:
    from fingerprint.verify.distribution import distribution_evidence

    if seeds < 3:
        raise SystemExit("--seeds must be at least 3: each seed's two shadows are the other seeds' controls")
    ctx, trained, prep = prepare(cfg, seeds, cache)
    rows = []
    n_texts = max(1, cfg.fed_budgets[-1] // cfg.answer_tokens)
    clean = ctx["clean"][:n_texts]
    for seed, models in enumerate(trained):
        shadows = shadows_of(trained, seed)
        for name, rho, model, _loss in models:
            reads = read(model, clean, top_k=cfg.top_k, references=(ctx["teacher_model"], *shadows))
            by_ref = dict(zip(REFERENCES, (reads[0], reads[1], mean_reference(reads[1:]))))
            for budget in cfg.fed_budgets:
                n = max(1, budget // cfg.answer_tokens)
                for ref in REFERENCES:
                    texts = by_ref[ref][:n]
                    n_fed = int(sum(d.tokens.size for d in texts))
                    for weighting in WEIGHTINGS:
                        ev = distribution_evidence(texts, context_width=cfg.context_width, vocab_size=ctx["vocab"],
                                                   exclude_fed_pairs=False, aggregate="mean",
                                                   window_weights=_weights(weighting, texts, cfg.context_width))
                        lp, scored = _pvalue(ev, ctx["key"])
                        rows.append({"student": name, "rho": rho, "seed": seed, "reference": ref,
                                     "weighting": weighting, "fed_tokens": n_fed, "n_scored": scored,
                                     "log10_p": round(lp, 3)})
            say(f"seed {seed} {name} rho={rho:g} read ({time.perf_counter() - prep['t0']:.0f} s)")
    return rows


def summarize(rows: list[dict]) -> list[str]:
    budgets = sorted({r["fed_tokens"] for r in rows if r["seed"] == 0})
    head = ["reference", "window weights"] + [f"rho = 10%, {b:,} fed tokens" for b in budgets]
    head += ["innocent students, smallest log10 p"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ref in REFERENCES:
        for weighting in WEIGHTINGS:
            sel = [r for r in rows if r["reference"] == ref and r["weighting"] == weighting]
            cells = []
            for i, _b in enumerate(budgets):
                vals = []
                for seed in sorted({r["seed"] for r in sel}):
                    mine = sorted((r for r in sel if r["seed"] == seed and r["student"] == "student"
                                   and r["rho"] == 0.1), key=lambda r: r["fed_tokens"])
                    if i < len(mine):
                        vals.append(mine[i]["log10_p"])
                cells.append(f"{np.median(vals):.1f} ({' / '.join(f'{v:.1f}' for v in vals)})" if vals else "n/a")
            innocent = [r["log10_p"] for r in sel if r["student"] in ("control", "corpus")]
            cells.append(f"{min(innocent):.2f}" if innocent else "n/a")
            lines.append(f"| {ref} | {weighting} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="seeds (at least 3; default 3)")
    ap.add_argument("--cache", help="the model cache of an eval.neural_power run (default: none, models are trained)")
    ap.add_argument("--budgets", default="20000,60000,115000", help="fed-token budgets (default 20000,60000,115000)")
    ap.add_argument("--smoke", action="store_true", help="a tiny run for the test suite")
    ap.add_argument("--out", default=str(RESULTS), help="folder for neural-weighting.csv/.md (default eval/results)")
    args = ap.parse_args(argv)
    cfg = Config(args.smoke)
    cfg.answer_tokens = min(cfg.answer_tokens, cfg.seq - 16)
    cfg.rhos = (0.0, 0.1)
    cfg.fed_budgets = tuple(int(x) for x in args.budgets.split(","))
    t0 = time.perf_counter()
    rows = run(cfg, args.seeds, Path(args.cache) if args.cache else None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "neural-weighting.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cmd = "python -m eval.neural_weighting" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    lines = ["Clean fed texts read with window means, by reference and window weights: median log10 p of the "
             f"rho = 10% student over {args.seeds} seeds (each seed's value in brackets), and the smallest log10 p "
             "of the control and corpus students at any budget.", "", *summarize(rows), "",
             f"`{cmd}` ({(time.perf_counter() - t0) / 60:.1f} min on this machine)."]
    (out / "neural-weighting.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
