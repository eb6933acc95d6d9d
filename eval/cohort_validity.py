"""Family-wise false positives of keyring verification, over many random keyrings.

For each of ``--rings`` keyrings of ``--cohorts`` cohorts (masters derived from a fixed seed),
``verify_keyring`` tests suspect text that never learned from the ring:

* ``student``: answers of a rho = 0 trigram student (no fingerprinted data) to corpus prompts;
* ``human``: corpus paragraphs the student never saw;
* ``other-cohorts`` (the partial null of identification): the teacher's answers fingerprinted
  with 3 cohorts of the ring itself; only the *other* cohorts count, so a false positive is any
  cohort flagged that did not serve the text (``--partial-rings`` rings, a fresh text each).

Counted per ring: the global test (Šidák over the cohorts) at or below alpha, and any cohort
flagged by Holm (family-wise) at alpha. Each rate must lie in its 99% binomial interval around
alpha (or below it: the tests are exact or conservative; a rate above the interval fails). The
randomized p-values of every (non-serving) cohort of every ring, pooled, must look uniform
(Kolmogorov-Smirnov p >= 1e-3): a cohort key that leaked signal from the serving cohorts' keys
would shift them.

Run (about 4 CPU-minutes on 2 workers): ``python -m eval.cohort_validity``. Writes
eval/results/cohort-validity.csv and .md. ``--smoke`` is the size the test suite runs.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy import stats

from fingerprint.keyring import Keyring
from fingerprint.stats import BinomialNull
from fingerprint.verify import VerifyOptions
from fingerprint.verify.evidence import text_evidence
from fingerprint.verify.keyring import verify_keyring

RESULTS = Path(__file__).parent / "results"
ALPHA = 1e-2
FIELDS = ["text", "ring_seed", "n_cohorts", "n_scored", "global_log10_pvalue", "min_log10_pvalue",
          "min_holm_log10_pvalue", "holm_flagged", "bh_flagged", "false_flagged"]

_STATE: dict = {}


def _ring(seed: int, n_cohorts: int, vocab: int) -> Keyring:
    return Keyring.from_seed(f"cohort-validity-{seed}", "greenlist", vocab_size=vocab, cohorts=n_cohorts, delta=3.0)


def _row(text: str, seed: int, ring: Keyring, ev, used: tuple[str, ...] = ()) -> dict:
    r = verify_keyring(ev, ring, options=VerifyOptions(n_decoys=0, alpha=ALPHA))
    level = np.log10(ALPHA)
    others = [c for c in r.cohorts if c.cohort not in used]
    u = np.random.default_rng([seed, len(used)]).random(len(others))
    randomized = BinomialNull(len(ev), 0.25).randomized_pvalues(np.array([c.test.statistic for c in others]), u)
    return {"randomized": randomized,"text": text, "ring_seed": seed, "n_cohorts": ring.n_cohorts, "n_scored": len(ev),
            "global_log10_pvalue": round(r.global_log10_pvalue, 6),
            "min_log10_pvalue": round(min(c.test.log10_pvalue for c in others), 6),
            "min_holm_log10_pvalue": round(min(c.holm_log10_pvalue for c in others), 6),
            "holm_flagged": sum(c.holm_log10_pvalue <= level for c in r.cohorts),
            "bh_flagged": sum(c.bh_log10_pvalue <= level for c in r.cohorts),
            "false_flagged": sum(c.holm_log10_pvalue <= level for c in others)}


def _innocent_rows(seeds: list[int]) -> list[dict]:
    rows = []
    for seed in seeds:
        ring = _ring(seed, _STATE["n_cohorts"], _STATE["vocab"])
        for name, ev in _STATE["evidence"].items():
            rows.append(_row(name, seed, ring, ev))
    return rows


def _partial_rows(seeds: list[int]) -> list[dict]:
    from fingerprint.sim.distill import fingerprinted_responses

    teacher = _STATE["teacher"]
    rows = []
    for seed in seeds:
        ring = _ring(10_000 + seed, _STATE["n_cohorts"], teacher.vocab_size)
        rng = np.random.default_rng(seed)
        used = tuple(ring.cohorts[i] for i in rng.choice(ring.n_cohorts, 3, replace=False))
        answers = [a for c in used for a in fingerprinted_responses(
            teacher, ring.cohort_key(c).scheme_object(), _STATE["partial_tokens"] // 3, rng=rng).responses]
        tokens = np.concatenate(answers)
        offsets = np.concatenate(([0], np.cumsum([a.size for a in answers])))
        ev = text_evidence(tokens, offsets, context_width=2, vocab_size=teacher.vocab_size)
        rows.append(_row("other-cohorts", seed, ring, ev, used))
    return rows


def _init(state: dict) -> None:
    _STATE.update(state)


def interval(n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """The 99% binomial interval of a false-positive rate over ``n`` independent rings."""
    lo, hi = stats.binom.interval(0.99, n, alpha)
    return lo / n, hi / n


def summarize(rows: list[dict]) -> list[dict]:
    """Per text: rings, global and identification false-positive rates, their interval, pass."""
    out = []
    for text in dict.fromkeys(r["text"] for r in rows):
        sel = [r for r in rows if r["text"] == text]
        n = len(sel)
        lo, hi = interval(n)
        g = sum(r["global_log10_pvalue"] <= np.log10(ALPHA) for r in sel) / n if text != "other-cohorts" else None
        ident = sum(r["false_flagged"] > 0 for r in sel) / n
        pooled = np.concatenate([r["randomized"] for r in sel])
        ks = float(stats.kstest(pooled, "uniform").pvalue)
        ok = (g is None or g <= hi) and ident <= hi and ks >= 1e-3
        out.append({"pooled_cohorts": int(pooled.size), "pooled_ks_pvalue": ks, "text": text, "rings": n, "cohorts": sel[0]["n_cohorts"], "tuples": int(np.median([r["n_scored"] for r in sel])),
                    "global_fwer": g, "identification_fwer": ident, "interval_low": lo, "interval_high": hi,
                    "passed": ok})
    return out


def run(rings: int, n_cohorts: int, partial_rings: int, innocent_tokens: int, partial_tokens: int,
        workers: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    from eval.validity import texts
    from fingerprint.sim.teacher import build_teacher

    teacher = build_teacher()
    evidence = {}
    for name, ((tokens, offsets), prompts) in texts(teacher, innocent_tokens, seed).items():
        kw = {} if prompts is None else {"prompt_tokens": prompts[0], "prompt_offsets": prompts[1]}
        evidence["student" if "student" in name else "human"] = text_evidence(
            tokens, offsets, context_width=2, vocab_size=teacher.vocab_size, **kw)
    state = {"evidence": evidence, "n_cohorts": n_cohorts, "vocab": teacher.vocab_size, "teacher": teacher,
             "partial_tokens": partial_tokens}
    chunks = [list(range(a, min(rings, a + 25))) for a in range(0, rings, 25)]
    pchunks = [list(range(a, min(partial_rings, a + 10))) for a in range(0, partial_rings, 10)]
    rows: list[dict] = []
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(state,)) as pool:
        futures = [pool.submit(_innocent_rows, c) for c in chunks] + [pool.submit(_partial_rows, c) for c in pchunks]
        for i, f in enumerate(futures):
            rows += f.result()
            print(f"  .. {i + 1}/{len(futures)} chunks ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return rows, summarize(rows)


def write(rows: list[dict], summary: list[dict], command: str, seconds: float) -> None:
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "cohort-validity.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = ["| suspect text | keyrings | cohorts each | tuples | global test FWER | identification FWER (Holm) | "
             "99% interval | cohort p-values pooled: KS p (n) | within |", "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        g = "n/a (partial null)" if s["global_fwer"] is None else f"{s['global_fwer']:.4f}"
        lines.append(f"| {s['text']} | {s['rings']:,} | {s['cohorts']:,} | {s['tuples']:,} | {g} | "
                     f"{s['identification_fwer']:.4f} | [{s['interval_low']:.4f}, {s['interval_high']:.4f}] | "
                     f"{s['pooled_ks_pvalue']:.3f} ({s['pooled_cohorts']:,}) | {'yes' if s['passed'] else 'NO'} |")
    lines += ["", f"alpha = {ALPHA:g}; `{command}` ({seconds / 60:.1f} min)."]
    (RESULTS / "cohort-validity.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rings", type=int, default=1000, help="keyrings tested on each innocent text (default 1000)")
    ap.add_argument("--cohorts", type=int, default=1000, help="cohorts per keyring (default 1000)")
    ap.add_argument("--partial-rings", type=int, default=300,
                    help="keyrings whose own 3 cohorts fingerprinted the text (default 300)")
    ap.add_argument("--innocent-tokens", type=int, default=4000, help="tokens of each innocent text (default 4000)")
    ap.add_argument("--partial-tokens", type=int, default=1500,
                    help="tokens of each other-cohorts text (default 1500)")
    ap.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    ap.add_argument("--smoke", action="store_true", help="the test suite's size: 100 rings of 100 cohorts")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rings, args.cohorts, args.partial_rings = 100, 100, 10
    t0 = time.perf_counter()
    rows, summary = run(args.rings, args.cohorts, args.partial_rings, args.innocent_tokens, args.partial_tokens,
                        args.workers)
    command = "python -m eval.cohort_validity" + (" --smoke" if args.smoke else "")
    if not args.smoke:
        write(rows, summary, command, time.perf_counter() - t0)
    for s in summary:
        print(s)
    return 0 if all(s["passed"] for s in summary) else 1


if __name__ == "__main__":
    raise SystemExit(main())
