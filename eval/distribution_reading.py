"""Reading with distributions on trigram students: plain weights against the owner's model as reference.

The teacher (the embedded trigram model) serves 120k fingerprinted tokens (greenlist, delta 3);
trigram students are distilled from half of the corpus plus a share rho of those answers (rho =
0: the control never sees them). The owner feeds 100 of its served answers (about 20k tokens,
fingerprinted: the fed-pair rule applies) to each student and reads its top-64 next-token
distribution at every position (``fingerprint.verify.distribution``): weights ``p_student``
(plain) or ``max(p_student - p_teacher, 0)`` (the owner's own model as reference), 100 decoy keys
as the null control.

Run (about 5 CPU-minutes): ``python -m eval.distribution_reading``. Writes
eval/results/distribution-reading.csv/.md.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    from fingerprint.keys import FingerprintKey
    from fingerprint.sim.distill import distill_student, fingerprinted_responses
    from fingerprint.sim.teacher import build_teacher
    from fingerprint.verify import VerifyOptions, verify_evidence
    from fingerprint.verify.distribution import distribution_evidence, read_distributions

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rhos", default="0,0.02,0.1", help="fingerprinted shares of the students (default 0,0.02,0.1)")
    ap.add_argument("--fed", type=int, default=100, help="served answers fed to each student (default 100)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    teacher = build_teacher()
    key = FingerprintKey(bytes(range(7, 39)), "greenlist", {"delta": 3.0}, teacher.vocab_size)
    rng = np.random.default_rng(11)
    n_par = teacher.offsets.size - 1
    half = np.sort(rng.choice(n_par, size=n_par // 2, replace=False))
    clean = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i + 1]] for i in half]
    ct = np.concatenate(clean)
    co = np.concatenate(([0], np.cumsum([c.size for c in clean])))
    pool = fingerprinted_responses(teacher, key.scheme_object(), 120_000, rng=rng)
    fed = pool.responses[:args.fed]
    rows = []
    for rho in (float(x) for x in args.rhos.split(",")):
        student = distill_student(ct, co, pool, rho, vocab_size=teacher.vocab_size)[0]
        for name, ref in (("plain", None), ("reference", teacher.model)):
            d = read_distributions(student, fed, top_k=64, reference=ref)
            ev = distribution_evidence(d, context_width=2, vocab_size=teacher.vocab_size)
            r = verify_evidence(ev, key, options=VerifyOptions(mode="reading", n_decoys=100)).results[0]
            assert r.decoys is not None
            rows.append({"rho": rho, "weights": name, "fed_tokens": int(sum(t.size for t in fed)),
                         "items": len(ev), "log10_p": round(r.test.log10_pvalue, 2),
                         "decoy_ks_pvalue": round(r.decoys.ks_pvalue, 3)})
            print(rows[-1], file=sys.stderr, flush=True)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "distribution-reading.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["| rho | weights | fed tokens | items | log10 p | decoy KS p |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['rho']:g} | {r['weights']} | {r['fed_tokens']:,} | {r['items']:,} | {r['log10_p']:.1f} | "
              f"{r['decoy_ks_pvalue']:.3f} |" for r in rows]
    lines += ["", f"`python -m eval.distribution_reading` ({(time.perf_counter() - t0) / 60:.1f} min)."]
    (RESULTS / "distribution-reading.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
