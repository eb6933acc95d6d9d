"""One table over every power run in eval/results: per scheme and h, the smallest rho whose
median p at the largest budget is below 1e-6, and the median log10 p at rho = 2%, 5% and 10%.

Run: ``python -m eval.summary`` (after ``python -m eval.power`` runs). Writes
eval/results/power-summary.md.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    out = Path(argv[0]) if argv else RESULTS
    lines = ["| scheme | h | seeds | access | smallest rho with median p < 1e-6 | log10 p at rho 2% | 5% | 10% |",
             "|---|---|---|---|---|---|---|---|"]
    for path in sorted(out.glob("power-*-h*.csv")):
        rows = list(csv.DictReader(open(path)))
        budget = max(int(r["tokens"]) for r in rows)
        seeds = len({r["seed"] for r in rows})
        for mode in ("text", "supervised"):
            med = {}
            for rho in sorted({float(r["rho"]) for r in rows}):
                v = [float(r["log10_p"]) for r in rows
                     if r["mode"] == mode and float(r["rho"]) == rho and int(r["tokens"]) == budget]
                med[rho] = float(np.median(v))
            smallest = min((rho for rho, m in med.items() if rho > 0 and m < -6), default=None)
            cells = [f"{med[r]:.1f}" if r in med else "n/a" for r in (0.02, 0.05, 0.1)]
            lines.append(f"| {rows[0]['scheme']} | {rows[0]['h']} | {seeds} | {mode} | "
                         f"{'none' if smallest is None else f'{smallest:.1%}'} | " + " | ".join(cells) + " |")
    text = ("Median over seeds at the largest budget of each run (200,000 suspect tokens).\n\n"
            + "\n".join(lines) + "\n")
    (out / "power-summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
